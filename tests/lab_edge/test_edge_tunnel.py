"""The lab edge and the real cloudflared 2026.8.2 on the host: registration over Cap'n Proto RPC,
readiness, the emulator's connections, refusals, config push, routing by Host, ingress, errors, balancing."""

import asyncio
import json
import re
import socket

import aiohttp
import pytest

from lab.edge import tunnel

from .support import Cloudflared, client_session, get, ingress

HOST = "app.lab.test"


async def connected(env, origin, *args, config=None, ha=2):
    tunnel_id, token = await env.api.create_tunnel("edge-test")
    await env.api.put_config(tunnel_id, config or ingress(origin.port, HOST))
    await env.api.route(HOST, tunnel_id)
    cloudflared = await Cloudflared.start(env.connector_port, env.ca_path, *args, token=token, connections=ha)
    await cloudflared.wait_for(r"INF Registered tunnel connection connIndex=\d", count=ha)
    return tunnel_id, token, cloudflared


async def metric(cloudflared: Cloudflared, name: str) -> float:
    url = await cloudflared.metrics_url() + "/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"no {name} in cloudflared's metrics"
    return float(found.group(1))


async def test_registers_reports_ready_and_shows_in_connections(edge, origin):
    tunnel_id, _, cloudflared = await connected(edge, origin)
    try:
        (client,) = await edge.api.connections(tunnel_id)
        assert (
            len(client["conns"]) == 2 and client["version"] == "2026.8.2" and client["arch"] == "linux_amd64"
        )
        assert {c["colo_name"] for c in client["conns"]} == {"lab01"}
        assert {c["origin_ip"] for c in client["conns"]} == {"127.0.0.1"}
        assert "serialized_headers" in client["features"]
        line = (await cloudflared.wait_for(r"Generated Connector ID"))[0]
        assert client["id"] == line.rsplit(" ", 1)[-1]
        await cloudflared.wait_for(r"INF Updated to new configuration .*version=1")
        metrics = await cloudflared.metrics_url()
        async with aiohttp.ClientSession() as http, http.get(metrics + "/ready") as resp:
            body = json.loads(await resp.text())  # JSON, served as text/plain by cloudflared
            assert resp.status == 200
            assert body["status"] == 200 and body["readyConnections"] == 2
            assert body["connectorId"] == client["id"]
        assert await metric(cloudflared, "cloudflared_tunnel_ha_connections") == 2
        assert await metric(cloudflared, "cloudflared_orchestration_config_version") == 1
    finally:
        assert await cloudflared.stop() == 0
    assert "Unregistered tunnel connection" in cloudflared.log, cloudflared.log[-3000:]
    assert await edge.api.connections(tunnel_id) == []


async def test_routes_by_host_with_cloudflare_headers_and_applies_the_catch_all(edge, origin):
    tunnel_id, _, cloudflared = await connected(edge, origin, ha=1)
    try:
        async with client_session(edge.ca_path) as http:
            async with http.get(
                edge.client_url + "/hello?x=1", headers={"Host": HOST, "X-Forwarded-For": "203.0.113.9"}
            ) as resp:
                assert resp.status == 200
                assert await resp.text() == f"hello from origin path=/hello?x=1 host={HOST}"
                assert resp.headers["Server"] == "cloudflare" and resp.headers["CF-RAY"].endswith("-LAB")
                assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"  # the origin's, decoded
            seen = origin.seen_headers[-1]
            assert seen["X-Forwarded-Proto"] == "https" and seen["Cf-Connecting-Ip"] == "127.0.0.1"
            assert seen["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
            assert seen["Cf-Visitor"] == '{"scheme":"https"}' and seen["Cf-Ray"].endswith("-LAB")
            assert "Cf-Warp-Tag-Id" in seen  # added by cloudflared itself
            # Routed to the tunnel (a CNAME exists) but no ingress rule for it: the catch-all's 404.
            await edge.api.route("other.lab.test", tunnel_id)
            async with http.get(edge.client_url + "/", headers={"Host": "other.lab.test"}) as resp:
                assert resp.status == 404
            async with http.post(
                edge.client_url + "/echo", data=b"x" * 300_000, headers={"Host": HOST}
            ) as resp:
                assert resp.status == 200 and len(await resp.read()) == 300_000
                assert resp.headers["X-Echo-Length"] == "300000"
    finally:
        await cloudflared.stop()


async def test_chunked_request_bodies_head_and_no_content_pass_through(edge, origin):
    _, _, cloudflared = await connected(edge, origin, ha=1)

    async def parts():
        for i in range(5):
            yield f"part{i};".encode()
            await asyncio.sleep(0.01)

    try:
        async with client_session(edge.ca_path) as http:
            async with http.post(edge.client_url + "/echo", data=parts(), headers={"Host": HOST}) as resp:
                assert await resp.text() == "part0;part1;part2;part3;part4;"
            async with http.head(edge.client_url + "/hello", headers={"Host": HOST}) as resp:
                assert resp.status == 200 and await resp.read() == b""
            async with http.get(edge.client_url + "/status/204", headers={"Host": HOST}) as resp:
                assert resp.status == 204 and await resp.read() == b""
            async with http.post(
                edge.client_url + "/echo", data=b"y" * 5000, headers={"Host": HOST}, expect100=True
            ) as resp:
                assert resp.status == 200 and await resp.read() == b"y" * 5000
    finally:
        await cloudflared.stop()


async def test_unrouted_hostname_and_tunnel_without_connector_get_cloudflare_errors(edge):
    status, page, _ = await get(edge, "/", "nowhere.lab.test")
    assert status == 530 and "Error 1016" in page
    tunnel_id, _ = await edge.api.create_tunnel("no-connector")
    await edge.api.route(HOST, tunnel_id)
    status, page, headers = await get(edge, "/", HOST)
    assert status == 530 and "Error 1033" in page and "Cloudflare Tunnel error" in page
    assert headers["Content-Type"].startswith("text/html")
    status, text, _ = await get(edge, "/", HOST, Accept="application/json")
    body = json.loads(text)
    assert status == 530 and body["error_code"] == 1033 and body["ray_id"].endswith("-LAB")


async def test_config_push_is_applied_by_version(edge, origin):
    tunnel_id, _, cloudflared = await connected(edge, origin, ha=1)
    try:
        await edge.api.put_config(tunnel_id, {"ingress": [{"service": "http_status:503"}]})
        await cloudflared.wait_for(r"Updated to new configuration .*version=2")
        assert (await get(edge, "/hello", HOST))[0] == 503
        assert await metric(cloudflared, "cloudflared_orchestration_config_version") == 2
    finally:
        await cloudflared.stop()


async def test_wrong_secret_is_refused_and_retried(edge, origin):
    tunnel_id, token = await edge.api.create_tunnel("rotated")
    await edge.api.rotate(tunnel_id)  # the token now carries the old secret
    cloudflared = await Cloudflared.start(edge.connector_port, edge.ca_path, token=token)
    try:
        await cloudflared.wait_for(
            rf'Register tunnel error from server side error="{tunnel.BAD_SECRET}"', within=20, count=2
        )
        assert cloudflared.proc.returncode is None  # "Unauthorized" causes are retried, never fatal
        assert await edge.api.connections(tunnel_id) == []
        assert token not in cloudflared.log
    finally:
        await cloudflared.stop()


async def test_deleted_tunnel_makes_cloudflared_exit_1_with_the_cause(edge):
    tunnel_id, token = await edge.api.create_tunnel("deleted")
    await edge.api.delete_tunnel(tunnel_id)
    cloudflared = await Cloudflared.start(edge.connector_port, edge.ca_path, token=token)
    assert await asyncio.wait_for(cloudflared.proc.wait(), 20) == 1
    await cloudflared.stop()
    assert f'initial tunnel connection failed error="{tunnel.DELETED}"' in cloudflared.log


async def test_balances_round_robin_across_connectors(edge, origin):
    tunnel_id, token, first = await connected(edge, origin, ha=1)
    second = await Cloudflared.start(edge.connector_port, edge.ca_path, token=token)
    await second.wait_for(r"Registered tunnel connection")
    try:
        async with client_session(edge.ca_path) as http:
            for _ in range(6):
                async with http.get(edge.client_url + "/hello", headers={"Host": HOST}) as resp:
                    assert resp.status == 200
        counts = [await metric(c, "cloudflared_tunnel_total_requests") for c in (first, second)]
        assert counts == [3, 3]
        assert len(await edge.api.connections(tunnel_id)) == 2  # two connectors (clients)
    finally:
        await first.stop()
        await second.stop()


async def test_origin_down_gives_502(edge, origin):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    _, _, cloudflared = await connected(edge, origin, config=ingress(dead_port, HOST), ha=1)
    try:
        status, page, _ = await get(edge, "/", HOST)
        assert status == 502 and "Bad gateway" in page
        await cloudflared.wait_for(r"ERR .*originService=http://127.0.0.1")
    finally:
        await cloudflared.stop()


async def test_sd_notify_ready_once_connected(edge, origin, tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    _, _, cloudflared = await connected(edge, origin, ha=1)
    try:
        message = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(notify, 64), 5)
        assert message == b"READY=1"
    finally:
        await cloudflared.stop()
        notify.close()


@pytest.fixture(autouse=True)
def _notify_socket(monkeypatch, tmp_path, request):
    # Only the sd_notify test gets a NOTIFY_SOCKET; the others must not inherit one from the host.
    if request.node.name == "test_sd_notify_ready_once_connected":
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    else:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
