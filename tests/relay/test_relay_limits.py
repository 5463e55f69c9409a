"""Limits that hold while the bytes arrive: head size, pipelining and unread answers, body before auth,
the connection cap. The byte bounds are checked exactly on an in-process connection with a recording
transport; the end-to-end behaviour against a real relay (tests/relay/test_attack_*.py adds RSS and
latency under attack)."""

from __future__ import annotations

import asyncio
import json

from llm_relay import envelope as env
from llm_relay.server.http11 import SLICE, HttpServer, Limits, Response
from relay_support import CHAT, bearer, raw_exchange, status_of

MAX_HEAD = 32768


class RecordingTransport(asyncio.Transport):
    """Collects what the server writes; calls pause_writing above `high` unread bytes, as a real
    transport does when the client does not read, and never drains on its own."""

    def __init__(self, protocol, high: int = 65536) -> None:
        super().__init__()
        self.protocol, self.high = protocol, high
        self.written = bytearray()
        self.reading = True
        self.closed = self.eof = self.aborted = False
        self.paused_writes = False

    def write(self, data) -> None:
        self.written += data
        if len(self.written) > self.high and not self.paused_writes:
            self.paused_writes = True
            self.protocol.pause_writing()

    def drain(self) -> None:
        """The client read everything written so far."""
        self.written.clear()
        if self.paused_writes:
            self.paused_writes = False
            self.protocol.resume_writing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return default

    def get_write_buffer_size(self) -> int:
        return len(self.written)


async def ok_handler(request):
    return Response(200, [("Content-Type", "text/plain")], b"ok")


def connection(handler=ok_handler, admit=None, high: int = 65536, budget=None, **limits):
    server = HttpServer(
        handler, lambda: Limits(1 << 20, 30.0, max_head=MAX_HEAD, **limits), admit=admit, budget=budget
    )
    conn = server()
    transport = RecordingTransport(conn, high)
    conn.connection_made(transport)
    return conn, transport


async def test_endless_header_in_one_big_chunk_refused_before_64k_buffered():
    conn, transport = connection()
    conn.data_received(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * (256 * 1024))
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert transport.eof  # FIN sent after the answer (lingering close)
    assert conn.fed <= MAX_HEAD + 2 * SLICE < 64 * 1024  # all llhttp ever held of it


async def test_endless_header_in_small_chunks_refused_before_64k_buffered():
    conn, transport = connection()
    conn.data_received(b"GET /healthz HTTP/1.1\r\nX-Big: ")
    sent = 0
    while not transport.written and sent < 1 << 20:
        conn.data_received(b"a" * 1000)
        sent += 1000
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert sent < 64 * 1024 - MAX_HEAD // 2
    conn.data_received(b"a" * 100_000)  # what the client still sends is dropped, not parsed
    assert conn.fed < 64 * 1024 and transport.written.count(b"HTTP/1.1") == 1


async def test_total_head_limit_counts_every_header():
    conn, transport = connection()
    fields = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 8000) for i in range(5))  # each under max_line
    conn.data_received(b"GET /healthz HTTP/1.1\r\n" + fields + b"\r\n")
    assert transport.written.startswith(b"HTTP/1.1 431 ")


async def test_a_big_legal_head_behind_another_request_is_accepted():
    conn, transport = connection()
    big = b"GET /b HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 8000 + b"\r\nX-B: " + b"v" * 8000 + b"\r\n\r\n"
    conn.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + big)
    for _ in range(10):
        await asyncio.sleep(0)
    assert transport.written.count(b"HTTP/1.1 200 ") == 2


async def test_pipelining_client_that_never_reads_is_held_at_bounded_memory():
    conn, transport = connection(high=16384)
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    chunk = one * (256 * 1024 // len(one))  # what one socket read delivers
    fed_chunks = 0
    for _ in range(60):  # ~ 450,000 requests offered, as long as the relay keeps reading
        if transport.reading:
            conn.data_received(chunk)
            fed_chunks += 1
        for _ in range(5):
            await asyncio.sleep(0)
    assert not transport.reading  # the relay stopped reading the client
    assert fed_chunks <= 2
    assert len(conn.queue) <= 8 + SLICE // len(one)
    assert len(conn.pending) <= len(chunk)
    assert len(transport.written) <= 16384 + 200  # one answer past the high-water mark
    answered = transport.written.count(b"HTTP/1.1 200")
    transport.drain()  # the client reads: answering and reading resume
    for _ in range(50):
        await asyncio.sleep(0)
    assert transport.written.count(b"HTTP/1.1 200") > 0 and answered > 0


async def test_answers_stop_while_unread_and_the_client_is_cut_after_body_timeout():
    conn, transport = connection(high=1000)
    conn.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
    for _ in range(20):
        await asyncio.sleep(0)
    assert conn.write_paused and conn.queue and len(transport.written) <= 1000 + 200
    conn.on_deadline()  # what the sweep does once body_timeout passed with no progress
    assert transport.aborted


async def test_admission_refuses_before_the_body_is_read():
    from llm_relay.server.errors import RelayError

    def admit(request, max_body):
        raise RelayError(401, "missing_token", "no token")

    conn, transport = connection(admit=admit)
    conn.data_received(b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n" + b"x" * 100_000)
    assert transport.written.startswith(b"HTTP/1.1 401 ") and b"Connection: close" in transport.written
    assert conn.body_size == 0  # not one body byte was kept


async def test_head_limit_is_in_relay_toml(relay_factory):
    relay = await relay_factory(extra_server="max_head_bytes = 4096")
    fields = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(6))
    raw = await raw_exchange(relay.server.port, b"GET /healthz HTTP/1.1\r\n" + fields + b"\r\n", 3)
    assert status_of(raw) == 431


async def test_no_token_gets_401_without_sending_the_body(relay):
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.server.port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
        async with asyncio.timeout(5):
            raw = await reader.read()  # the answer, then EOF: no body byte was needed
    finally:
        writer.close()
    assert status_of(raw) == 401 and b'"missing_token"' in raw


async def test_bad_token_gets_401_before_the_body_and_100_continue_is_not_sent(relay):
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer lrt_wrong\r\n"
        "Expect: 100-continue\r\nContent-Length: 5000000\r\n\r\n"
    )
    raw = await raw_exchange(relay.server.port, head.encode(), 3)
    assert status_of(raw) == 401 and b"100 Continue" not in raw and b'"invalid_token"' in raw


async def test_envelope_without_outer_token_has_the_smaller_body_cap(relay_factory):
    relay = await relay_factory(extra_server="max_envelope_body_bytes = 100000")
    head = "POST /envelope HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\n{}Content-Length: 200000\r\n\r\n"
    raw = await raw_exchange(relay.server.port, head.format(env.CONTENT_TYPE, "").encode(), 3)
    assert status_of(raw) == 413
    outer = f"X-Relay-Token: {relay.token}\r\n"
    raw = await raw_exchange(relay.server.port, head.format(env.CONTENT_TYPE, outer).encode(), 3)
    assert status_of(raw) == 408  # accepted, waits for the body (body_timeout 2 s)
    v2_head = head.replace("/envelope", "/")
    raw = await raw_exchange(relay.server.port, v2_head.format("application/octet-stream", "").encode(), 3)
    assert status_of(raw) == 413  # envelope v2 (its token is inside): the same smaller cap
    plain = head.replace("/envelope", "/v1/files")  # not a v2 path: a plain upload, so a token is needed
    raw = await raw_exchange(relay.server.port, plain.format("application/octet-stream", "").encode(), 3)
    assert status_of(raw) == 401


async def test_malformed_request_behind_a_running_one_gets_its_400_after_it(relay):
    good = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {relay.token}\r\n\r\n"
    raw = await raw_exchange(relay.server.port, good.encode() + b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", 5)
    rest = raw.partition(b"\r\n\r\n")[2]
    assert status_of(raw) == 200 and b"HTTP/1.1 400 " in rest


async def test_connect_is_405_and_closes(relay):
    raw = await raw_exchange(relay.server.port, b"CONNECT example.org:443 HTTP/1.1\r\nHost: x\r\n\r\n", 3)
    assert status_of(raw) == 405 and b"Connection: close" in raw


async def test_absolute_form_target_is_routed_and_no_token_form_is_logged(relay, upstream):
    token = relay.token
    targets = [
        f"http://relay.test/t/{token}/v1/models",
        f"//t/{token}/v1/models",
        f"/v1/t/{token}/x",
        f"http://relay.test/v1/models?token={token}",
    ]
    for target in targets:
        raw = await raw_exchange(
            relay.server.port,
            f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
            3,
        )
        assert status_of(raw) in (200, 401, 404), raw[:100]
    raw = await raw_exchange(
        relay.server.port,
        f"GET http://relay.test/v1/models HTTP/1.1\r\nHost: x\r\n{'Authorization: Bearer ' + token}\r\n"
        "Connection: close\r\n\r\n".encode(),
        3,
    )
    assert status_of(raw) == 200  # absolute form is accepted (RFC 9112 §3.2.2)
    relay.server.relay.access_log.flush()
    text = "".join(relay.log.lines)
    assert token not in text and token[4:20] not in text
    assert len(relay.log.lines) >= len(targets)


async def test_connection_cap_answers_503_and_running_requests_finish(relay_factory):
    relay = await relay_factory(extra_server="max_connections = 3")
    port = relay.server.port
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    try:
        await asyncio.sleep(0.05)
        raw = await raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 3)
        assert status_of(raw) == 503 and b'"too_many_connections"' in raw and b"Retry-After: 1" in raw
        reader, writer = held[0]
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_of(await asyncio.wait_for(reader.read(), 5)) == 200  # the held ones still work
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.1)
    raw = await raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3)
    assert status_of(raw) == 200  # room again once connections close


async def test_large_json_bodies_get_a_shape_check_only(relay, upstream, http):
    big = json.dumps({**CHAT, "pad": "x" * 100_000}).encode()
    async with http.post(
        relay.url + "/v1/chat/completions",
        data=big,
        headers={**bearer(relay.token), "Content-Type": "application/json"},
    ) as r:
        assert r.status == 200
    async with http.post(
        relay.url + "/relay", data=b"[" + b"0," * 50_000 + b"0]", headers=bearer(relay.token)
    ) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"
