"""playbooks/rotate-credentials.yml under continuous load, failover and a rolling upgrade, on a 2-replica
lab deployment, and no secret in any playbook output.

One deployment of site.yml for rotate.lab.test (containers rot-1 on pve1, rot-2 on pve2), shared by the
tests of this module in order, and destroyed at the end with playbooks/destroy.yml:
  - that first site.yml runs at -vvv and prints no secret (secret_scan.py lists them); it deploys as an
    older version did (relays accepting envelope v1) and the test makes the client artifact an older one
    (the shared Fernet key, no v2 key): rotate-credentials.yml moves it to v2 only while a client holding
    its v2 key sends load, none of whose requests fails, and v1 is refused afterwards;
  - site.yml and rotate-credentials.yml with a bad entry (a client name the relay refuses, a CA that is
    not PEM, a provider without keys) fail in seconds with a message naming the entry, print no secret
    at -vvv, and change nothing; a PEM-shaped CA that OpenSSL refuses fails on the hosts and changes
    nothing there either;
  - the full rotation (client token, Fernet key, provider keys, the Cloudflare Access service token's
    secret, and the tunnel by its default two-tunnel method) while a load generator (tests/site/loadgen.py)
    sends plain and streamed requests through the lab edge: no request fails; afterwards the old client
    token, Fernet key and Access secret are refused, the old tunnel, its DNS target and its connectors are
    gone (its token names a deleted tunnel), and the steps
    ran in the safe order;
  - the opt-in secret rotation (`relay_tunnel_rotation=secret`) under load: same tunnel, old token refused;
  - a tunnel rotation cut in its drain (SIGTERM), then re-run and failing at the rename on API errors:
    site.yml refuses while both tunnels exist (naming both, changing nothing), then finishes the rename;
    no request fails;
  - provider keys changed in the inventory reach the upstream after `--tags provider_keys`;
  - one container stopped (clean shutdown through the PVE API) while the load runs: no request fails;
  - a relay code change rolled out by site.yml while the load runs: one replica at a time, each ready and
    connected again before the next, no request fails.
Every rotation and rollout runs at -vvv and prints no secret.
Figures (wall time, requests sent/failed) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import secret_scan
from deploy_state import in_container
from llm_relay.client.codec_v2 import EnvelopeRefused
from llm_relay.client.config import Profile
from llm_relay.client.factory import http_client
from loadgen import LoadGenerator
from play_events import events, first

from lab.edge import binary
from lab.edge import tunnel as edge_tunnel


def _harness():
    """tests/site/conftest.py under its own name: `from conftest import` may find another suite's."""
    spec = importlib.util.spec_from_file_location("site_harness", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


harness = _harness()
REPO, assert_ok, deployment = harness.REPO, harness.assert_ok, harness.deployment

pytestmark = pytest.mark.lab

HOSTNAME, PREFIX, REPLICAS = "rotate.lab.test", "rot-", 2
TUNNEL = f"llm-relay-{HOSTNAME}"
ROTATE = "playbooks/rotate-credentials.yml"
CONNECTED = "Wait until the connector has a registered edge connection"
START = "Enable and start the cloudflared service"
RESTART_CONNECTOR = "Restart the cloudflared service"
MOVE_CNAME = "The proxied CNAME points at the new tunnel"
REMOVE_SECOND = "Stop and disable the connector instance"
LIST_CONNECTORS = ("--all", "--plain", "--no-legend", "cloudflared*")
# Seconds the previous Access service token secret stays valid after its rotation (longer than the run's
# relay_rotation_grace=5, as rotate-credentials.yml requires).
ACCESS_GRACE = 15


@pytest.fixture(scope="module")
def deployed(lab, tmp_path_factory):
    dep = deployment(tmp_path_factory, HOSTNAME, PREFIX, REPLICAS)
    started = time.monotonic()
    try:
        # -vvv: module arguments and results, the commands run on the hosts; checked for secrets below.
        # As an older version deployed (relays accepting envelope v1): the next test moves it to v2 only.
        dep.first = dep.run("site.yml", "-vvv", "-e", "relay_envelope_accept_v1=true")
        assert_ok(dep.first)
        print(f"\nsite.yml for {HOSTNAME}, {REPLICAS} replicas: {time.monotonic() - started:.0f} s")
        yield dep
    finally:
        assert_ok(dep.run("playbooks/destroy.yml", "-e", "confirm=yes"))


class Cloudflare:
    """The lab's Cloudflare API emulator, read with the admin token (what the modules use)."""

    def __init__(self, lab) -> None:
        self.base = lab.cloudflare.url + "/client/v4"
        self.account = lab.cloudflare.account_id
        self.headers = {"Authorization": f"Bearer {lab.cloudflare.api_token}"}
        self.verify = str(lab.ca_path)

    def get(self, path: str, **params) -> object:
        answer = requests.get(
            self.base + path, headers=self.headers, params=params, verify=self.verify, timeout=30
        ).json()
        assert answer["success"], answer["errors"]
        return answer["result"]

    def tunnel_id(self, name: str) -> str:
        (tunnel,) = self.get(f"/accounts/{self.account}/cfd_tunnel", name=name, is_deleted="false")
        return tunnel["id"]

    def token(self, tunnel_id: str) -> str:
        return self.get(f"/accounts/{self.account}/cfd_tunnel/{tunnel_id}/token")

    def connectors(self, tunnel_id: str) -> set[str]:
        return {c["id"] for c in self.get(f"/accounts/{self.account}/cfd_tunnel/{tunnel_id}/connections")}


def chat(dep, ca: Path, token: str) -> requests.Response:
    return requests.post(
        dep.url + "/v1/chat/completions",
        json={"model": "lab/echo", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {token}", **dep.access_headers()},
        verify=str(ca),
        timeout=30,
    )


def models_status(dep, ca: Path, token: str, access: dict[str, str]) -> int:
    """Status of GET /v1/models through the lab edge with these Access service-token headers."""
    headers = {"Authorization": f"Bearer {token}", **access}
    return requests.get(dep.url + "/v1/models", headers=headers, verify=str(ca), timeout=30).status_code


def sealed_chat(dep, ca: Path, token: str, key: str, version: str = "auto") -> object:
    """A chat request sealed by the client library's own transport (envelope v2 unless `version` says
    v1; it names the relay's epoch and learns it from a replica's sealed 409, as a user's client does):
    the opened answer (an httpx response), or the plain refusal of a v1 request. A plain answer to a v2
    request raises EnvelopeRefused naming its status and code."""
    profile = Profile(
        url=dep.url,
        token=token,
        fernet_key=key,
        encrypt=True,
        envelope=version,
        ca_bundle=str(ca),
        proxy="",
        timeout=30.0,
        # The artifact's Cloudflare Access service token: the lab edge refuses a request without it.
        access_client_id=dep.access_headers().get("CF-Access-Client-Id", ""),
        access_client_secret=dep.access_headers().get("CF-Access-Client-Secret", ""),
    )
    with http_client(profile) as client:
        answer = client.post(
            dep.url + "/v1/chat/completions",
            json={"model": "lab/echo", "messages": [{"role": "user", "content": "hi"}]},
        )
        answer.read()
        return answer


def cloudflared_with(token: str, ca: Path, tmp_path: Path, within: float = 10) -> tuple[int | None, str]:
    """The real cloudflared on this host, against the lab edge on loopback, with `token`: (its exit code,
    or None when it was still running after `within` seconds and was stopped; its log)."""
    env = {
        **os.environ,
        "TUNNEL_TOKEN": token,
        "TUNNEL_EDGE": "127.0.0.1:7844",
        "TUNNEL_CACERT": str(ca),
        "TUNNEL_TRANSPORT_PROTOCOL": "http2",
    }
    argv = [str(binary.locate()), "tunnel", "--no-autoupdate", "--metrics", "127.0.0.1:0"]
    argv += ["--ha-connections", "1", "run"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        _, log = proc.communicate(timeout=within)
        return proc.returncode, log
    except subprocess.TimeoutExpired:  # an "Unauthorized" refusal is retried with back-off, forever
        proc.terminate()
        _, log = proc.communicate(timeout=30)
        return None, log


def secrets_now(lab, dep) -> dict[str, str]:
    """Every secret of the deployment as it stands (store, tunnel token, lab credentials)."""
    cloudflare = Cloudflare(lab)
    tunnel_token = cloudflare.token(cloudflare.tunnel_id(TUNNEL))
    return secret_scan.deployment_secrets(lab, dep, tunnel_token)


def assert_no_secret(output: str, secrets: dict[str, str]) -> None:
    assert secret_scan.leaked(output, secrets) == [], "printed (names only)"


@pytest.mark.timeout(2400)  # includes the cold site.yml of the module's deployment
def test_site_yml_from_nothing_prints_no_secret_at_vvv(lab, deployed):
    assert "ESTABLISH SSH CONNECTION" in deployed.first.output  # really -vvv
    assert_no_secret(deployed.first.output, secrets_now(lab, deployed))


MOVE_TAG = "envelope_v2"


@pytest.mark.timeout(1200)
def test_rotation_moves_a_deployment_accepting_v1_to_v2_only_failing_no_v2_request(lab, deployed, tmp_path):
    """README "Upgrading": relays that accept envelope v1 (the module's site.yml ran with
    relay_envelope_accept_v1=true, as an older version deployed) and a client artifact of an older version
    (the shared Fernet key, no v2 key). rotate-credentials.yml moves them to v2 only while a client holding
    its v2 key sends load: none of its requests fails, the artifact carries the v2 key, every relay.toml
    says `accept_v1 = false` and v1 is refused; a second run finds nothing to move."""
    dep, ca = deployed, lab.ca_path
    store = json.loads((dep.secrets_dir / "secrets.json").read_text(encoding="utf-8"))
    shared_key = store["fernet_keys"][0]
    profile = dep.client_profile()
    token, v2_key = profile["token"], profile["fernet_key"]
    assert v2_key != shared_key
    v2_artifact = tmp_path / "client-with-v2-key.toml"  # a client that already switched
    shutil.copy(dep.artifact, v2_artifact)
    dep.artifact.write_text(
        dep.artifact.read_text(encoding="utf-8").replace(v2_key, shared_key), encoding="utf-8"
    )
    assert sealed_chat(dep, ca, token, shared_key, version="v1").status_code == 200  # v1 still served
    secrets = secrets_now(lab, dep)

    with LoadGenerator(v2_artifact, ca, concurrency=4) as load:
        run = dep.run(ROTATE, "--tags", MOVE_TAG, "-vvv", "-e", "relay_rotation_grace=3")
        time.sleep(2)  # a few requests once v1 is off
    print(f"\nrotate-credentials.yml --tags {MOVE_TAG}: load: {json.dumps(load.stats.summary())}")
    assert_ok(run)
    assert "moving to envelope v2 only" in run.output
    assert_no_secret(run.output, secrets)
    assert load.stats.failed == 0, load.stats.failures[:10]
    assert load.stats.by_kind["sealed"] > 0 and load.stats.by_kind["sealed_stream"] > 0
    assert dep.client_profile()["fernet_key"] == v2_key  # nothing rotated; the artifact has the v2 key
    for vmid in vmids(lab):
        assert "\naccept_v1 = false\n" in in_container(vmid, "cat", "/etc/llm-relay/relay.toml")
    refused = sealed_chat(dep, ca, token, shared_key, version="v1")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "envelope_disabled"
    assert sealed_chat(dep, ca, token, v2_key).status_code == 200

    again = dep.run(ROTATE, "--tags", MOVE_TAG)
    assert_ok(again)
    assert "envelope v2 only already" in again.output
    assert {h: r["changed"] for h, r in again.recap.items() if h != "localhost"} == {"rot-1": 0, "rot-2": 0}


def with_provider(**changes) -> list[dict]:
    """The lab inventory's providers, the first one changed."""
    providers = inventory_providers()
    providers[0].update(changes)
    return providers


NOT_PEM_CA = {"ca_pem": "/usr/local/share/ca-certificates/corp.crt"}
# PEM-shaped, but no certificate OpenSSL can load: passes the controller's check, refused on the hosts.
BROKEN_PEM_CA = {"ca_pem": "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"}


def bad_entries() -> dict[str, tuple[dict, str]]:
    """case -> (extra vars, the message it must fail with)."""
    return {
        "bad token name": ({"relay_client_names": ["default", "ops team"]}, "'ops team' not allowed"),
        "CA not PEM": ({"relay_providers": with_provider(**NOT_PEM_CA)}, "ca_pem holds no PEM certificate"),
        "missing provider key": ({"relay_providers": with_provider(api_keys=[])}, "no api_keys"),
    }


@pytest.mark.timeout(900)
@pytest.mark.parametrize("playbook", ["site.yml", ROTATE])
def test_bad_entry_fails_early_names_it_prints_no_secret_and_changes_nothing(lab, state, deployed, playbook):
    dep = deployed
    secrets = secrets_now(lab, dep)
    store, artifact = (dep.secrets_dir / "secrets.json").read_bytes(), dep.artifact.read_bytes()
    before = state.snapshot(dep)
    for case, (variables, message) in bad_entries().items():
        started = time.monotonic()
        run = dep.run(playbook, "-vvv", "-e", json.dumps(variables))
        seconds = time.monotonic() - started
        print(f"\n{playbook} with a {case}: failed after {seconds:.0f} s")
        assert run.returncode != 0, case
        assert message in run.output, (case, run.output[-3000:])
        # Failed on the controller, before any container was touched.
        assert set(run.recap) == {"localhost"} and run.recap["localhost"]["failed"] == 1, case
        assert_no_secret(run.output, secrets)
    # Nothing was generated, rotated, created or written.
    assert (dep.secrets_dir / "secrets.json").read_bytes() == store
    assert dep.artifact.read_bytes() == artifact
    assert secrets_now(lab, dep) == secrets
    after = state.snapshot(dep)
    assert (after.vmids, after.tunnels, after.records) == (before.vmids, before.tunnels, before.records)


@pytest.mark.timeout(900)
def test_ca_openssl_refuses_fails_on_the_hosts_before_anything_is_written(lab, deployed):
    dep, ca = deployed, lab.ca_path
    secrets = secrets_now(lab, dep)
    variables = {"relay_providers": with_provider(**BROKEN_PEM_CA)}
    run = dep.run(ROTATE, "--tags", "provider_keys", "-vvv", "-e", json.dumps(variables))
    assert run.returncode != 0
    assert "ca_pem of provider openrouter is not a usable CA bundle" in run.output, run.output[-3000:]
    # One replica at a time: the first refuses it and the rollout stops there, before the second.
    failed = {h: r["failed"] for h, r in run.recap.items() if h != "localhost"}
    assert failed.get("rot-1") == 1 and failed.get("rot-2", 0) == 0, failed
    assert_no_secret(run.output, secrets)
    # The CA bundle is the first file written: nothing changed, so nothing was reloaded, and a rerun
    # without the bad CA finds nothing to do on the hosts.
    assert chat(dep, ca, dep.client_profile()["token"]).status_code == 200
    again = dep.run(ROTATE, "--tags", "provider_keys")
    assert_ok(again)
    assert {h: r["changed"] for h, r in again.recap.items() if h != "localhost"} == {"rot-1": 0, "rot-2": 0}


@pytest.mark.timeout(1200)
def test_rotation_under_load_fails_no_request_and_old_credentials_are_refused(lab, state, deployed, tmp_path):
    dep, ca = deployed, lab.ca_path
    cloudflare = Cloudflare(lab)
    tunnel_id = cloudflare.tunnel_id(TUNNEL)
    old_profile, old_tunnel_token = dep.client_profile(), cloudflare.token(tunnel_id)
    old_secrets = secrets_now(lab, dep)

    load = LoadGenerator(dep.artifact, ca, concurrency=4)
    started = time.monotonic()
    with load:
        run = dep.run(
            ROTATE,
            "-vvv",
            "-e",
            "relay_rotation_grace=5",
            "-e",
            "relay_tunnel_drain_seconds=3",
            "-e",
            f"cloudflare_access_rotation_grace={ACCESS_GRACE}",
        )
        rotation_seconds = time.monotonic() - started
        time.sleep(2)  # a few requests with the final credentials
    stats = load.stats
    print(f"\nrotate-credentials.yml: {rotation_seconds:.0f} s; load: {json.dumps(stats.summary())}")
    assert_ok(run)
    assert "Client config: " + str(dep.artifact) in run.output
    # Neither the old secrets nor the new ones (names of store entries differ: both sets are checked).
    assert_no_secret(run.output, old_secrets)
    assert_no_secret(run.output, secrets_now(lab, dep))
    assert stats.failed == 0, stats.failures[:10]
    assert stats.sent >= 100 and all(stats.by_kind[k] > 0 for k in ("plain_stream", "sealed_stream"))
    assert len(stats.by_credentials) == 2  # the generator really switched to the new artifact

    new_profile = dep.client_profile()
    assert new_profile["token"] != old_profile["token"]
    assert new_profile["fernet_key"] != old_profile["fernet_key"]
    # The old client token and the old Fernet key are refused, the new ones work.
    assert chat(dep, ca, old_profile["token"]).status_code == 401
    assert chat(dep, ca, new_profile["token"]).status_code == 200
    with pytest.raises(EnvelopeRefused, match=r"\(403 envelope_unknown_key\)"):
        sealed_chat(dep, ca, new_profile["token"], old_profile["fernet_key"])
    answer = sealed_chat(dep, ca, new_profile["token"], new_profile["fernet_key"])
    assert answer.status_code == 200 and "choices" in answer.json()
    # The Cloudflare Access service token got a new secret (same Client ID), written into the artifact; the
    # old secret is refused by the edge once its grace period is over.
    assert new_profile["access_client_id"] == old_profile["access_client_id"]
    assert new_profile["access_client_secret"] != old_profile["access_client_secret"]
    old_access = {**dep.access_headers(), "CF-Access-Client-Secret": old_profile["access_client_secret"]}
    deadline = time.monotonic() + ACCESS_GRACE + 10
    while (status := models_status(dep, ca, new_profile["token"], old_access)) != 403:
        assert status == 200 and time.monotonic() < deadline, status
        time.sleep(1)
    assert models_status(dep, ca, new_profile["token"], dep.access_headers()) == 200
    # Two-tunnel rotation: a new tunnel took the old one's name and the hostname; the old tunnel, its DNS
    # target and its connectors are gone, and its token names a deleted tunnel.
    (tunnel,) = state.tunnels(TUNNEL)
    assert tunnel["id"] != tunnel_id
    assert state.tunnels(TUNNEL + "-next") == []
    tunnels = f"/accounts/{cloudflare.account}/cfd_tunnel"
    assert tunnel_id not in {t["id"] for t in cloudflare.get(tunnels, is_deleted="false")}
    assert cloudflare.get(f"{tunnels}/{tunnel_id}")["deleted_at"]
    (record,) = [r for r in state.records(HOSTNAME) if r["type"] == "CNAME"]
    assert record["content"] == f"{tunnel['id']}.cfargotunnel.com" and record["proxied"]
    assert len(cloudflare.connectors(tunnel["id"])) == REPLICAS
    for vmid in vmids(lab):
        units = in_container(vmid, "systemctl", "list-units", *LIST_CONNECTORS)
        assert [u.split()[0] for u in units.splitlines()] == ["cloudflared.service"], units
        assert in_container(vmid, "ls", "/etc").split().count("cloudflared-next") == 0
    # A deleted tunnel: cloudflared gives up at once (exit 1) with the edge's cause.
    code, log = cloudflared_with(old_tunnel_token, ca, tmp_path)
    assert code == 1 and f'initial tunnel connection failed error="{edge_tunnel.DELETED}"' in log, log
    # The rotation's steps, in order: second connectors up before the CNAME moves, the main connectors
    # switched one at a time after it, the old tunnel deleted only once no connector of it is left.
    found = events(run.output)
    started = [first(found, START, host, "changed") for host in ("rot-1", "rot-2")]
    second_up = [first(found, CONNECTED, s.host, "ok", after=s.index) for s in started]
    moved = first(found, MOVE_CNAME, "localhost", "changed")
    assert all(step.index < moved.index for step in second_up)
    one = first(found, RESTART_CONNECTOR, "rot-1", "changed", after=moved.index)
    one_back = first(found, CONNECTED, "rot-1", "ok", after=one.index)
    two = first(found, RESTART_CONNECTOR, "rot-2", "changed", after=one_back.index)
    two_back = first(found, CONNECTED, "rot-2", "ok", after=two.index)
    removed = first(found, REMOVE_SECOND, "rot-2", "changed", after=two_back.index)
    first(found, "The old tunnel is gone", "localhost", "changed", after=removed.index)


@pytest.mark.timeout(900)
def test_secret_rotation_opt_in_keeps_the_tunnel_and_refuses_the_old_token(lab, deployed, tmp_path):
    dep, ca = deployed, lab.ca_path
    cloudflare = Cloudflare(lab)
    tunnel_id = cloudflare.tunnel_id(TUNNEL)
    old_tunnel_token, old_secrets = cloudflare.token(tunnel_id), secrets_now(lab, dep)
    with LoadGenerator(dep.artifact, ca, concurrency=4) as load:
        run = dep.run(ROTATE, "--tags", "tunnel", "-vvv", "-e", "relay_tunnel_rotation=secret")
    print(f"\nrotate-credentials.yml --tags tunnel (secret): load: {json.dumps(load.stats.summary())}")
    assert_ok(run)
    assert load.stats.failed == 0, load.stats.failures[:10]
    assert_no_secret(run.output, old_secrets)
    assert_no_secret(run.output, secrets_now(lab, dep))
    # Same tunnel, new secret: the old token cannot connect a connector any more.
    assert cloudflare.tunnel_id(TUNNEL) == tunnel_id
    assert cloudflare.token(tunnel_id) != old_tunnel_token
    code, log = cloudflared_with(old_tunnel_token, ca, tmp_path)
    assert code is None and "Registered tunnel connection" not in log, log
    assert 'Register tunnel error from server side error="Unauthorized: Invalid tunnel secret"' in log
    assert len(cloudflare.connectors(tunnel_id)) == REPLICAS
    first(events(run.output), MOVE_CNAME, "localhost", "skipping")


DRAIN = "The old tunnel drains (requests reaching it are still served)"
RENAME = "The new tunnel takes the old one's name"


@pytest.mark.timeout(1200)
def test_a_rotation_cut_or_failed_midway_is_finished_by_running_again(lab, state, deployed):
    """README: a run cut anywhere is finished by running it again; site.yml refuses while both tunnels
    exist. Cut by SIGTERM in the drain (both tunnels up, the CNAME moved), then the re-run failing on an API
    error at the rename (old tunnel deleted, new one still <name>-next), which site.yml then finishes."""
    dep, ca = deployed, lab.ca_path
    cloudflare = Cloudflare(lab)
    old_id = cloudflare.tunnel_id(TUNNEL)
    secrets = secrets_now(lab, dep)
    tunnel_only = ("--tags", "tunnel", "-vvv", "-e", "relay_tunnel_drain_seconds=3")
    with LoadGenerator(dep.artifact, ca, concurrency=4) as load:
        cut, was_cut = dep.run_and_cut(
            ROTATE,
            *tunnel_only,
            "-e",
            "relay_tunnel_drain_seconds=600",
            cut=lambda line: line.startswith(f"TASK [{DRAIN}]"),
            grace=2,
        )
        assert was_cut and cut.returncode != 0, cut.output[-3000:]
        (next_tunnel,) = state.tunnels(TUNNEL + "-next")
        next_token = cloudflare.token(next_tunnel["id"])
        secrets.update({f"next {k}": v for k, v in secret_scan.tunnel_secrets(next_token).items()})
        assert cloudflare.tunnel_id(TUNNEL) == old_id
        (record,) = [r for r in state.records(HOSTNAME) if r["type"] == "CNAME"]
        assert record["content"] == f"{next_tunnel['id']}.cfargotunnel.com"
        assert len(cloudflare.connectors(old_id)) == len(cloudflare.connectors(next_tunnel["id"])) == REPLICAS

        refused = dep.run("site.yml", "-vvv")
        assert refused.returncode != 0
        assert f"name='{TUNNEL}' ({old_id}) and rename_from='{TUNNEL}-next' ({next_tunnel['id']})" in (
            refused.output
        ), refused.output[-3000:]
        assert refused.changed_hosts == {}, refused.output[-3000:]

        # Every attempt of the rename (the client's retries included) answers 503.
        faults = lab.cloudflare.url + "/_lab/faults"
        rule = {"path": "/accounts/*/cfd_tunnel/*", "method": "PATCH", "mode": "5xx", "count": 10}
        requests.post(faults, json=rule, verify=str(ca), timeout=10).raise_for_status()
        try:
            failed = dep.run(ROTATE, *tunnel_only)
        finally:
            requests.delete(faults, verify=str(ca), timeout=10).raise_for_status()
        assert failed.returncode != 0
        first(events(failed.output), RENAME, "localhost", "fatal")
        assert state.tunnels(TUNNEL) == []
        assert [t["id"] for t in state.tunnels(TUNNEL + "-next")] == [next_tunnel["id"]]

        finished = dep.run("site.yml", "-vvv")
    print(f"\nrotation cut, refused, failed, finished: load: {json.dumps(load.stats.summary())}")
    assert_ok(finished)
    assert load.stats.failed == 0, load.stats.failures[:10]
    for run in (cut, refused, failed, finished):  # failure paths at -vvv too
        assert_no_secret(run.output, secrets)
    # The tunnel the cut run made, under the usual name; no third tunnel; the connectors stayed put.
    assert [t["id"] for t in state.tunnels(TUNNEL)] == [next_tunnel["id"]]
    assert state.tunnels(TUNNEL + "-next") == []
    assert cloudflare.get(f"/accounts/{cloudflare.account}/cfd_tunnel/{old_id}")["deleted_at"]
    assert len(cloudflare.connectors(next_tunnel["id"])) == REPLICAS
    assert "changed" not in {e.status for e in events(finished.output) if e.host.startswith(PREFIX)}


def vmids(lab) -> list[int]:
    px = lab.proxmox()
    return [c["vmid"] for node in lab.nodes for c in px.nodes(node).lxc.get() if c["name"].startswith(PREFIX)]


def inventory_providers() -> list[dict]:
    sys.path.insert(0, str(REPO / "inventory" / "lab"))
    try:
        import lab_inventory
    finally:
        sys.path.pop(0)
    return lab_inventory.lab_vars()["relay_providers"]


def upstream_keys(lab, marker: str) -> list[str]:
    log = requests.get(lab.upstream.url + "/_lab/requests", verify=str(lab.ca_path), timeout=30).json()

    def carries_marker(record: dict) -> bool:
        # X-Request-Id: a client correlation header the relay's allow-list forwards to the provider.
        return any(k.lower() == "x-request-id" and v == marker for k, v in record.get("headers", {}).items())

    return [r["key"] for r in log["requests"] if carries_marker(r)]


@pytest.mark.timeout(1200)
def test_provider_keys_changed_in_the_inventory_are_rolled_out_by_reload(lab, deployed):
    dep, ca = deployed, lab.ca_path
    first, second = lab.upstream.api_keys[:2]
    providers = inventory_providers()
    assert providers[0]["api_keys"] == [first]
    providers[0]["api_keys"] = [second]
    token = dep.client_profile()["token"]
    with LoadGenerator(dep.artifact, ca, concurrency=2) as load:
        run = dep.run(ROTATE, "--tags", "provider_keys", "-e", json.dumps({"relay_providers": providers}))
    assert_ok(run)
    assert load.stats.failed == 0, load.stats.failures[:10]
    assert dep.client_profile()["token"] == token  # nothing else was rotated
    marker = f"provider-keys-{time.time_ns()}"
    for _ in range(4):  # both replicas
        resp = requests.get(
            dep.url + "/v1/models",
            headers={"Authorization": f"Bearer {token}", "X-Request-Id": marker, **dep.access_headers()},
            verify=str(ca),
            timeout=30,
        )
        assert resp.status_code == 200
    assert set(upstream_keys(lab, marker)) == {second}


@pytest.mark.timeout(1200)  # includes destroy.yml at the end of the module
def test_stopping_one_container_keeps_requests_succeeding(lab, deployed):
    dep, ca = deployed, lab.ca_path
    cloudflare = Cloudflare(lab)
    tunnel_id = cloudflare.tunnel_id(TUNNEL)
    px = lab.proxmox()
    ours = {c["name"]: (node, c["vmid"]) for node in lab.nodes for c in px.nodes(node).lxc.get()}
    node, vmid = ours[f"{PREFIX}1"]
    assert ours[f"{PREFIX}2"][0] != node  # 2 replicas on 2 nodes
    lxc = px.nodes(node).lxc(vmid)
    with LoadGenerator(dep.artifact, ca, concurrency=4) as load:
        time.sleep(3)
        before = load.stats.sent
        stop_started = time.monotonic()
        wait_task(px, node, lxc.status.shutdown.post(timeout=60))
        assert lxc.status.current.get()["status"] == "stopped"
        stop_seconds = time.monotonic() - stop_started
        stopped = load.stats.sent
        time.sleep(5)  # only rot-2 serves now
        after = load.stats.sent
    print(f"\nfailover (clean shutdown {stop_seconds:.0f} s): {json.dumps(load.stats.summary())}")
    assert load.stats.failed == 0, load.stats.failures[:10]
    assert 0 < before < stopped < after  # requests before, during and after the stop
    assert len(cloudflare.connectors(tunnel_id)) == 1
    wait_task(px, node, lxc.status.start.post())
    deadline = time.monotonic() + 120
    while len(cloudflare.connectors(tunnel_id)) < REPLICAS:
        assert time.monotonic() < deadline, "the restarted replica's connector did not come back"
        time.sleep(2)


def wait_task(px, node: str, upid: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (status := px.nodes(node).tasks(upid).status.get())["status"] != "stopped":
        assert time.monotonic() < deadline, f"task {upid} still running"
        time.sleep(1)
    assert status.get("exitstatus") == "OK", status


def changed_source(tmp_path: Path) -> Path:
    """A copy of the relay's source with one code change (a new module-level constant): a new wheel."""
    source = tmp_path / "relay"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".pytest_cache")
    shutil.copytree(REPO / "relay", source, ignore=ignore)
    init = source / "src" / "llm_relay" / "__init__.py"
    code = init.read_text(encoding="utf-8") + f"\nROLLOUT_TEST = {time.time_ns()}\n"
    init.write_text(code, encoding="utf-8")
    return source


RESTART = "Restart the relay service"
STOP_FRONTS = "Stop the units in front of the relay"


@pytest.mark.timeout(1200)
def test_relay_code_change_rolls_out_one_replica_at_a_time_under_load(lab, deployed, tmp_path):
    dep, ca = deployed, lab.ca_path
    cloudflare = Cloudflare(lab)
    tunnel_id = cloudflare.tunnel_id(TUNNEL)
    source = changed_source(tmp_path)
    secrets = secrets_now(lab, dep)
    with LoadGenerator(dep.artifact, ca, concurrency=4) as load:
        time.sleep(2)
        started = time.monotonic()
        run = dep.run("site.yml", "-vvv", "-e", json.dumps({"relay_source_dir": str(source)}))
        seconds = time.monotonic() - started
        time.sleep(2)  # a few requests to the new code on both replicas
    print(f"\nrolling upgrade by site.yml: {seconds:.0f} s; load: {json.dumps(load.stats.summary())}")
    assert_ok(run)
    assert load.stats.failed == 0, load.stats.failures[:10]
    assert load.stats.sent >= 50 and load.stats.by_kind["plain_stream"] > 0
    assert_no_secret(run.output, secrets)
    # Each replica: connector out, relay restarted, ready, connector connected again; then the next.
    found = events(run.output)
    one_stop = first(found, STOP_FRONTS, "rot-1", "changed")
    one_restart = first(found, RESTART, "rot-1", "changed", after=one_stop.index)
    one_back = first(found, CONNECTED, "rot-1", "ok", after=one_restart.index)
    two_stop = first(found, STOP_FRONTS, "rot-2", "changed", after=one_back.index)
    two_restart = first(found, RESTART, "rot-2", "changed", after=two_stop.index)
    first(found, CONNECTED, "rot-2", "ok", after=two_restart.index)
    assert len(cloudflare.connectors(tunnel_id)) == REPLICAS
