"""HTTP/1.1 client to a provider: raw asyncio protocol + httptools parser + keep-alive pool.

Why not aiohttp's or httpx's client: on this hot path they cost more than the whole rest of the relay
(measured in the issue: aiohttp's client alone tops out at 7,900 req/s on one core). This client does only
what a relay needs: one request at a time per connection, `Content-Length` request bodies (the relay always
has the whole body), responses with Content-Length, chunked or read-until-close bodies, TLS, an HTTP proxy
(CONNECT for https), flow control towards slow clients, and strict limits on the response head.
"""

from __future__ import annotations

import asyncio
import base64
import select
import ssl
from collections import deque
from urllib.parse import unquote, urlsplit

import httptools

from .config import ProviderSettings

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 200
HIGH_WATER = 256 * 1024  # buffered body bytes before we stop reading from the provider
LOW_WATER = 64 * 1024


class UpstreamError(Exception):
    """The provider could not be reached or broke the exchange. `status` is what the client gets."""

    def __init__(self, kind: str, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.kind, self.status = kind, status


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.poller: select.poll | None = None
        self.closed = False
        self.exchanges = 0
        self._connect_buf: bytearray | None = None  # only while reading a proxy's CONNECT answer
        # One parser for the connection's life: llhttp handles consecutive keep-alive responses, and a
        # connection whose response ended abnormally (error, HEAD) is never reused.
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.until_eof = False
        self.head_only = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future | None = None
        self.got_bytes = False

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.poller = select.poll()  # one per connection: the check below is then one syscall
            self.poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def idle_and_open(self) -> bool:
        """Whether an idle pooled connection can carry a request: nothing may be waiting on its socket.

        A provider that closed the connection while it sat in the pool has sent a FIN (or a TLS alert)
        the event loop may not have read yet; one poll(0) sees it, so the request goes on a fresh
        connection instead of being written into one that is gone."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        if self.poller is None:
            return True
        try:
            return not self.poller.poll(0)
        except OSError:
            return False

    def data_received(self, data: bytes) -> None:
        if self._connect_buf is not None:
            self._connect_buf += data
            self._wake()
            return
        parser = self.parser
        if parser is None or self.complete:
            # Bytes nobody asked for (on an idle or finished connection): the stream is out of sync.
            self.close()
            return
        self.got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("protocol", "provider switched protocols"))
        except httptools.HttpParserError as exc:
            if self.error is None:
                self._fail(UpstreamError("protocol", f"invalid HTTP from provider: {exc.__class__.__name__}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.parser is not None and not self.complete:
            if self.headers_done and self.until_eof:
                self.complete = True
                self.keep_alive = False
            elif self.error is None:
                self.error = UpstreamError("reset", "provider closed the connection mid-response")
        self._wake()

    # --- httptools callbacks ---
    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD_BYTES or len(self.headers) >= MAX_HEADERS:
            raise ValueError("response head too large")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        status = parser.get_status_code()
        if 100 <= status < 200:
            self.headers.clear()  # informational answer: the real one follows
            return
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        names = {n.lower() for n, _ in self.headers}
        no_body = self.head_only or status in (204, 304)
        self.until_eof = not no_body and b"content-length" not in names and b"transfer-encoding" not in names
        self.headers_done = True
        if self.head_only:
            # httptools cannot be told the request was HEAD; a HEAD answer has no body, and to stay safe
            # the connection is not reused.
            self.complete = True
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:
            return  # end of an informational answer
        self.complete = True
        self._wake()

    # --- internals ---
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        self.error = error
        self.close()
        self._wake()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def _wait(self, limit_s: float, what: str) -> None:
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(limit_s, self._timeout, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def _timeout(self, waiter: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamError("timeout", "provider timed out", status=504))

    # --- API used by the pool and the forwarder ---
    async def open_tunnel(self, authority: str, proxy_auth: str | None, limit_s: float) -> None:
        """Ask the HTTP proxy on this connection for a CONNECT tunnel to `authority`."""
        assert self.transport is not None
        self._connect_buf = bytearray()
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if proxy_auth:
            head += f"Proxy-Authorization: Basic {proxy_auth}\r\n"
        self.transport.write((head + "\r\n").encode("latin-1"))
        while b"\r\n\r\n" not in self._connect_buf:
            if self.closed:
                raise UpstreamError("connect", "proxy closed the connection during CONNECT")
            if len(self._connect_buf) > MAX_HEAD_BYTES:
                raise UpstreamError("connect", "proxy answer to CONNECT too large")
            await self._wait(limit_s, "CONNECT")
        status_line = bytes(self._connect_buf.split(b"\r\n", 1)[0])
        parts = status_line.split(b" ", 2)
        self._connect_buf = None
        if len(parts) < 2 or parts[1] != b"200":
            raise UpstreamError("connect", f"proxy refused CONNECT ({parts[1:2] or b'?'!r})")

    async def start(self, head: bytes, body: bytes, head_only: bool, limit_s: float) -> None:
        """Send one request and wait for the response head."""
        self._reset()
        self.exchanges += 1
        self.head_only = head_only
        self.parser = self._parser
        assert self.transport is not None
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait(limit_s, "response head")

    async def read(self, idle_timeout: float) -> bytes:
        """The next body chunk; b"" once the response is complete."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered < LOW_WATER and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait(idle_timeout, "body")

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and not self.chunks


class UpstreamPool:
    """Keep-alive connections to one provider origin (through its proxy, if any)."""

    def __init__(self, provider: ProviderSettings) -> None:
        self.provider = provider
        self.identity = provider.connection_identity()
        self.secure = provider.scheme == "https"
        self.host, self.port = provider.host, provider.port
        self.authority = self.host if provider.port in (80, 443) else f"{self.host}:{self.port}"
        if ":" in self.host:
            self.authority = f"[{self.host}]" if provider.port in (80, 443) else f"[{self.host}]:{self.port}"
        self.ssl: ssl.SSLContext | None = None
        if self.secure:
            self.ssl = ssl.create_default_context(cafile=provider.ca_file or None)
        self.proxy = urlsplit(provider.proxy) if provider.uses_proxy() else None
        self.proxy_auth = None
        if self.proxy is not None and self.proxy.username:
            cred = f"{unquote(self.proxy.username)}:{unquote(self.proxy.password or '')}"
            self.proxy_auth = base64.b64encode(cred.encode()).decode()
        self.max_idle = provider.max_idle_connections
        self.idle: deque[_Connection] = deque()
        self.closed = False
        self.connections_opened = 0

    def request_target(self, path_and_query: str) -> str:
        """Origin form, or absolute form when talking plain HTTP to a proxy."""
        if self.proxy is not None and not self.secure:
            return f"http://{self.authority}{path_and_query}"
        return path_and_query

    async def acquire(self) -> tuple[_Connection, bool]:
        """A connection and whether it was reused from the pool."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.idle_and_open():
                return conn, True
            conn.abort()
        return await self._connect(), False

    def release(self, conn: _Connection) -> None:
        if conn.reusable and not self.closed and len(self.idle) < self.max_idle:
            conn.parser = None
            self.idle.append(conn)
        else:
            conn.close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        timeout = self.provider.connect_timeout
        if self.proxy is not None:
            host, port = self.proxy.hostname or "", self.proxy.port or 80
        else:
            host, port = self.host, self.port
        direct_tls = self.ssl if self.proxy is None else None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    host,
                    port,
                    ssl=direct_tls,
                    server_hostname=self.host if direct_tls else None,
                )
                if self.proxy is not None and self.secure:
                    await conn.open_tunnel(f"{self.host}:{self.port}", self.proxy_auth, timeout)
                    assert conn.transport is not None
                    conn.transport = await loop.start_tls(
                        conn.transport, conn, self.ssl, server_hostname=self.host
                    )  # type: ignore[assignment]
        except TimeoutError:
            raise UpstreamError("connect_timeout", "timed out connecting to the provider", 504) from None
        except ssl.SSLError as exc:
            raise UpstreamError(
                "tls", f"TLS with the provider failed: {exc.reason or exc.__class__.__name__}"
            ) from None
        except OSError as exc:
            raise UpstreamError(
                "connect", f"cannot reach the provider: {exc.strerror or exc.__class__.__name__}"
            ) from None
        self.connections_opened += 1
        return conn

    def close(self) -> None:
        """No new idle connections; close the idle ones (busy ones close when released)."""
        self.closed = True
        while self.idle:
            self.idle.pop().close()
