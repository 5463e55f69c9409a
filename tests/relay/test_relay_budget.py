"""The memory budget and the strictness of issue 25, on an in-process connection with a recording
transport (exact byte counts) and on a relay in-process: bodies only where they are needed, framing
bounded and counted, trailers never headers, nginx-strict framing, the method allow-list, the process
and per-connection budgets, the write-progress timeout, envelopes refused from their first bytes."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import make_relay_dir  # at import time: later, `conftest` may name another suite's
from llm_relay import envelope, envelope_v2
from llm_relay.server.budget import MemoryBudget
from llm_relay.server.config import ConfigError, load_settings
from llm_relay.server.forward import Outbound
from llm_relay.server.http11 import MAX_FRAMING, SLICE, Response
from relay_support import bearer, raw_exchange, status_of
from test_relay_limits import connection

HOST = b"Host: x"


def head(first: bytes, *fields: bytes) -> bytes:
    return first + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: identity, chunked"), 501),
        (head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: gzip"), 501),
        (head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400),
        (head(b"POST / HTTP/1.0", HOST, b"Transfer-Encoding: chunked"), 400),
        (head(b"GET / HTTP/1.1"), 400),  # no Host
        (head(b"GET / HTTP/1.1", HOST, HOST), 400),  # two
        (head(b"GET gopher://x/ HTTP/1.1", HOST), 400),
        (head(b"TRACE / HTTP/1.1", HOST), 405),
        (head(b"PROPFIND / HTTP/1.1", HOST), 405),
        (head(b"CONNECT x:443 HTTP/1.1", HOST), 405),
    ],
)
async def test_framing_as_strict_as_nginx_and_methods_allow_listed(raw, status):
    conn, transport = connection()
    conn.data_received(raw + b"0\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 %d " % status), bytes(transport.written[:200])


async def test_http10_without_host_and_an_http_url_target_are_accepted():
    conn, transport = connection()
    conn.data_received(b"GET /a HTTP/1.0\r\n\r\n")
    await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    conn, transport = connection()
    conn.data_received(head(b"GET http://x/a HTTP/1.1", HOST))
    await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 200 ")


async def test_a_never_ending_chunk_extension_is_cut_after_16k():
    conn, transport = connection()
    conn.data_received(head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked") + b"1;e=")
    fed = 0
    while not transport.written and fed < 1 << 20:
        conn.data_received(b"a" * 4096)
        fed += 4096
    assert transport.written.startswith(b"HTTP/1.1 400 ") and b"bad_chunk" in transport.written
    assert fed <= MAX_FRAMING + 2 * SLICE


async def test_trailers_never_become_headers_and_are_bounded():
    seen = []

    async def handler(request):
        seen.append(dict((n.lower(), v) for n, v in request.headers.items()))
        return Response(200, [], b"ok")

    conn, transport = connection(handler)
    body = b"2\r\nxx\r\n0\r\nOpenAI-Organization: org-x\r\nContent-Type: text/evil\r\n\r\n"
    conn.data_received(
        head(b"POST / HTTP/1.1", HOST, b"Content-Type: application/json", b"Transfer-Encoding: chunked")
        + body
    )
    await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    assert "openai-organization" not in seen[0] and seen[0]["content-type"] == "application/json"
    conn, transport = connection(handler)
    conn.data_received(head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked") + b"0\r\n")
    fed = 0
    while not transport.written and fed < 1 << 20:
        conn.data_received(b"X-T: " + b"v" * 1000 + b"\r\n")
        fed += 1007
    assert transport.written.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 "))
    assert fed <= MAX_FRAMING + 2 * SLICE


async def test_tiny_chunks_are_one_buffer_and_their_framing_counts_against_the_cap():
    bodies = []

    async def handler(request):
        bodies.append(request.body)
        return Response(200, [], b"ok")

    conn, transport = connection(handler)
    conn.data_received(head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked"))
    conn.data_received(b"2\r\nxx\r\n" * 1000)
    assert isinstance(conn.body, bytearray) and len(conn.body) == 2000
    conn.data_received(b"0\r\n\r\n")
    await asyncio.sleep(0)
    assert bodies == [b"xx" * 1000]
    # 2-byte chunks: framing 2.5x the data, refused once it outweighs the body by MAX_FRAMING.
    conn, transport = connection(handler)
    conn.data_received(head(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked"))
    fed = 0
    while not transport.written and fed < 8 << 20:
        conn.data_received(b"2\r\nxx\r\n" * 1000)
        fed += 7000
    assert transport.written.startswith(b"HTTP/1.1 400 ") and b"framing outweighs" in transport.written
    assert fed <= 4 * (MAX_FRAMING + SLICE) and conn.body_size == 0


async def test_process_budget_spent_is_503_with_retry_after_and_bodiless_requests_still_served():
    budget = MemoryBudget(64 * 1024)
    conn, transport = connection(budget=budget)
    conn.data_received(head(b"POST / HTTP/1.1", HOST, b"Content-Length: 100000") + b"x" * 100000)
    for _ in range(5):
        await asyncio.sleep(0)  # the rest of the read is parsed after a quantum (fairness)
    assert transport.written.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in transport.written
    assert budget.used == 0  # what it had charged was given back with the connection
    conn.connection_lost(None)
    assert budget.used == 0
    hold = MemoryBudget(10)
    hold.used = 10  # spent by others
    conn, transport = connection(budget=hold)
    conn.data_received(head(b"POST / HTTP/1.1", HOST, b"Content-Length: 5") + b"hello")
    assert transport.written.startswith(b"HTTP/1.1 503 ")
    conn, transport = connection(budget=hold)
    conn.data_received(head(b"GET /healthz HTTP/1.1", HOST))
    await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 200 ")


async def test_body_charged_while_held_and_given_back_after_the_answer():
    budget = MemoryBudget(1 << 30)
    seen = []
    release = asyncio.Event()

    async def handler(request):
        seen.append(budget.used)
        await release.wait()
        return Response(200, [], b"ok")

    conn, transport = connection(handler, budget=budget)
    conn.data_received(head(b"POST / HTTP/1.1", HOST, b"Content-Length: 50000") + b"x" * 50000)
    await asyncio.sleep(0)
    assert seen == [50000] and conn.held == 50000
    release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 200 ") and budget.used == 0 and conn.held == 0


async def test_pipelined_bodies_over_the_connection_share_stop_reading():
    release = asyncio.Event()

    async def handler(request):
        await release.wait()
        return Response(200, [], b"ok")

    conn, transport = connection(handler, connection_budget=256 * 1024)
    one = head(b"POST / HTTP/1.1", HOST, b"Content-Length: 200000") + b"x" * 200000
    conn.data_received(one * 3)
    for _ in range(10):
        await asyncio.sleep(0)
    # Back-pressure, not buffering: parsed bodies stay within the share (+ the unparsed rest of the read).
    assert not transport.reading and conn.held - len(conn.pending) <= 256 * 1024 + SLICE
    release.set()
    for _ in range(30):
        await asyncio.sleep(0)
    assert transport.written.count(b"HTTP/1.1 200 ") == 3 and conn.held == 0


async def test_a_client_that_stops_reading_is_cut_after_send_timeout():
    cancelled = asyncio.Event()

    async def streamer(request):
        request.conn.start_stream(200, [])
        try:
            while True:
                await request.conn.write_chunk(b"x" * 4096)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    conn, transport = connection(streamer, high=16384, send_timeout=0.1)
    conn.data_received(head(b"GET /s HTTP/1.1", HOST))
    for _ in range(10):
        await asyncio.sleep(0)
    assert conn.write_paused and conn.write_deadline
    conn.write_deadline = 1.0  # the sweep finds it past
    conn.server._sweep()
    assert transport.aborted
    conn.connection_lost(None)  # what the transport then reports: the handler is cancelled
    await asyncio.wait_for(cancelled.wait(), 2)


async def test_large_unread_answer_is_charged_until_taken():
    budget = MemoryBudget(1 << 30)

    async def big(request):
        return Response(200, [], b"y" * 500_000)

    conn, transport = connection(big, budget=budget, high=16384)
    conn.data_received(head(b"GET /b HTTP/1.1", HOST))
    for _ in range(5):
        await asyncio.sleep(0)
    assert budget.used >= 500_000
    transport.drain()
    assert budget.used == 0


async def test_token_free_routes_refuse_a_body_unread(relay):
    for target, extra in [
        (b"POST /healthz", b""),
        (b"GET /readyz", b""),
        (b"POST /v1/providers", b"Authorization: Bearer " + relay.token.encode() + b"\r\n"),
    ]:
        raw = await raw_exchange(
            relay.server.port,
            target + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"Content-Length: 10485760\r\n\r\n",
            3,
        )
        assert status_of(raw) == 413 and b"takes no body" in raw, raw[:300]
    raw = await raw_exchange(
        relay.server.metrics_port,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        3,
    )
    assert status_of(raw) == 413


async def test_envelopes_are_refused_from_their_first_bytes(relay):
    port = relay.server.port
    v2 = head(
        b"POST /e/x HTTP/1.1", HOST, b"Content-Type: application/octet-stream", b"Content-Length: 2000000"
    )
    raw = await raw_exchange(port, v2 + bytes([envelope_v2.VERSION]) + b"unknown!" + b"z" * 100, 3)
    assert status_of(raw) == 403 and b"envelope_unknown_key" in raw
    fernet = b"Content-Type: application/vnd.llm-relay.fernet"
    v1 = head(b"POST /v1/x HTTP/1.1", HOST, fernet, b"Content-Length: 2000000")
    raw = await raw_exchange(port, v1 + b"not-a-fernet-token-at-all", 3)
    assert status_of(raw) == 400 and b"invalid_envelope" in raw


def test_a_large_body_gets_its_fallback_model_without_a_parse():
    big = json.dumps({"model": "a", "messages": [{"role": "user", "content": "x" * 100_000}]}).encode()
    out = Outbound("POST", "/chat/completions", "", [], big + b"\n", None, True).for_model("b/other")
    assert json.loads(out.body)["model"] == "b/other" and json.loads(out.body)["messages"]


async def test_budget_settings_are_in_relay_toml_and_rendered(relay_factory, http):
    relay = await relay_factory(
        extra_server="memory_budget_bytes = 33554432\nconnection_budget_bytes = 1048576"
    )
    assert relay.server.relay.budget.limit == 32 << 20
    resp = await http.get(relay.url + "/metrics", headers=bearer(relay.token))
    assert "llm_relay_memory_budget_bytes 33554432" in await resp.text()


async def test_a_provider_takes_only_its_methods(relay_factory, http, upstream):
    relay = await relay_factory(extra='methods = ["POST", "get"]')  # appended to [providers.lab]
    auth = bearer(relay.token)
    resp = await http.delete(relay.url + "/lab/v1/models", headers=auth)
    assert resp.status == 405 and "does not take DELETE" in (await resp.json())["error"]["message"]
    resp = await http.get(relay.url + "/lab/v1/models", headers=auth)
    assert resp.status == 200
    before = len(upstream.state.requests)
    resp = await http.delete(relay.url + "/openrouter/v1/models", headers=auth)
    # The default: every method of the providers' APIs is forwarded (the fake upstream's own 405 comes back).
    assert "does not take" not in await resp.text() and len(upstream.state.requests) == before + 1


async def test_provider_methods_outside_the_allow_list_are_a_config_error(tmp_path, upstream):
    make_relay_dir(tmp_path, upstream.base, extra='methods = ["TRACE"]')
    with pytest.raises(ConfigError, match=r"\[providers.lab\] methods"):
        load_settings(tmp_path / "relay.toml")


async def test_a_client_over_its_rate_adds_no_replay_cache_entries(relay_factory, http):
    relay = await relay_factory(rate_limit=5)
    key = envelope_v2.ClientKey(relay.client_key("alice"), "alice")
    statuses = []
    for _ in range(40):  # every one a fresh, valid envelope: before, each entered the cache
        inner = envelope.InnerRequest("GET", "/v1/models", token=relay.token)
        body, _ = envelope_v2.seal_request(key, inner)
        resp = await http.post(
            relay.url + "/e/x", data=body, headers={"Content-Type": "application/octet-stream"}
        )
        statuses.append(resp.status)
        await resp.read()
    assert statuses == [200] * 40  # sealed answers: the 429s are inside
    assert len(relay.server.relay.state.replay) <= 5
