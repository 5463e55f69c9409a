"""site.yml from nothing to an answered question, a second run that changes nothing, and destroy.yml,
all run as a user who never cloned the repository runs them: the collection's tarball is built as `make
release` builds it (with the relay's wheel), installed into an empty path of a project of its own, and its
playbooks called by FQCN (llm_relay.homelab.site, llm_relay.homelab.destroy) with only the lab inventory,
rendered into that project. Every run sees no file of the checkout but the .venv it runs from (a private
mount namespace covers the rest): the relay deployed is the wheel the collection carries, and the
question is asked by a client installed into a fresh venv from the wheel the run wrote beside the client
config. The checkout's root site.yml is run by the other suites (rotation, interrupted runs) and by `make
demo`.

Every run logs in to Proxmox VE as users are told to: a privilege-separated API token of an @pve user
whose role holds exactly the example inventory's proxmox_api_role_privileges (each privilege's own
refusal is tested at the API level in tests/lab_pve/test_pve_permissions.py). Before the first run, the
same run with SDN.Use taken out of the role (the privilege PVEVMAdmin lacks) fails at the first call that
needs it, the container create, naming the privilege and the path, and leaves nothing behind.

One deployment for site.lab.test (containers site-1 on pve1, site-2 on pve2), shared by the tests of this
module in order:
  - without SDN.Use the run fails at the create and nothing is made (in the fixture, before the first run);
  - the first run builds two running containers, one tunnel with connectors, one proxied CNAME to it and
    a 0600 client artifact, with the client's wheel beside it;
  - one version: the collection's (galaxy.yml), the wheel it carries, the client wheel written, what both
    relays report on their metrics listener's /healthz, `llm-relay --version` and doctor's check;
  - a user's question (`llm-relay ask --encrypt` with that artifact, the client pip-installed from the
    artifact's wheel into a fresh venv) is answered through the lab edge -> connector -> relay -> fake
    upstream, which saw the provider key the relay injected;
  - Cloudflare Access (on in the lab inventory): the first run made one application, one Service Auth
    policy and one service token, whose secret is stored 0600 and in the artifact, never printed; a request
    without the service token (or with a wrong secret) is refused by the edge with 403 and never reaches
    the upstream, the same request with it is answered;
  - a second run reports changed=0 for every host, and so does `--check --diff`;
  - files changed by hand on a container (the relay's config, the connector's unit) are put back by the
    next run, which reloads the relay and restarts that connector in the rolling restart play;
  - with node pve2 down (the API answers 595 on its paths) a run fails naming the node, after the replica
    on pve1, the tunnel and the end-to-end check went through;
  - destroy.yml refuses without confirm=yes, then leaves no tunnel, record, container, LXC directory nor
    Access application, policy or service token.
Figures (wall times) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import time
import uuid

import pytest
import requests
import yaml
from deploy_state import harness, in_container, lxc_dirs

REPO, VENV_BIN, assert_ok, deployment = harness.REPO, harness.VENV_BIN, harness.assert_ok, harness.deployment

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

HOSTNAME, PREFIX, REPLICAS = "site.lab.test", "site-", 2
VERSION = str(yaml.safe_load((REPO / "galaxy.yml").read_text())["version"])
WHEEL = f"llm_relay-{VERSION}-py3-none-any.whl"
# What the relay's loopback-only metrics listener answers on /healthz, read inside a container.
HEALTHZ = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=10).read().decode())"
)
# Sent by the relay to the provider on every request of this deployment: finds our requests in the
# upstream's log, which other suites share.
MARKER = f"llm-relay site test {uuid.uuid4().hex[:8]}"


def documented_privileges() -> list[str]:
    data = yaml.safe_load((REPO / "inventory/example/group_vars/all/main.yml").read_text())
    return list(data["proxmox_api_role_privileges"])


@pytest.fixture(scope="module")
def account(lab):
    """Role, @pve user, privsep token and ACLs on / for both, made with the lab's root-equivalent token."""
    px = lab.proxmox("token")
    suffix = secrets.token_hex(3)
    userid, role = f"site-{suffix}@pve", f"LabSite{suffix}"
    px.access.roles.post(roleid=role, privs=",".join(documented_privileges()))
    px.access.users.post(userid=userid)
    secret = px.access.users(userid).token("site").post()["value"]
    px.access.acl.put(path="/", roles=role, users=userid, tokens=f"{userid}!site")
    creds = {"proxmox_api_user": userid, "proxmox_api_token_id": "site", "proxmox_api_token_secret": secret}
    try:
        yield {"role": role, "creds": creds, "px": px}
    finally:
        px.access.users(userid).delete()
        px.access.roles(role).delete()


def providers(lab) -> list[dict]:
    """The lab inventory's provider, with this module's marker header."""
    return [
        {
            "name": "openrouter",
            "base_url": f"https://10.87.0.1:{lab.upstream.port}/api/v1",
            "api_keys": [lab.upstream.api_keys[0]],
            "headers": {"X-Title": MARKER},
        }
    ]


@pytest.fixture(scope="module")
def site(lab, state, account, tmp_path_factory):
    dep = deployment(tmp_path_factory, HOSTNAME, PREFIX, REPLICAS)
    dep.project = harness.user_project(tmp_path_factory)
    dep.secret = account["creds"]["proxmox_api_token_secret"]
    extra = ("-e", json.dumps({"relay_providers": providers(lab), **account["creds"]}))
    dep.site = lambda *a: dep.run("llm_relay.homelab.site", *extra, *a)
    dep.destroy = lambda *a: dep.run("llm_relay.homelab.destroy", *extra, *a)
    # "From nothing": a crashed earlier session may have left this hostname's resources behind.
    before = state.snapshot(dep)
    if before.tunnels or before.records or before.containers:
        assert_ok(dep.destroy("-e", "confirm=yes"))
    px, role = account["px"], account["role"]
    px.access.roles(role).put(privs=",".join(p for p in documented_privileges() if p != "SDN.Use"))
    try:
        dep.refused = dep.site()
    finally:
        px.access.roles(role).put(privs=",".join(documented_privileges()))
    dep.after_refusal = state.snapshot(dep)
    started = time.monotonic()
    dep.first = dep.site()
    dep.first_seconds = time.monotonic() - started
    print(f"\nsite.yml for {HOSTNAME}, {REPLICAS} replicas, from nothing: {dep.first_seconds:.0f} s")
    try:
        yield dep
    finally:
        if state.snapshot(dep).containers or state.snapshot(dep).tunnels:
            dep.destroy("-e", "confirm=yes")


def test_without_sdn_use_the_run_fails_at_the_create_naming_privilege_and_path(site):
    assert site.refused.returncode != 0
    assert "Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)" in site.refused.output, (
        site.refused.output[-4000:]
    )
    assert site.secret not in site.refused.output
    snap = site.after_refusal
    assert (snap.containers, snap.tunnels, snap.records) == ([], [], [])


def test_first_run_builds_containers_tunnel_record_and_artifact(site, state):
    assert_ok(site.first)
    snap = state.snapshot(site)
    assert sorted(c["name"] for c in snap.containers) == ["site-1", "site-2"]
    assert {c["status"] for c in snap.containers} == {"running"}
    # Replicas are spread over the cluster's nodes.
    assert {c["node"] for c in snap.containers} == {"pve1", "pve2"}
    (tunnel,) = snap.tunnels
    (record,) = snap.records
    assert record["type"] == "CNAME"
    assert record["content"] == f"{tunnel['id']}.cfargotunnel.com"
    assert record["proxied"] is True
    # Each container runs one connector (cloudflared client) of the one tunnel.
    connectors = state.connections(tunnel["id"])
    assert len(connectors) == REPLICAS
    assert all(c["conns"] for c in connectors)
    mode = stat.S_IMODE(site.artifact.stat().st_mode)
    assert mode == 0o600, oct(mode)
    profile = site.client_profile()
    assert profile["url"] == site.url
    assert profile["encrypt"] is True
    assert profile["token"].startswith("lrt_")
    # The artifact's secrets are never printed by the playbook.
    assert profile["token"] not in site.first.output
    assert profile["fernet_key"] not in site.first.output
    assert str(site.artifact) in site.first.output
    assert site.secret not in site.first.output
    # Cloudflare Access (on in the lab inventory): one application for the hostname, linking one Service
    # Auth policy that includes exactly the one service token, whose Client ID and Secret the artifact holds.
    access = state.access_objects(site)
    (app,) = access["apps"]
    (policy,) = access["policies"]
    (token,) = access["service_tokens"]
    assert app["type"] == "self_hosted" and app["domain"] == HOSTNAME
    assert [p["id"] for p in app["policies"]] == [policy["id"]]
    assert policy["decision"] == "non_identity"
    assert policy["include"] == [{"service_token": {"token_id": token["id"]}}]
    assert profile["access_client_id"] == token["client_id"]
    assert profile["access_client_secret"] not in site.first.output
    stored = site.secrets_dir / "access-service-token.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text())["client_secret"] == profile["access_client_secret"]


def test_the_runs_see_nothing_of_the_checkout_but_its_venv(site):
    listing = "import os, sys; print(sorted(os.listdir(sys.argv[1])))"
    proc = subprocess.run(
        [*harness.hidden_checkout(site.project), str(VENV_BIN / "python"), "-c", listing, str(REPO)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['.venv']"
    # The namespace is the run's own: the checkout is still whole for everyone else.
    assert (REPO / "relay" / "pyproject.toml").is_file()


def test_one_version_collection_relays_and_client_wheel(site, state):
    installed = site.project / "collections" / "ansible_collections" / "llm_relay" / "homelab"
    manifest = json.loads((installed / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["version"] == VERSION
    # The client wheel written beside the client config is the one the collection carries (the same bytes),
    # and the only one there.
    carried = installed / "roles" / "relay" / "files" / "dist" / WHEEL
    written = site.artifact.parent / WHEEL
    assert sorted(p.name for p in site.artifact.parent.glob("*.whl")) == [WHEEL]
    assert written.read_bytes() == carried.read_bytes()
    assert f"pip install '{written}[client]'" in site.first.output
    # Each replica runs that version (nothing else could have been deployed: the checkout was hidden).
    for container in state.snapshot(site).containers:
        health = json.loads(in_container(container["vmid"], "python3", "-c", HEALTHZ))
        assert health == {"status": "ok", "version": VERSION}, container["name"]


@pytest.fixture(scope="module")
def pc_client(site, tmp_path_factory):
    """The client as README's "Using the relay from the PC" installs it: a fresh venv, then
    pip install '<artifact dir>/llm_relay-<version>-py3-none-any.whl[client]'."""
    venv = tmp_path_factory.mktemp("pc") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    started = time.monotonic()
    requirement = f"{site.artifact.parent / WHEEL}[client]"
    # --no-compile: byte-compiling the SDKs' thousands of modules is most of the install's time, and the
    # first import does it anyway.
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", requirement],
        cwd=venv.parent,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    print(f"\nclient wheel + its client extra into a fresh venv: {time.monotonic() - started:.0f} s")
    return venv / "bin"


def pc(site, pc_client, *args: str) -> subprocess.CompletedProcess:
    """`llm-relay ARGS` of the PC's client, with the artifact as its config and no proxy."""
    env = {**os.environ, "LLM_RELAY_CLIENT_CONFIG": str(site.artifact)}
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    return subprocess.run(
        [str(pc_client / "llm-relay"), *args],
        cwd=pc_client.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def upstream_requests(lab) -> list[dict]:
    answer = requests.get(lab.upstream.url + "/_lab/requests", verify=str(lab.ca_path), timeout=30)
    answer.raise_for_status()
    return answer.json()["requests"]


def test_user_question_is_answered_through_edge_connector_relay_and_upstream(lab, site, pc_client):
    nonce = uuid.uuid4().hex
    proc = pc(site, pc_client, "ask", "--encrypt", "--model", "lab/echo", f"site test {nonce}")
    assert proc.returncode == 0, proc.stderr
    # The fake upstream echoes the prompt: the answer came from it.
    assert f"site test {nonce}" in proc.stdout
    ours = [r for r in upstream_requests(lab) if r["headers"].get("X-Title") == MARKER]
    chats = [r for r in ours if r["path"] == "/api/v1/chat/completions"]
    assert chats, "the upstream saw no chat request from this deployment"
    # The relay injected the provider key (the client never had it) and the upstream accepted it.
    assert chats[-1]["key"] == lab.upstream.api_keys[0]
    assert chats[-1]["authorized"] is True
    # The relay's client token and Fernet envelope stay between client and relay.
    profile = site.client_profile()
    assert profile["token"] not in json.dumps(chats[-1]["headers"])
    # The Access service token stays at the edge: neither the relay nor the provider sees it.
    assert profile["access_client_secret"] not in json.dumps(chats[-1]["headers"])


def test_without_the_service_token_the_edge_refuses_and_no_connector_sees_it(lab, site):
    """The same request (valid client token) with and without the Access service token: without it the lab
    edge answers Cloudflare's 403 itself, and the relay never forwards it to the upstream."""
    token = site.client_profile()["token"]

    def models(marker: str, access: dict[str, str]) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", "X-Request-Id": marker, **access}
        return requests.get(site.url + "/v1/models", headers=headers, verify=str(lab.ca_path), timeout=30)

    without, with_token = f"access-without-{uuid.uuid4().hex}", f"access-with-{uuid.uuid4().hex}"
    refused = models(without, {})
    assert refused.status_code == 403, refused.text[:300]
    assert refused.headers["Server"] == "cloudflare" and refused.headers.get("CF-RAY")
    assert "Cloudflare Access" in refused.text and '"error"' not in refused.text
    answered = models(with_token, site.access_headers())
    assert answered.status_code == 200, answered.text[:300]
    seen = {v for r in upstream_requests(lab) for k, v in r["headers"].items() if k.lower() == "x-request-id"}
    assert with_token in seen  # the marker does reach the upstream when the edge lets the request through
    assert without not in seen
    # A wrong secret for the right Client ID is refused the same way.
    wrong = {**site.access_headers(), "CF-Access-Client-Secret": "0" * 64}
    assert models(f"access-wrong-{uuid.uuid4().hex}", wrong).status_code == 403


def test_the_pc_client_and_the_relay_say_the_same_version(site, pc_client):
    assert pc(site, pc_client, "--version").stdout.strip() == f"llm-relay {VERSION}"
    doctor = pc(site, pc_client, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.returncode == 0, doctor.stdout
    assert checks["version"]["status"] == "ok", checks["version"]
    assert checks["version"]["detail"] == f"client {VERSION}, relay {VERSION}"


def test_second_run_changes_nothing(site):
    started = time.monotonic()
    second = site.site()
    print(f"\nsecond run: {time.monotonic() - started:.0f} s")
    assert_ok(second)
    assert set(second.recap) >= {"localhost", "site-1", "site-2"}
    assert second.changed_hosts == {}, second.output[-6000:]


def test_check_diff_on_the_converged_deployment_reports_nothing(site):
    run = site.site("--check", "--diff")
    assert_ok(run)
    assert run.changed_hosts == {}, run.output[-6000:]
    assert site.client_profile()["token"] not in run.output
    assert site.client_profile()["access_client_secret"] not in run.output


def test_files_changed_by_hand_are_put_back_by_the_next_run(lab, site, state):
    (one,) = [c for c in state.snapshot(site).containers if c["name"] == "site-1"]
    config, unit = "/etc/llm-relay/relay.toml", "/etc/systemd/system/cloudflared.service"
    before = {path: in_container(one["vmid"], "cat", path) for path in (config, unit)}
    for path in (config, unit):
        in_container(one["vmid"], "sh", "-c", f"echo '# changed by hand' >> {path}")
    run = site.site()
    assert_ok(run)
    assert set(run.changed_hosts) == {"site-1"}, run.output[-6000:]
    assert {path: in_container(one["vmid"], "cat", path) for path in (config, unit)} == before
    # The connector's unit changed: its restart waited for the rolling restart play, on site-1 only.
    restart_play = run.output[run.output.index("PLAY [Rolling restart") :]
    assert "TASK [llm_relay.homelab.cloudflared : Restart the cloudflared service]" in restart_play
    assert "changed: [site-1]" in restart_play and "changed: [site-2]" not in restart_play
    tunnel_id = state.snapshot(site).tunnels[0]["id"]
    assert len(state.connections(tunnel_id)) == REPLICAS


def test_with_one_node_down_the_other_replica_converges_and_the_run_names_the_node(lab, site, account):
    faults = f"{lab.pve.url}/_lab/faults"
    token = f"{account['creds']['proxmox_api_user']}!{account['creds']['proxmox_api_token_id']}"
    rule = {"node_offline": True, "nodes": ["pve2"], "users": [token]}
    assert requests.post(faults, json=rule, verify=str(lab.ca_path), timeout=30).status_code == 200
    try:
        run = site.site()
    finally:
        requests.post(faults, json={**rule, "node_offline": False}, verify=str(lab.ca_path), timeout=30)
    assert run.returncode != 0
    offline = "node pve2 is offline or unreachable from the node serving the API"
    assert offline in run.output, run.output[-4000:]
    assert run.recap["site-2"]["failed"] == 1
    assert run.recap["site-1"]["failed"] == 0 and run.recap["localhost"]["failed"] == 0
    # The replica that could be reached went on: tunnel, services, the check through the public hostname.
    assert "PLAY [End-to-end check and client artifact]" in run.output
    check = run.output[run.output.index("TASK [Models list through the public hostname]") :]
    assert check.split("\n", 2)[1].startswith("ok: [localhost]"), check[:2000]
    assert site.secret not in run.output


def test_destroy_refuses_without_confirmation(site, state):
    refused = site.destroy()
    assert refused.returncode != 0
    assert "confirm=yes" in refused.output
    snap = state.snapshot(site)
    assert len(snap.containers) == REPLICAS and snap.tunnels and snap.records


def test_destroy_leaves_nothing_in_the_emulators_nor_on_the_machine(site, state):
    vmids = state.snapshot(site).vmids
    assert len(vmids) == REPLICAS
    started = time.monotonic()
    assert_ok(site.destroy("-e", "confirm=yes"))
    print(f"\ndestroy.yml: {time.monotonic() - started:.0f} s")
    snap = state.snapshot(site)
    assert snap.tunnels == []
    assert snap.records == []
    assert snap.containers == []
    assert lxc_dirs(vmids) == []
    assert not site.artifact.exists()
    assert state.access_objects(site) == {"apps": [], "policies": [], "service_tokens": []}
    assert not (site.secrets_dir / "access-service-token.json").exists()
    # A second destroy finds nothing to do and still succeeds.
    again = site.destroy("-e", "confirm=yes")
    assert_ok(again)
    assert again.changed_hosts == {}
