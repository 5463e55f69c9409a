"""The client against the lab's real edge enforcing Cloudflare Access: an Access application and service token
made through the Cloudflare emulator, the real cloudflared carrying the tunnel to the real relay.

In-process emulator and edge on ephemeral ports (lab/edge/harness.py, as tests/lab_edge does): nothing of
the shared lab is used, so no lock. The client runs in a worker thread (it is synchronous; the edge serves
from this test's event loop).
"""

from __future__ import annotations

import asyncio

import pytest
from llm_relay.client.config import Profile
from llm_relay.client.doctor import run_checks
from llm_relay.client.factory import openai_client

from lab.edge.harness import ACCOUNT, Cloudflared, edge_harness

HOST = "relay-access.lab.test"
BASE = f"/accounts/{ACCOUNT}/access"


async def _guarded_relay(env, relay_port: int) -> tuple[Cloudflared, str, str]:
    """Tunnel HOST to the relay behind a Service Auth application; (connector, client id, secret)."""
    token = await env.api.call("POST", f"{BASE}/service_tokens", json={"name": "client-access"})
    include = [{"service_token": {"token_id": token["id"]}}]
    body = {"name": "client-access", "decision": "non_identity", "include": include}
    policy = await env.api.call("POST", f"{BASE}/policies", json=body)
    app = {"type": "self_hosted", "domain": HOST, "policies": [policy["id"]]}
    await env.api.call("POST", f"{BASE}/apps", json=app)
    tunnel_id, tunnel_token = await env.api.create_tunnel("client-access")
    rules = [{"hostname": HOST, "service": f"http://127.0.0.1:{relay_port}"}, {"service": "http_status:404"}]
    await env.api.put_config(tunnel_id, {"ingress": rules})
    await env.api.route(HOST, tunnel_id)
    connector = await Cloudflared.start(env.connector_port, env.ca_path, token=tunnel_token, connections=1)
    await connector.wait_for(r"INF Registered tunnel connection connIndex=0")
    return connector, token["client_id"], token["client_secret"]


@pytest.mark.slow
async def test_the_real_lab_edge_admits_the_client_with_its_token_and_doctor_explains_without(
    tmp_path, relay, keys
):
    async with edge_harness(tmp_path) as env:
        connector, client_id, secret = await _guarded_relay(env, relay.port)
        try:
            base = Profile(
                url=f"https://{HOST}",
                connect_to=f"127.0.0.1:{env.edge.client_port}",
                ca_bundle=str(env.ca_path),
                token=keys["token"],
                fernet_key=keys["fernet_key"],
                proxy="",
                timeout=30,
            )
            reached = len(relay.settled_requests())
            refused = await asyncio.to_thread(run_checks, base)
            access = {c.name: c for c in refused}["access"]
            assert (access.status, access.code) == ("fail", "access_token_missing"), access
            assert len(relay.settled_requests()) == reached  # the edge kept it from the relay

            guarded = base.with_overrides(access_client_id=client_id, access_client_secret=secret)
            checks = await asyncio.to_thread(run_checks, guarded)
            failed = [c for c in checks if c.failed]
            assert not failed, failed
            assert {c.name: c.status for c in checks}["access"] == "ok"

            def ask() -> str:
                client = openai_client(guarded, max_retries=0)  # encrypting: the token outside the envelope
                reply = client.chat.completions.create(
                    model="lab/echo", messages=[{"role": "user", "content": "through Access"}]
                )
                return reply.choices[0].message.content or ""

            assert await asyncio.to_thread(ask)
            assert len(relay.settled_requests()) > reached
        finally:
            await connector.stop()
