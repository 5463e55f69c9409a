"""The cloudflare_* modules through `ansible-playbook` against the lab's Cloudflare emulator (TLS, lab CA).

Every test uses its own tunnel name and hostname and removes them (other suites share the emulator).
Faults are injected on paths that only this test's tunnel uses, with a bounded count.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from lab.edge import binary

from .conftest import REPO, load_module_utils

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PLAYBOOKS = Path(__file__).with_name("playbooks")
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


# -- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cf(lab):
    section = lab.config.get("cloudflare")
    if not section:
        pytest.fail("lab/lab.toml has no [cloudflare] section: the Cloudflare emulator is not configured")
    tokens = section["tokens"]  # a table of named tokens (or a list of them)
    token = next(
        t["value"]
        for t in (tokens.values() if isinstance(tokens, dict) else tokens)
        if {"Cloudflare Tunnel:Edit", "DNS:Edit"} <= set(t.get("permissions", []))
        and section["account_id"] in t.get("accounts", [])
    )
    port = section.get("port", 8443)
    return SimpleNamespace(
        base_url=f"https://127.0.0.1:{port}/client/v4",
        control=f"https://127.0.0.1:{port}/_lab",
        account=section["account_id"],
        zone=section["zones"][0]["name"],
        token=token,
        ca=str(lab.ca_path),
        edge=f"127.0.0.1:{lab.config.get('edge', {}).get('connector_port', 7844)}",
        state_file=lab.state_dir / "cloudflare" / "state.json",
    )


@pytest.fixture(scope="module")
def api(cf):
    utils = load_module_utils()
    return utils.CloudflareClient(
        api_token=cf.token, base_url=cf.base_url, ca_path=cf.ca, account_id=cf.account
    )


@pytest.fixture
def names(cf, api):
    """A unique tunnel name and hostname; whatever exists under them is removed afterwards."""
    suffix = uuid.uuid4().hex[:10]
    made = SimpleNamespace(tunnel=f"mt-{suffix}", hostname=f"mt-{suffix}.{cf.zone}")
    yield made
    # The shared lab daemon may be restarting (`lab up` from another suite): wait for it, then clean up.
    deadline = time.monotonic() + 90
    while True:
        try:
            remove_everything_named(cf, api, made)
            return
        except load_module_utils().CloudflareAPIError as exc:
            if exc.status is not None or time.monotonic() > deadline:
                raise
            time.sleep(2)


def remove_everything_named(cf, api, made):
    zone_id, _ = api.resolve_zone(cf.zone)
    for record in api.list_all(f"/zones/{zone_id}/dns_records", params={"name": made.hostname}):
        api.request("delete", f"/zones/{zone_id}/dns_records/{record['id']}")
    for tunnel in api.find_tunnels(made.tunnel):
        api.request("delete", api.tunnels_path(tunnel["id"]), params={"cascade": "true"})


def control(cf, method, path, body=None):
    with httpx.Client(verify=ssl.create_default_context(cafile=cf.ca), timeout=10) as client:
        response = client.request(method, cf.control + path, json=body)
        response.raise_for_status()
        return response.json()


def play_env(token):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", CLOUDFLARE_API_TOKEN=token)
    return env


def play_cmd(cf, playbook, extra, flags):
    variables = {
        "cf_api_base_url": cf.base_url,
        "cf_account_id": cf.account,
        "cf_ca_path": cf.ca,
        "cf_zone": cf.zone,
    }
    variables.update(extra)
    return [
        str(ANSIBLE_PLAYBOOK),
        "-i",
        "localhost,",
        str(PLAYBOOKS / playbook),
        "-e",
        json.dumps(variables),
        *flags,
    ]


def task_states(output):
    """{task name: ok|changed|skipping|failed} from the default callback's output."""
    states, current = {}, None
    for line in output.splitlines():
        banner = re.match(r"TASK \[(.+?)\]", line)
        if banner:
            current = banner.group(1)
            continue
        status = re.match(r"(ok|changed|skipping|fatal|failed): \[localhost\]", line)
        if status and current:
            states[current] = "failed" if status.group(1) == "fatal" else status.group(1)
    return states


def run_play(cf, playbook, extra, *flags, token=None, expect_rc=0):
    proc = subprocess.run(
        play_cmd(cf, playbook, extra, flags),
        cwd=REPO,
        env=play_env(token or cf.token),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect_rc, output
    return SimpleNamespace(output=output, tasks=task_states(proc.stdout))


def relay_vars(names, service="http://10.87.0.50:8080", **extra):
    return dict(tunnel_name=names.tunnel, hostname=names.hostname, relay_service=service, **extra)


def only_tunnel(api, name):
    tunnels = api.find_tunnels(name)
    assert len(tunnels) == 1, tunnels
    return tunnels[0]


def records_named(api, cf, hostname):
    zone_id, _ = api.resolve_zone(cf.zone)
    return api.list_all(f"/zones/{zone_id}/dns_records", params={"name": hostname})


def config_of(api, tunnel_id):
    return api.request("get", api.tunnels_path(tunnel_id, "configurations"))


def connector(cf, token):
    """The real cloudflared (lab/edge/binary.py) against the lab edge, token in its environment (never
    argv), one connection; the lab edge's address, CA and transport by cloudflared's own variables."""
    env = dict(
        os.environ,
        TUNNEL_TOKEN=token,
        TUNNEL_EDGE=cf.edge,
        TUNNEL_CACERT=cf.ca,
        TUNNEL_TRANSPORT_PROTOCOL="http2",
    )
    cmd = [str(binary.locate()), "tunnel", "--no-autoupdate", "--ha-connections", "1"]
    cmd += ["--grace-period", "0s", "run"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def files_containing(secret, roots):
    needle = secret.encode()
    hits = []
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            try:
                if path.is_file() and path.stat().st_size < 5_000_000 and needle in path.read_bytes():
                    hits.append(path)
            except OSError:
                continue
    return hits


# -- the acceptance scenario ----------------------------------------------------------------------------
def test_lifecycle_idempotence_diff_check_rotation_and_removal(cf, api, names, tmp_path):
    outputs = []

    # 1. Tunnel + ingress + CNAME created.
    first = run_play(cf, "relay_tunnel.yml", relay_vars(names), "-v")
    outputs.append(first.output)
    assert first.tasks == {
        "Relay tunnel": "changed",
        "Relay ingress": "changed",
        "Relay DNS record": "changed",
        "Relay DNS record removed": "skipping",
        "Relay tunnel removed": "skipping",
    }
    tunnel = only_tunnel(api, names.tunnel)
    assert tunnel["config_src"] == "cloudflare"
    config = config_of(api, tunnel["id"])
    assert [rule.get("hostname") for rule in config["config"]["ingress"]] == [names.hostname, None]
    assert [rule["service"] for rule in config["config"]["ingress"]] == [
        "http://10.87.0.50:8080",
        "http_status:404",
    ]
    assert config["config"]["originRequest"] == {"connectTimeout": 10}
    (record,) = records_named(api, cf, names.hostname)
    assert (record["type"], record["content"], record["proxied"]) == (
        "CNAME",
        f"{tunnel['id']}.cfargotunnel.com",
        True,
    )

    # 2. Second run: nothing changes.
    second = run_play(cf, "relay_tunnel.yml", relay_vars(names), "-v")
    outputs.append(second.output)
    assert {k: v for k, v in second.tasks.items() if v != "skipping"} == {
        "Relay tunnel": "ok",
        "Relay ingress": "ok",
        "Relay DNS record": "ok",
    }

    # 3. One rule edited: only the ingress task changes and its diff names that rule.
    edited = run_play(cf, "relay_tunnel.yml", relay_vars(names, "http://10.87.0.51:8080"), "--diff", "-v")
    outputs.append(edited.output)
    assert edited.tasks["Relay tunnel"] == "ok"
    assert edited.tasks["Relay ingress"] == "changed"
    assert edited.tasks["Relay DNS record"] == "ok"
    assert f"-ingress[0] {names.hostname} -> http://10.87.0.50:8080" in edited.output
    assert f"+ingress[0] {names.hostname} -> http://10.87.0.51:8080" in edited.output
    version = config_of(api, tunnel["id"])["version"]

    # 4. Check mode on a further edit: reported, not written.
    checked = run_play(
        cf, "relay_tunnel.yml", relay_vars(names, "http://10.87.0.52:8080"), "--check", "--diff"
    )
    outputs.append(checked.output)
    assert checked.tasks["Relay ingress"] == "changed"
    assert "+ingress[0] " + names.hostname + " -> http://10.87.0.52:8080" in checked.output
    after_check = config_of(api, tunnel["id"])
    assert after_check["version"] == version
    assert after_check["config"]["ingress"][0]["service"] == "http://10.87.0.51:8080"

    # 5. rotate_secret: a different token; the old one is refused by the lab edge, the new one connects.
    old_token = api.tunnel_token(tunnel["id"])
    rotated = run_play(cf, "relay_tunnel.yml", relay_vars(names, "http://10.87.0.51:8080", rotate=True), "-v")
    outputs.append(rotated.output)
    assert rotated.tasks["Relay tunnel"] == "changed"
    assert rotated.tasks["Relay ingress"] == "ok"
    new_token = api.tunnel_token(tunnel["id"])
    assert new_token != old_token
    assert only_tunnel(api, names.tunnel)["id"] == tunnel["id"]
    assert_edge_refuses_old_token(cf, api, tunnel["id"], old_token, new_token)

    # The connector token never shows in -v output, nor in files the run leaves behind.
    for secret in (old_token, new_token):
        assert not any(secret in out for out in outputs)
        assert not files_containing(secret, [REPO / ".ansible", Path.home() / ".ansible", tmp_path])

    # 6. absent removes record and tunnel; absent again is a no-op.
    removed = run_play(cf, "relay_tunnel.yml", relay_vars(names, tunnel_state="absent"), "--diff")
    assert removed.tasks["Relay DNS record removed"] == "changed"
    assert removed.tasks["Relay tunnel removed"] == "changed"
    assert api.find_tunnels(names.tunnel) == []
    assert records_named(api, cf, names.hostname) == []
    again = run_play(cf, "relay_tunnel.yml", relay_vars(names, tunnel_state="absent"))
    assert again.tasks["Relay DNS record removed"] == "ok"
    assert again.tasks["Relay tunnel removed"] == "ok"


def assert_edge_refuses_old_token(cf, api, tunnel_id, old_token, new_token):
    refused = connector(cf, old_token)
    try:
        out, _ = refused.communicate(timeout=8)
    except subprocess.TimeoutExpired:  # cloudflared retries an "Unauthorized" refusal with back-off
        refused.terminate()
        out, _ = refused.communicate(timeout=30)
    finally:
        refused.kill()
    assert 'error="Unauthorized: Invalid tunnel secret"' in out, out
    assert "Registered tunnel connection" not in out, out

    accepted = connector(cf, new_token)
    try:
        deadline = time.monotonic() + 30
        connections = []
        while time.monotonic() < deadline and not connections:
            assert accepted.poll() is None, accepted.stdout.read()
            connections = api.request("get", api.tunnels_path(tunnel_id, "connections"))
            time.sleep(0.5)
        assert connections, "cloudflared with the new token never connected"
    finally:
        accepted.send_signal(signal.SIGTERM)
        try:
            accepted.wait(timeout=15)
        except subprocess.TimeoutExpired:
            accepted.kill()


# -- faults ---------------------------------------------------------------------------------------------
def relay_in_place(cf, api, names):
    """(tunnel id, fault glob of its configuration endpoint) after one successful play."""
    run_play(cf, "relay_tunnel.yml", relay_vars(names))
    tunnel_id = only_tunnel(api, names.tunnel)["id"]
    return tunnel_id, f"/accounts/*/cfd_tunnel/{tunnel_id}/configurations"


def test_429_and_503_are_retried_and_the_play_succeeds(cf, api, names):
    tunnel_id, path = relay_in_place(cf, api, names)
    control(
        cf, "POST", "/faults", {"path": path, "method": "GET", "mode": "429", "count": 1, "retry_after": 2}
    )
    control(cf, "POST", "/faults", {"path": path, "method": "PUT", "mode": "5xx", "status": 503, "count": 1})
    played = run_play(cf, "relay_tunnel.yml", relay_vars(names, "http://10.87.0.53:8080"))
    assert played.tasks["Relay ingress"] == "changed"
    assert config_of(api, tunnel_id)["config"]["ingress"][0]["service"] == "http://10.87.0.53:8080"
    calls = [
        c
        for c in control(cf, "GET", "/requests")["requests"]
        if c["path"].endswith(f"{tunnel_id}/configurations")
    ]
    gets = [c for c in calls if c["method"] == "GET"]
    puts = [c for c in calls if c["method"] == "PUT"]
    statuses = [c["status"] for c in gets]
    assert 429 in statuses, calls
    i = statuses.index(429)
    assert statuses[i + 1] == 200
    assert gets[i + 1]["time"] - gets[i]["time"] >= 1.8  # Retry-After: 2 honoured (not the 0.5 s backoff)
    assert [c["status"] for c in puts][-2:] == [503, 200]


def test_timeout_beyond_retry_budget_fails_clearly(cf, api, names):
    tunnel_id, path = relay_in_place(cf, api, names)
    control(
        cf, "POST", "/faults", {"path": path, "method": "GET", "mode": "hang", "count": 2, "hang_seconds": 6}
    )
    started = time.monotonic()
    failed = run_play(cf, "relay_tunnel.yml", relay_vars(names, cf_timeout=1, cf_retries=1), expect_rc=2)
    assert time.monotonic() - started < 60
    assert failed.tasks["Relay ingress"] == "failed"
    assert "no answer from the Cloudflare API within timeout=1.0s, 2 attempt(s) made" in failed.output
    assert f"GET /accounts/{cf.account}/cfd_tunnel/{tunnel_id}/configurations" in failed.output


# -- bad input: Cloudflare's code and message ------------------------------------------------------------
def single(cf, module, args, token=None):
    auth = {"api_base_url": cf.base_url, "account_id": cf.account, "ca_path": cf.ca}
    return run_play(
        cf, "single_task.yml", {"cf_module": module, "cf_args": dict(auth, **args)}, token=token, expect_rc=2
    )


def test_invalid_token_reports_cloudflare_code(cf, names):
    failed = single(cf, "cloudflare_tunnel", {"name": names.tunnel}, token="x" * 40)
    assert "Cloudflare error 10000: Authentication error (HTTP 403" in failed.output
    malformed = single(cf, "cloudflare_tunnel", {"name": names.tunnel}, token="not a token")
    assert "Cloudflare error 6003: Invalid request headers" in malformed.output
    assert "x" * 40 not in failed.output


def test_unknown_zone(cf, names):
    by_name = single(
        cf,
        "cloudflare_dns_record",
        {"zone": "nope.invalid", "name": "a", "content": "192.0.2.1", "type": "A"},
    )
    assert "zone 'nope.invalid' not found" in by_name.output
    by_id = single(
        cf,
        "cloudflare_dns_record",
        {"zone": "f" * 32, "name": names.hostname, "content": "192.0.2.1", "type": "A"},
    )
    assert re.search(r"Cloudflare error 7003: Could not route to /[^ ]*zones/f{32}/dns_records", by_id.output)


def test_malformed_hostname(cf, names):
    failed = single(
        cf,
        "cloudflare_dns_record",
        {"zone": cf.zone, "name": f"bad!{names.hostname}", "content": "192.0.2.1", "type": "A"},
    )
    assert "Cloudflare error 9000: DNS name is invalid." in failed.output


def test_cname_collision_with_an_a_record_reports_81053(cf, api, names):
    zone_id, _ = api.resolve_zone(cf.zone)
    api.request(
        "post",
        f"/zones/{zone_id}/dns_records",
        body={"type": "A", "name": names.hostname, "content": "192.0.2.7", "ttl": 1},
    )
    failed = single(
        cf,
        "cloudflare_dns_record",
        {"zone": cf.zone, "name": names.hostname, "content": "target.example.com", "type": "CNAME"},
    )
    assert "Cloudflare error 81053" in failed.output


def test_ingress_rejected_before_any_api_call(cf, names):
    failed = single(
        cf,
        "cloudflare_tunnel_ingress",
        {
            "tunnel_id": str(uuid.uuid4()),
            "rules": [{"service": "http://a:1"}, {"hostname": "b.lab.test", "service": "http://b:1"}],
        },
    )
    assert "rules[0] matches every hostname" in failed.output


# -- partial failure --------------------------------------------------------------------------------------
def descendants(pid):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid):
    """SIGKILL ansible-playbook and everything under it: its workers call setsid(), so a process-group
    kill would leave the running module alive to finish its API call."""
    for victim in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def test_killed_between_tunnel_and_dns_then_rerun_leaves_one_of_each(cf, api, names):
    rule = {"path": "/zones/*/dns_records", "method": "POST", "mode": "hang", "count": 1, "hang_seconds": 20}
    proc = subprocess.Popen(
        play_cmd(cf, "relay_tunnel.yml", relay_vars(names), []),
        cwd=REPO,
        env=play_env(cf.token),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("TASK [Relay ingress]"):
                control(cf, "POST", "/faults", rule)  # the DNS create will hang: the kill lands inside it
            if line.startswith("TASK [Relay DNS record]"):
                break
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            r["path"] == rule["path"] and r["method"] == "POST"
            for r in control(cf, "GET", "/faults")["faults"]
        ):
            time.sleep(0.2)
    finally:
        kill_tree(proc.pid)
        proc.wait()
    assert len(api.find_tunnels(names.tunnel)) == 1
    assert records_named(api, cf, names.hostname) == []  # the play died before the record existed

    rerun = run_play(cf, "relay_tunnel.yml", relay_vars(names))
    assert rerun.tasks["Relay tunnel"] == "ok"  # adopted, not duplicated
    assert rerun.tasks["Relay DNS record"] == "changed"
    tunnel = only_tunnel(api, names.tunnel)
    (record,) = records_named(api, cf, names.hostname)
    assert record["content"] == f"{tunnel['id']}.cfargotunnel.com"


# -- check mode of a first run, DNS updates, ingress by tunnel name ---------------------------------------
def test_check_mode_first_run_reports_everything_and_creates_nothing(cf, api, names):
    checked = run_play(cf, "relay_tunnel.yml", relay_vars(names), "--check", "--diff")
    assert {k: v for k, v in checked.tasks.items() if v != "skipping"} == {
        "Relay tunnel": "changed",
        "Relay ingress": "changed",
        "Relay DNS record": "changed",
    }
    assert api.find_tunnels(names.tunnel) == []
    assert records_named(api, cf, names.hostname) == []


def test_dns_record_overwrite_and_settings(cf, api, names):
    base = {"zone": cf.zone, "name": names.hostname, "type": "A", "ttl": 300}
    auth = {"api_base_url": cf.base_url, "account_id": cf.account, "ca_path": cf.ca}

    def dns(expect_rc=0, *flags, **args):
        variables = {"cf_module": "cloudflare_dns_record", "cf_args": {**auth, **base, **args}}
        return run_play(cf, "single_task.yml", variables, *flags, expect_rc=expect_rc).tasks[
            "DNS record call"
        ]

    assert dns(content="192.0.2.10") == "changed"
    assert dns(content="192.0.2.10") == "ok"
    assert dns(0, "--check", content="192.0.2.10", ttl=600) == "changed"
    assert records_named(api, cf, names.hostname)[0]["ttl"] == 300
    assert dns(content="192.0.2.10", ttl=600, comment="bench") == "changed"
    assert dns(2, content="192.0.2.11") == "failed"  # other content without overwrite
    assert dns(content="192.0.2.11", overwrite=True) == "changed"
    (record,) = records_named(api, cf, names.hostname)
    assert (record["content"], record["ttl"], record["comment"]) == ("192.0.2.11", 300, "bench")
    assert dns(state="absent", content="192.0.2.11") == "changed"
    assert records_named(api, cf, names.hostname) == []


def test_ingress_by_tunnel_name(cf, api, names):
    tunnel_id, _ = relay_in_place(cf, api, names)
    args = {
        "api_base_url": cf.base_url,
        "account_id": cf.account,
        "ca_path": cf.ca,
        "tunnel_name": names.tunnel,
        "rules": [{"hostname": names.hostname, "path": "^/v1/", "service": "http://10.87.0.60:8080"}],
        "catch_all": "http_status:503",
    }
    variables = {"cf_module": "cloudflare_tunnel_ingress", "cf_args": args}
    assert run_play(cf, "single_task.yml", variables).tasks["Ingress call"] == "changed"
    assert run_play(cf, "single_task.yml", variables).tasks["Ingress call"] == "ok"
    ingress = config_of(api, tunnel_id)["config"]["ingress"]
    assert [(r.get("path") or None, r["service"]) for r in ingress] == [
        ("^/v1/", "http://10.87.0.60:8080"),
        (None, "http_status:503"),
    ]
