"""site.yml from nothing to an answered question, a second run that changes nothing, and destroy.yml,
all run as a user who never cloned the repository runs them: the collection is built, its tarball installed
into an empty path of a project of its own, and its playbooks called by FQCN (llm_relay.homelab.site,
llm_relay.homelab.destroy) with the lab inventory. The checkout's root site.yml is run by the other suites
(rotation, interrupted runs) and by `make demo`.

One deployment for site.lab.test (containers site-1 on pve1, site-2 on pve2), shared by the tests of this
module in order:
  - the first run builds two running containers, one tunnel with connectors, one proxied CNAME to it and
    a 0600 client artifact;
  - a user's question (`llm-relay ask --encrypt` with that artifact) is answered through the lab edge ->
    connector -> relay -> fake upstream, which saw the provider key the relay injected;
  - a second run reports changed=0 for every host;
  - destroy.yml refuses without confirm=yes, then leaves no tunnel, record, container or LXC directory.
Figures (wall times) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import uuid

import pytest
import requests
from collection_build import build, install
from deploy_state import harness, lxc_dirs

REPO, VENV_BIN, assert_ok, deployment = harness.REPO, harness.VENV_BIN, harness.assert_ok, harness.deployment

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

HOSTNAME, PREFIX, REPLICAS = "site.lab.test", "site-", 2
# Sent by the relay to the provider on every request of this deployment: finds our requests in the
# upstream's log, which other suites share.
MARKER = f"llm-relay site test {uuid.uuid4().hex[:8]}"


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
def site(lab, state, tmp_path_factory):
    dep = deployment(tmp_path_factory, HOSTNAME, PREFIX, REPLICAS)
    dep.project = tmp_path_factory.mktemp("user-project")
    install(build(tmp_path_factory.mktemp("build")), dep.project)
    extra = ("-e", json.dumps({"relay_providers": providers(lab)}))
    dep.site = lambda: dep.run("llm_relay.homelab.site", *extra)
    dep.destroy = lambda *a: dep.run("llm_relay.homelab.destroy", *extra, *a)
    # "From nothing": a crashed earlier session may have left this hostname's resources behind.
    before = state.snapshot(dep)
    if before.tunnels or before.records or before.containers:
        assert_ok(dep.destroy("-e", "confirm=yes"))
    started = time.monotonic()
    dep.first = dep.site()
    dep.first_seconds = time.monotonic() - started
    print(f"\nsite.yml for {HOSTNAME}, {REPLICAS} replicas, from nothing: {dep.first_seconds:.0f} s")
    try:
        yield dep
    finally:
        if state.snapshot(dep).containers or state.snapshot(dep).tunnels:
            dep.destroy("-e", "confirm=yes")


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


def upstream_requests(lab) -> list[dict]:
    answer = requests.get(lab.upstream.url + "/_lab/requests", verify=str(lab.ca_path), timeout=30)
    answer.raise_for_status()
    return answer.json()["requests"]


def test_user_question_is_answered_through_edge_connector_relay_and_upstream(lab, site):
    nonce = uuid.uuid4().hex
    env = {**os.environ, "LLM_RELAY_CLIENT_CONFIG": str(site.artifact)}
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    proc = subprocess.run(
        [str(VENV_BIN / "llm-relay"), "ask", "--encrypt", "--model", "lab/echo", f"site test {nonce}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
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


def test_second_run_changes_nothing(site):
    started = time.monotonic()
    second = site.site()
    print(f"\nsecond run: {time.monotonic() - started:.0f} s")
    assert_ok(second)
    assert set(second.recap) >= {"localhost", "site-1", "site-2"}
    assert second.changed_hosts == {}, second.output[-6000:]


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
    # A second destroy finds nothing to do and still succeeds.
    again = site.destroy("-e", "confirm=yes")
    assert_ok(again)
    assert again.changed_hosts == {}
