"""The relay's own HTTP/1.1 client against hand-written upstreams: framing, limits, TLS, proxy, keep-alive."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import time

import pytest
from aiohttp import web
from llm_relay.server.upstream import _Connection
from relay_support import bearer, provider_toml

from lab import ca
from lab.upstream import create_app

UP_KEYS = ["sk-or-v1-relay-test-key-one", "sk-or-v1-relay-test-key-two"]


class LoopbackServer:
    """A raw TCP server on 127.0.0.1:0 whose `_serve` gets each connection."""

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._guarded, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _guarded(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


class CannedUpstream(LoopbackServer):
    """Reads requests (head + Content-Length body) and answers each with `script`."""

    def __init__(self, script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            self.requests.append(head + body)
            if not await self.script(writer, head, body):
                break


@contextlib.asynccontextmanager
async def canned(relay_factory, script):
    """A CannedUpstream and a relay whose provider `canned` points at it."""
    up = CannedUpstream(script)
    port = await up.start()
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        yield up, await relay_factory(extra=provider_toml("canned", base, response_timeout=3))
    finally:
        await up.close()


async def test_chunked_and_split_responses_arrive_intact(relay_factory, http):
    payload = json.dumps({"object": "list", "data": ["x" * 5000]}).encode()

    async def script(writer, head, body):
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(0, len(payload), 777):
            piece = payload[i : i + 777]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(b"0\r\n\r\n")
        return True

    async with canned(relay_factory, script) as (up, relay):
        for _ in range(3):  # keep-alive: one upstream connection serves all three
            async with http.get(relay.url + "/canned/v1/models", headers=bearer(relay.token)) as r:
                assert r.status == 200 and await r.read() == payload
        assert up.connections == 1
        first = up.requests[0]
        assert first.startswith(b"GET /api/v1/models HTTP/1.1\r\n")
        assert b"Authorization: Bearer sk-or-v1-relay-test-key-" in first


async def test_read_until_close_body_and_no_body_statuses(relay_factory, http):
    async def script(writer, head, body):
        if b"/until-close" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nall of it")
            await writer.drain()
            return False
        writer.write(b"HTTP/1.1 204 No Content\r\nX-Generation-Id: gen-9\r\n\r\n")
        return True

    async with canned(relay_factory, script) as (_, relay):
        async with http.get(relay.url + "/canned/v1/until-close", headers=bearer(relay.token)) as r:
            assert r.status == 200 and await r.read() == b"all of it"
        async with http.delete(relay.url + "/canned/v1/thing", headers=bearer(relay.token)) as r:
            assert r.status == 204 and r.headers["X-Generation-Id"] == "gen-9"


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"h" * 70_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
    ],
    ids=["garbage", "huge-head", "truncated", "bad-chunk"],
)
async def test_broken_upstream_answers_are_502(relay_factory, http, answer):
    async def script(writer, head, body):
        writer.write(answer)
        await writer.drain()
        return False

    async with (
        canned(relay_factory, script) as (_, relay),
        http.get(relay.url + "/canned/v1/models", headers=bearer(relay.token)) as r,
    ):
        assert r.status == 502
        assert (await r.json())["error"]["code"] in ("protocol", "reset")


def _second_request_dropped():
    """A script whose connections read their second request and close without a byte of answer: the
    request reached the provider, which may have acted on it (billed a completion)."""
    served_on: dict[int, int] = {}

    async def script(writer, head, body):
        n = served_on[id(writer)] = served_on.get(id(writer), 0) + 1
        if n == 2:
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        return True

    return script


async def test_post_dropped_after_it_reached_the_provider_is_not_sent_again(relay_factory, http):
    async with canned(relay_factory, _second_request_dropped()) as (up, relay):
        async with http.post(relay.url + "/canned/v1/x", data=b"{}", headers=bearer(relay.token)) as r:
            assert r.status == 200 and await r.read() == b"ok"
        async with http.post(relay.url + "/canned/v1/x", data=b"{}", headers=bearer(relay.token)) as r:
            assert r.status == 502 and (await r.json())["error"]["code"] == "reset"
        assert len(up.requests) == 2  # sent once, never twice


async def test_safe_request_on_a_dropped_connection_is_sent_again_once(relay_factory, http):
    async with canned(relay_factory, _second_request_dropped()) as (up, relay):
        for _ in range(2):
            async with http.get(relay.url + "/canned/v1/models", headers=bearer(relay.token)) as r:
                assert r.status == 200 and await r.read() == b"ok"
        # request 1 on connection A; request 2 dropped by A, then sent again on a fresh connection B
        assert up.connections == 2 and len(up.requests) == 3


async def test_connection_the_provider_closed_while_idle_is_not_used(relay_factory, http):
    """The provider closes each connection right after answering (its keep-alive timeout, early): the
    relay sees the FIN before writing the next request, so a POST goes out once, on a fresh connection."""

    async def script(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        return False  # close: the relay pooled the connection (the answer said keep-alive)

    async with canned(relay_factory, script) as (up, relay):
        for _ in range(3):
            async with http.post(relay.url + "/canned/v1/x", data=b"{}", headers=bearer(relay.token)) as r:
                assert r.status == 200 and await r.read() == b"ok"
            await asyncio.sleep(0.05)  # the FIN is on the relay's socket, maybe not yet seen by its loop
        assert up.connections == 3 and len(up.requests) == 3


async def test_no_retry_once_the_provider_answered_something(relay_factory, http):
    async def script(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\npartial")
        await writer.drain()
        return False

    async with canned(relay_factory, script) as (up, relay):
        async with http.post(relay.url + "/canned/v1/x", data=b"{}", headers=bearer(relay.token)) as r:
            assert r.status == 502
        assert len(up.requests) == 1


@pytest.fixture
async def tls_upstream(tmp_path):
    paths = ca.ensure(tmp_path / "ca")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(paths["crt"], paths["key"])
    app = create_app({"api_keys": UP_KEYS})
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield port, paths["ca_crt"]
    await runner.cleanup()


async def test_tls_upstream_verified_with_ca_file(relay_factory, http, tls_upstream):
    port, ca_crt = tls_upstream
    base = f"https://localhost:{port}/api/v1"
    good = provider_toml("tls", base, ca_file=str(ca_crt))
    bad = provider_toml("untrusted", base)
    relay = await relay_factory(extra=good + bad)
    async with http.get(relay.url + "/tls/v1/models", headers=bearer(relay.token)) as r:
        assert r.status == 200 and (await r.json())["data"]
    async with http.get(relay.url + "/untrusted/v1/models", headers=bearer(relay.token)) as r:
        assert r.status == 502 and (await r.json())["error"]["code"] == "tls"


class TinyProxy(LoopbackServer):
    """An HTTP proxy for the test: CONNECT tunnels and absolute-form requests, Basic auth checked."""

    def __init__(self, credentials: str) -> None:
        self.expected = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.seen: list[str] = []

    async def _serve(self, reader, writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        fields = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:])}
        auth = fields.get("proxy-authorization", "")
        self.seen.append(f"{method} {target}")
        if auth != self.expected:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = b""
        else:
            url = target.split("://", 1)[1]
            hostport, _, path = url.partition("/")
            host, _, port = hostport.partition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port or 80))
            kept = [ln for ln in lines[1:] if not ln.lower().startswith("proxy-authorization")]
            rest = (f"{method} /{path} {version}\r\n" + "\r\n".join(kept)).encode("latin-1")

        async def pipe(src, dst, first=b""):
            try:
                if first:
                    dst.write(first)
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, rest), pipe(up_reader, writer))


async def test_outbound_proxy_connect_for_https_and_absolute_form_for_http(
    relay_factory, http, tls_upstream, upstream
):
    port, ca_crt = tls_upstream
    proxy = TinyProxy("relay:s3cret")
    proxy_port = await proxy.start()
    via = f"http://relay:s3cret@127.0.0.1:{proxy_port}"
    extra = (
        provider_toml("viatls", f"https://localhost:{port}/api/v1", ca_file=str(ca_crt), proxy=via)
        + provider_toml("viahttp", upstream.base, proxy=via)
        + provider_toml("bypass", upstream.base, proxy=via, no_proxy=["127.0.0.1"])
    )
    relay = await relay_factory(extra=extra)
    async with http.get(relay.url + "/viatls/v1/models", headers=bearer(relay.token)) as r:
        assert r.status == 200
    async with http.get(relay.url + "/viahttp/v1/models", headers=bearer(relay.token)) as r:
        assert r.status == 200
    async with http.get(relay.url + "/bypass/v1/models", headers=bearer(relay.token)) as r:
        assert r.status == 200
    assert proxy.seen[0] == f"CONNECT localhost:{port}"
    assert proxy.seen[1].startswith("GET http://127.0.0.1:") and proxy.seen[1].endswith("/api/v1/models")
    assert len(proxy.seen) == 2  # the no_proxy provider went direct
    await proxy.close()


async def test_idle_connection_check_sees_a_fin_the_loop_has_not_read():
    """What acquire() relies on: poll(0) sees the provider's FIN before the event loop delivers it."""
    listener = socket.create_server(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    try:
        _, conn = await loop.create_connection(lambda: _Connection(loop), *listener.getsockname())
        peer, _ = listener.accept()
        assert conn.idle_and_open()
        peer.close()
        time.sleep(0.05)  # noqa: ASYNC251 - blocks the loop on purpose: the FIN arrives unseen
        assert not conn.closed and not conn.idle_and_open()
        conn.abort()
    finally:
        listener.close()
