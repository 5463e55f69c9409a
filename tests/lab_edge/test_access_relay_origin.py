"""The relay behind the lab edge with Cloudflare Access: the edge's `Cf-Access-Jwt-Assertion` passes the
relay's `[access]` check, everything else is refused (server/access_jwt.py).

In-process emulator + edge on ephemeral ports (lab/edge/harness.py), the real cloudflared, and the relay
itself as the origin, fetching the team's certs from the edge as it would from Cloudflare
(`https://team.lab.test:<edge port>/cdn-cgi/access/certs`: `lab up` maps team.lab.test to 127.0.0.1)."""

import os
import socket

import aiohttp
import pytest
from llm_relay import tokens
from llm_relay.server.runner import RelayServer

from .support import Cloudflared, get, ingress
from .test_access_edge import protect, service_token

HOST = "relayguard.lab.test"
TEAM = "team.lab.test"


def _team_resolves() -> bool:
    try:
        return socket.gethostbyname(TEAM) == "127.0.0.1"
    except OSError:
        return False


def write_private(path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)


@pytest.fixture
async def relay_with_access(edge, tmp_path):
    """(relay server, client token, application): the relay's [access] names the edge's team domain (its
    port included, as the edge's `iss` has it) and the application's aud."""
    if not _team_resolves():
        pytest.skip(f"{TEAM} does not resolve to 127.0.0.1 (`python -m lab up` adds it to /etc/hosts)")
    token_id, client_id, secret = await service_token(edge, "relay-origin")
    app = await protect(edge, HOST, token_id)
    token = tokens.generate_token()
    write_private(tmp_path / "client-tokens", tokens.format_token_line("alice", token) + "\n")
    write_private(tmp_path / "provider-keys", "sk-unused\n")
    (tmp_path / "relay.toml").write_text(
        f"""
[server]
listen = "127.0.0.1:0"
metrics_listen = ""

[auth]
tokens_file = "client-tokens"

[providers.lab]
base_url = "http://127.0.0.1:9/api/v1"
keys_file = "provider-keys"

[access]
team_domain = "{TEAM}:{edge.edge.client_port}"
audiences = ["{app["aud"]}"]
ca_file = "{edge.ca_path}"
"""
    )
    server = RelayServer(tmp_path / "relay.toml")
    await server.start()
    try:
        yield server, token, {"CF-Access-Client-Id": client_id, "CF-Access-Client-Secret": secret}
    finally:
        await server.drain_and_close()


async def test_the_edge_assertion_passes_and_nothing_else_does(edge, relay_with_access):
    server, token, service = relay_with_access
    assert server.relay.state.access.fetch_results["ok"] == 1  # the team's certs, from the edge, at start
    tunnel_id, tunnel_token = await edge.api.create_tunnel("relay-origin")
    await edge.api.put_config(tunnel_id, ingress(server.port, HOST))
    await edge.api.route(HOST, tunnel_id)
    cloudflared = await Cloudflared.start(
        edge.connector_port, edge.ca_path, token=tunnel_token, connections=1
    )
    try:
        await cloudflared.wait_for(r"INF Registered tunnel connection connIndex=0")
        bearer = {"Authorization": f"Bearer {token}"}
        status, text, _ = await get(edge, "/v1/providers", HOST, **bearer, **service)
        assert status == 200 and '"relay_version"' in text
        status, _, headers = await get(edge, "/v1/providers", HOST, **bearer)  # no service token
        assert status == 403 and headers["Server"] == "cloudflare"  # refused at the edge
        # Straight to the relay (the LAN, a process beside it): no assertion, or a forged one.
        direct = f"http://127.0.0.1:{server.port}/v1/providers"
        async with aiohttp.ClientSession() as http:
            for extra, code in (({}, "missing_assertion"), ({"Cf-Access-Jwt-Assertion": "a.b.c"}, None)):
                async with http.get(direct, headers={**bearer, **extra}) as r:
                    error = (await r.json())["error"]
                    assert r.status == 403 and error["type"] == "access_denied"
                    assert code is None or error["code"] == code
        assert server.relay.metrics.access_refusals["missing_assertion"] == 1
    finally:
        await cloudflared.stop()
