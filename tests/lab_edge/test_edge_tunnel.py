"""Edge + stand-in on the host: registration, readiness, routing by Host, ingress, errors, balancing."""

import asyncio
import json
import socket

import aiohttp
import pytest

from lab.cloudflared_standin import cloudflared

from .support import StandIn, client_session, get, ingress

HOST = "app.lab.test"


async def connected_standin(env, origin, *args, config=None, ha=2):
    tunnel_id, token = await env.api.create_tunnel("edge-test")
    await env.api.put_config(tunnel_id, config or ingress(origin.port, HOST))
    await env.api.route(HOST, tunnel_id)
    standin = await StandIn.start(
        env.connector_port, env.ca_path, "--ha-connections", str(ha), *args, token=token
    )
    await standin.wait_for(r"INF Registered tunnel connection connIndex=\d", count=ha)
    return tunnel_id, token, standin


async def test_registers_reports_ready_and_shows_in_connections(edge, origin):
    tunnel_id, _, standin = await connected_standin(edge, origin)
    try:
        (client,) = await edge.api.connections(tunnel_id)
        assert len(client["conns"]) == 2 and client["version"].startswith("2025.")
        assert {c["colo_name"] for c in client["conns"]} == {"lab01"} and client["config_version"] == 1
        await standin.wait_for(r"INF Updated to new configuration config=.*version=1")
        metrics = await standin.metrics_url()
        async with aiohttp.ClientSession() as http:
            async with http.get(metrics + "/ready") as resp:
                body = await resp.json()
                assert resp.status == 200
                assert body["status"] == 200 and body["readyConnections"] == 2
                assert body["connectorId"] == client["id"]
            async with http.get(metrics + "/healthcheck") as resp:
                assert resp.status == 200 and await resp.text() == "OK\n"
            async with http.get(metrics + "/metrics") as resp:
                text = await resp.text()
                assert "cloudflared_tunnel_ha_connections 2" in text
                assert 'build_info{goversion="python' in text
    finally:
        assert await standin.stop() == 0
    assert await edge.api.connections(tunnel_id) == []


async def test_routes_by_host_to_the_origin_and_applies_the_catch_all(edge, origin):
    tunnel_id, _, standin = await connected_standin(edge, origin)
    try:
        async with client_session(edge.ca_path) as http:
            async with http.get(edge.client_url + "/hello?x=1", headers={"Host": HOST}) as resp:
                assert resp.status == 200
                assert await resp.text() == f"hello from origin path=/hello?x=1 host={HOST}"
                assert resp.headers["Server"] == "cloudflare" and resp.headers["CF-RAY"].endswith("-LAB")
            seen = origin.seen_headers[-1]
            assert seen["X-Forwarded-Proto"] == "https" and seen["CF-Connecting-IP"] == "127.0.0.1"
            # Routed to the tunnel (a CNAME exists) but no ingress rule for it: the catch-all's 404.
            await edge.api.route("other.lab.test", tunnel_id)
            async with http.get(edge.client_url + "/", headers={"Host": "other.lab.test"}) as resp:
                assert resp.status == 404
            async with http.post(
                edge.client_url + "/echo", data=b"x" * 300_000, headers={"Host": HOST}
            ) as resp:
                assert resp.status == 200 and len(await resp.read()) == 300_000
    finally:
        await standin.stop()


async def test_chunked_request_bodies_stream_to_the_origin(edge, origin):
    _, _, standin = await connected_standin(edge, origin)

    async def parts():
        for i in range(5):
            yield f"part{i};".encode()
            await asyncio.sleep(0.01)

    try:
        async with (
            client_session(edge.ca_path) as http,
            http.post(edge.client_url + "/echo", data=parts(), headers={"Host": HOST}) as resp,
        ):
            assert await resp.text() == "part0;part1;part2;part3;part4;"
    finally:
        await standin.stop()


async def test_head_no_content_and_expect_continue_pass_through(edge, origin):
    _, _, standin = await connected_standin(edge, origin, ha=1)
    try:
        async with client_session(edge.ca_path) as http:
            async with http.head(edge.client_url + "/hello", headers={"Host": HOST}) as resp:
                assert resp.status == 200 and await resp.read() == b""
                assert int(resp.headers["Content-Length"]) > 0
            async with http.get(edge.client_url + "/status/204", headers={"Host": HOST}) as resp:
                assert resp.status == 204 and await resp.read() == b""
            async with http.post(
                edge.client_url + "/echo", data=b"y" * 5000, headers={"Host": HOST}, expect100=True
            ) as resp:
                assert resp.status == 200 and await resp.read() == b"y" * 5000
    finally:
        await standin.stop()


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


async def test_ingress_wildcards_paths_status_and_hello_world(edge, origin):
    config = {
        "ingress": [
            {"hostname": HOST, "path": "^/teapot", "service": "http_status:418"},
            {"hostname": "*.wild.lab.test", "service": f"http://127.0.0.1:{origin.port}"},
            {"hostname": "hello.lab.test", "service": "hello_world"},
            {"hostname": HOST, "service": f"http://127.0.0.1:{origin.port}"},
            {"service": "http_status:404"},
        ]
    }
    tunnel_id, _, standin = await connected_standin(edge, origin, config=config)
    for name in ("a.wild.lab.test", "wild.lab.test", "hello.lab.test"):
        await edge.api.route(name, tunnel_id)
    try:
        assert (await get(edge, "/teapot/x", HOST))[0] == 418
        assert (await get(edge, "/hello", HOST))[0] == 200
        assert (await get(edge, "/hello", "a.wild.lab.test"))[0] == 200
        assert (await get(edge, "/", "wild.lab.test"))[0] == 404  # "*.x" does not match "x" itself
        code, text, _ = await get(edge, "/", "hello.lab.test")
        assert code == 200 and "stand-in" in text
    finally:
        await standin.stop()


async def test_config_updates_reach_the_connector_by_version(edge, origin):
    tunnel_id, _, standin = await connected_standin(edge, origin)
    try:
        await edge.api.put_config(tunnel_id, {"ingress": [{"service": "http_status:503"}]})
        await standin.wait_for(r"Updated to new configuration .*version=2")
        assert (await get(edge, "/hello", HOST))[0] == 503
    finally:
        await standin.stop()


async def test_balances_round_robin_across_connectors(edge, origin):
    tunnel_id, token, first = await connected_standin(edge, origin, ha=1)
    second = await StandIn.start(edge.connector_port, edge.ca_path, "--ha-connections", "1", token=token)
    await second.wait_for(r"Registered tunnel connection")
    try:
        async with client_session(edge.ca_path) as http:
            for _ in range(6):
                async with http.get(edge.client_url + "/hello", headers={"Host": HOST}) as resp:
                    assert resp.status == 200
        counts = []
        async with aiohttp.ClientSession() as http:
            for standin in (first, second):
                async with http.get(await standin.metrics_url() + "/metrics") as resp:
                    line = next(
                        x
                        for x in (await resp.text()).splitlines()
                        if x.startswith("cloudflared_tunnel_total")
                    )
                    counts.append(int(line.split()[1]))
        assert counts == [3, 3]
        assert len(await edge.api.connections(tunnel_id)) == 2  # two connectors (clients)
    finally:
        await first.stop()
        await second.stop()


async def test_origin_down_gives_502_and_a_clear_connector_log(edge, origin):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    _, _, standin = await connected_standin(edge, origin, config=ingress(dead_port, HOST))
    try:
        assert (await get(edge, "/", HOST))[0] == 502
        await standin.wait_for(r"ERR Unable to reach the origin service.*originService=http://127.0.0.1")
    finally:
        await standin.stop()


async def test_sd_notify_ready_once_connected(edge, origin, tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    _, _, standin = await connected_standin(edge, origin, ha=1)
    try:
        message = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(notify, 64), 5)
        assert message == b"READY=1"
    finally:
        await standin.stop()
        notify.close()


@pytest.fixture(autouse=True)
def _notify_socket(monkeypatch, tmp_path, request):
    # Only the sd_notify test gets a NOTIFY_SOCKET; the others must not inherit one from the host.
    if request.node.name == "test_sd_notify_ready_once_connected":
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    else:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)


def test_the_stand_in_refuses_a_configuration_without_catch_all_and_keeps_the_old_one():
    # The emulator already refuses such a PUT; the stand-in checks again, as cloudflared does.
    with pytest.raises(ValueError, match="last ingress rule must match all URLs"):
        cloudflared.compile_ingress({"ingress": [{"hostname": HOST, "service": "http://127.0.0.1:1"}]})


def test_wildcard_and_path_matching_follow_cloudflared():
    rules = cloudflared.compile_ingress(
        {
            "ingress": [
                {"hostname": "*.lab.test", "path": "^/api", "service": "http_status:201"},
                {"hostname": "*.lab.test", "service": "http_status:202"},
                {"service": "http_status:404"},
            ]
        }
    )
    pick = lambda host, path: next(r.status for r in rules if r.matches(host, path))  # noqa: E731
    assert pick("a.lab.test", "/api/x") == 201
    assert pick("A.b.Lab.Test", "/other") == 202
    assert pick("lab.test", "/api") == 404
