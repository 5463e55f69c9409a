"""The relay's own HTTP/1.1 server (http11.py), spoken to with raw bytes: what clients rely on."""

from __future__ import annotations

import asyncio
import json
import re

from relay_support import CHAT, raw_exchange, status_of


def port_of(relay) -> int:
    return int(relay.url.rsplit(":", 1)[1])


def head(method: str, target: str, token: str, extra: str = "") -> str:
    return f"{method} {target} HTTP/1.1\r\nHost: relay\r\nX-Relay-Token: {token}\r\n{extra}"


async def test_pipelined_requests_are_answered_in_order_on_one_connection(relay):
    one = head("GET", "/v1/models", relay.token, "\r\n")
    two = head("GET", "/nope/v1/models", relay.token, "\r\n")
    three = head("GET", "/healthz", relay.token, "Connection: close\r\n\r\n")
    raw = await raw_exchange(port_of(relay), (one + two + three).encode())
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]
    assert statuses == [200, 404, 200]


async def test_expect_100_continue_and_oversized_declared_body(relay_factory):
    relay = await relay_factory(extra_server="max_body_bytes = 1000")
    port = port_of(relay)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps(CHAT).encode()
    writer.write(
        head("POST", "/v1/chat/completions", relay.token, "Content-Type: application/json\r\n").encode()
        + b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    assert status_of(await reader.read()) == 200
    writer.close()
    # A declared body over the limit is refused before it is sent (no 100 Continue).
    big = head(
        "POST", "/v1/chat/completions", relay.token, "Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    )
    raw = await raw_exchange(port, big.encode(), wait_s=3)
    assert status_of(raw) == 413 and b"100 Continue" not in raw and b"Connection: close" in raw


async def test_slow_head_gets_408_and_idle_keep_alive_is_closed(relay):
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(relay))
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: relay\r\n")  # ...and never finishes the head
    raw = await asyncio.wait_for(reader.read(), 5)  # body_timeout is 2 s in the test config
    assert status_of(raw) == 408 and b'"body_timeout"' in raw
    writer.close()


async def test_head_and_http10_stream(relay, upstream):
    raw = await raw_exchange(
        port_of(relay), head("HEAD", "/v1/models", relay.token, "Connection: close\r\n\r\n").encode()
    )
    assert status_of(raw) == 200 and raw.endswith(b"\r\n\r\n")  # Content-Length, but no body bytes
    body = json.dumps({**CHAT, "stream": True}).encode()
    req = (
        f"POST /v1/chat/completions HTTP/1.0\r\nX-Relay-Token: {relay.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    raw = await raw_exchange(port_of(relay), req)
    head_part, _, stream = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head_part and b"Connection: close" in head_part
    assert stream.rstrip().endswith(b"data: [DONE]")  # HTTP/1.0: raw stream, ended by the close


async def test_protocol_rejections_are_logged_without_tokens(relay):
    target = f"/t/{relay.token}/v1/models"
    raw = await raw_exchange(port_of(relay), f"GET {target} HTTP/1.1\r\nX-Big: {'b' * 9000}\r\n\r\n".encode())
    assert status_of(raw) == 431
    await asyncio.sleep(0.05)
    line = json.loads(relay.log.lines[-1])
    assert line["status"] == 431 and relay.token not in relay.log.lines[-1]


async def test_chunked_request_body_is_forwarded_with_a_length(relay, upstream):
    body = json.dumps(CHAT).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
    )
    req = head(
        "POST",
        "/v1/chat/completions",
        relay.token,
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    raw = await raw_exchange(port_of(relay), req.encode() + chunks + b"0\r\n\r\n")
    assert status_of(raw) == 200 and b'"chat.completion"' in raw
    seen = {k.lower(): v for k, v in upstream.state.requests[-1]["headers"].items()}
    assert seen["content-length"] == str(len(body)) and "transfer-encoding" not in seen
