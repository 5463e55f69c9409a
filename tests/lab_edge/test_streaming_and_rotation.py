"""Through the lab edge and the real cloudflared: SSE arrives as emitted; flow control bounds what the
edge holds for a slow client; secret rotation refuses only new connections with the old token; connection
deletion makes cloudflared reconnect; SIGTERM drains in-flight streams and fails no request."""

import asyncio
import time

from .support import Cloudflared, client_session, get, ingress

HOST = "stream.lab.test"


async def start(env, origin, *flags, token_file=None):
    tunnel_id, token = await env.api.create_tunnel("stream-test")
    await env.api.put_config(tunnel_id, ingress(origin.port, HOST))
    await env.api.route(HOST, tunnel_id)
    if token_file:
        token_file.write_text(token + "\n")
        cloudflared = await Cloudflared.start(
            env.connector_port,
            env.ca_path,
            *flags,
            run_args=["--token-file", str(token_file)],
            connections=2,
        )
    else:
        cloudflared = await Cloudflared.start(
            env.connector_port, env.ca_path, *flags, token=token, connections=2
        )
    await cloudflared.wait_for(r"Registered tunnel connection", count=2)
    return tunnel_id, token, cloudflared


async def test_sse_chunks_arrive_in_order_as_the_origin_emits_them(edge, origin):
    _, _, cloudflared = await start(edge, origin)
    try:
        async with client_session(edge.ca_path) as http:
            url = edge.client_url + "/sse?n=6&delay=0.3"
            async with http.get(url, headers={"Host": HOST}) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
                events, arrivals = [], []
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        events.append(line.decode().split(" t=")[0].strip())
                        arrivals.append(time.monotonic())
        assert events == [f"data: event {i}" for i in range(6)] + ["data: [DONE]"]
        # The first event reached the client before the origin produced the last one: nothing buffered.
        assert arrivals[0] < origin.emitted[-1]
        # And every event arrived well before the next was emitted (0.3 s apart at the origin).
        for i in range(5):
            assert arrivals[i] < origin.emitted[i + 1]
    finally:
        await cloudflared.stop()


async def test_a_slow_client_never_makes_the_edge_buffer_more_than_a_window(edge, origin):
    tunnel_id, _, cloudflared = await start(edge, origin)
    pools = edge.edge.connectors.pools
    peak = 0

    async def sample():
        nonlocal peak
        while True:
            queued = sum(
                len(payload)
                for conn in pools.get(tunnel_id, [])
                for stream in list(conn.streams.values())
                for _, payload, _ in list(stream.events._queue)
            )
            peak = max(peak, queued)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    try:
        async with client_session(edge.ca_path) as http:
            async with http.get(edge.client_url + "/big?mib=16", headers={"Host": HOST}) as resp:
                received = bytearray()
                while chunk := await resp.content.read(64 * 1024):
                    received += chunk
                    await asyncio.sleep(0.004)  # a slow reader (about 16 MB/s)
            assert received == (bytes(range(256)) * 256) * 256
            # Uploads larger than a window flow too (credit comes back as the origin reads).
            async with http.post(
                edge.client_url + "/echo", data=b"u" * (2 << 20), headers={"Host": HOST}
            ) as resp:
                assert await resp.read() == b"u" * (2 << 20)
    finally:
        sampler.cancel()
        await cloudflared.stop()
    # The edge credits cloudflared's DATA only once the visitor took it: at most the HTTP/2 stream window
    # (65,535 bytes, h2's default for the edge's side) waits in the edge, never the 16 MiB answer.
    assert 0 < peak <= 65535 + 16384


async def test_client_going_away_stops_the_origin_stream(edge, origin):
    _, _, cloudflared = await start(edge, origin)
    try:
        async with client_session(edge.ca_path) as http:
            resp = await http.get(edge.client_url + "/sse?n=100&delay=0.05", headers={"Host": HOST})
            await resp.content.readline()
            resp.close()
        await asyncio.wait_for(origin.disconnected.wait(), 10)
    finally:
        await cloudflared.stop()


async def test_rotated_secret_keeps_running_connectors_and_refuses_the_old_token(edge, origin, tmp_path):
    # Cloudflare (Tunnel tokens): "After rotating the token, cloudflared cannot establish new connections
    # with the old token. Existing connectors remain active until restarted."
    tunnel_id, _, cloudflared = await start(edge, origin, token_file=tmp_path / "token")
    try:
        await edge.api.rotate(tunnel_id)
        await asyncio.sleep(1)
        assert cloudflared.proc.returncode is None and "Connection terminated" not in cloudflared.log
        assert len(await edge.api.connections(tunnel_id)) == 1
        assert (await get(edge, "/hello", HOST))[0] == 200
        # A second connector with the old token is refused (and keeps retrying: "Unauthorized" causes are
        # retried by cloudflared with back-off), with cloudflared's log line.
        second = await Cloudflared.start(
            edge.connector_port, edge.ca_path, run_args=["--token-file", str(tmp_path / "token")]
        )
        await second.wait_for(
            'ERR Register tunnel error from server side error="Unauthorized: Invalid tunnel secret"',
            within=20,
        )
        assert second.proc.returncode is None
        assert await second.stop() == 0
        assert (tmp_path / "token").read_text().strip() not in second.log
        assert len(await edge.api.connections(tunnel_id)) == 1
    finally:
        assert await cloudflared.stop() == 0
    # Restarted, the running connector meets the same refusal: nothing serves the hostname any more.
    assert await edge.api.connections(tunnel_id) == []
    assert (await get(edge, "/hello", HOST))[0] == 530


async def test_a_connector_stopping_gracefully_fails_no_request(edge, origin):
    """SIGTERM: GOAWAY, the edge routes new requests to the other connector, running streams finish."""
    tunnel_id, token = await edge.api.create_tunnel("drain-test")
    await edge.api.put_config(tunnel_id, ingress(origin.port, HOST))
    await edge.api.route(HOST, tunnel_id)
    # A grace period longer than the streams: only a connector that still gets new requests after its
    # GOAWAY would reach it and cut what it is serving.
    first, second = [
        await Cloudflared.start(edge.connector_port, edge.ca_path, *flags, token=token, connections=2)
        for flags in (["--grace-period", "4s"], [])
    ]
    try:
        for cloudflared in (first, second):
            await cloudflared.wait_for(r"Registered tunnel connection", count=2)
        line = (await second.wait_for(r"Generated Connector ID"))[0]
        second_id = line.rsplit(" ", 1)[-1]
        async with client_session(edge.ca_path) as http:

            async def stream() -> list[bytes]:
                async with http.get(edge.client_url + "/sse?n=8&delay=0.2", headers={"Host": HOST}) as r:
                    assert r.status == 200
                    return [line async for line in r.content if line.startswith(b"data: ")]

            async def hellos() -> list[int]:
                statuses = []
                while first.proc.returncode is None or len(statuses) < 5:
                    async with http.get(edge.client_url + "/hello", headers={"Host": HOST}) as r:
                        await r.read()
                        statuses.append(r.status)
                return statuses

            streams = [asyncio.create_task(stream()) for _ in range(4)]  # on both connectors
            await asyncio.sleep(0.3)
            started = time.monotonic()
            first.proc.terminate()
            workers = [asyncio.create_task(hellos()) for _ in range(4)]
            # Once the edge has read the GOAWAY it picks only the other connector's connections.
            await first.wait_for("Initiating graceful shutdown")
            await asyncio.sleep(0.3)
            picked = {edge.edge.connectors.pick(tunnel_id).info["client_id"] for _ in range(20)}
            assert picked == {second_id}
            statuses = [status for worker in workers for status in await worker]
            results = await asyncio.gather(*streams)
        assert await first.stop() == 0
        assert set(statuses) == {200}, statuses
        assert all(len(events) == 9 for events in results)  # 8 events and [DONE], none cut
        # It stopped as soon as its own streams were done, not at the end of the grace period.
        assert time.monotonic() - started < 4
        assert "Initiating graceful shutdown" in first.log
    finally:
        for cloudflared in (first, second):
            await cloudflared.stop()


async def test_deleted_connections_make_the_connector_reconnect_with_its_valid_token(edge, origin):
    tunnel_id, _, cloudflared = await start(edge, origin)
    try:
        await edge.api.delete_connections(tunnel_id)
        await cloudflared.wait_for(r"ERR Connection terminated", count=2)
        # cloudflared's reconnect back-off after a lost connection is random, up to about 20 s.
        await cloudflared.wait_for(r"Registered tunnel connection", count=4, within=45)
        assert (await get(edge, "/hello", HOST))[0] == 200
    finally:
        await cloudflared.stop()


async def test_sigterm_drains_an_in_flight_stream_then_exits_zero(edge, origin):
    _, _, cloudflared = await start(edge, origin)
    try:
        async with client_session(edge.ca_path) as http:
            url = edge.client_url + "/sse?n=10&delay=0.2"
            async with http.get(url, headers={"Host": HOST}) as resp:
                first = await resp.content.readline()
                started = time.monotonic()
                cloudflared.proc.terminate()
                rest = [line async for line in resp.content if line.startswith(b"data: ")]
        assert first.startswith(b"data: event 0") and len(rest) == 10  # events 1-9 and [DONE]
        # (not stop(): a second SIGTERM would end cloudflared's graceful shutdown at once)
        assert await asyncio.wait_for(cloudflared.proc.wait(), 10) == 0
        # It exited once the stream was done (the edge closes a drained connection), not after the
        # 30 s default grace period.
        assert time.monotonic() - started < 10
        assert "Initiating graceful shutdown" in cloudflared.log
    finally:
        await cloudflared.stop()
