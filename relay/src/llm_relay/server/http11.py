"""The relay's HTTP/1.1 server: asyncio protocol + httptools (llhttp) request parser.

Why not aiohttp's server: on this machine it alone costs ~4x the CPU per request of a bare httptools
protocol (measured for issue 6), and the relay's whole job is per-request overhead. This server does
only what the relay needs, strictly:
- one request at a time per connection, pipelined requests queued in order (bounded; reading pauses);
- the whole request body is read before the handler runs (bodies are capped by `max_body_bytes`):
  a declared Content-Length over the cap is refused before reading (413), `Expect: 100-continue` is
  honoured only for acceptable bodies, chunked bodies are counted as they arrive;
- one deadline per request covering head and body (`body_timeout`): slow senders get 408, including
  slow *heads* (slowloris); idle keep-alive connections close after `keepalive_timeout`;
- limits on request-line and header sizes (414/431) and on header count; anything llhttp rejects
  (bad framing, CL+TE smuggling, bad characters) is a 400 and the connection closes;
- responses with Content-Length, or chunked streams with flow control (writes wait while the client's
  socket buffer is full); a client that disconnects cancels its handler (which aborts the provider call).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus

import httptools

from .errors import RelayError

log = logging.getLogger("llm_relay.server")
SERVER_NAME = b"llm-relay"
MAX_PIPELINED = 8
SWEEP_INTERVAL = 0.25  # seconds between deadline checks
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class Limits:
    """Per-listener limits; read from the current settings when a connection needs them."""

    __slots__ = ("body_timeout", "keepalive_timeout", "max_body", "max_headers", "max_line")

    def __init__(
        self,
        max_body: int,
        body_timeout: float,
        max_line: int = 8190,
        max_headers: int = 100,
        keepalive_timeout: float = 75.0,
    ) -> None:
        self.max_body, self.body_timeout = max_body, body_timeout
        self.max_line, self.max_headers, self.keepalive_timeout = max_line, max_headers, keepalive_timeout


class Headers:
    """Request headers: original pairs (for forwarding) plus case-insensitive lookup (first value wins)."""

    __slots__ = ("_lookup", "pairs")

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        lookup: dict[str, str] = {}
        for name, value in pairs:
            lookup.setdefault(name.lower(), value)
        self._lookup = lookup

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._lookup.get(name.lower(), default)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._lookup

    def items(self) -> list[tuple[str, str]]:
        return self.pairs


class Request:
    __slots__ = ("body", "conn", "headers", "keep_alive", "method", "raw_path", "version")

    def __init__(
        self, conn: HttpConnection, method: str, raw_path: str, headers: Headers, version: str
    ) -> None:
        self.conn = conn
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.version = version
        self.body = b""
        self.keep_alive = True

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]


class Response:
    __slots__ = ("body", "close", "headers", "status")

    def __init__(
        self, status: int, headers: list[tuple[str, str]], body: bytes = b"", close: bool = False
    ) -> None:
        self.status, self.headers, self.body, self.close = status, headers, body, close


Handler = Callable[[Request], Awaitable[Response | None]]
RejectHook = Callable[[str, str, int, str], None]  # method, path, status, code


class _Clock:
    """The Date header, formatted once per second."""

    second = 0
    value = b""

    @classmethod
    def date(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.value = now, formatdate(now, usegmt=True).encode()
        return cls.value


def _head(status: int, headers: list[tuple[str, str]], extra: bytes) -> bytes:
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1")
    return b"HTTP/1.1 %d %s\r\n%sServer: %s\r\nDate: %s\r\n%s\r\n" % (
        status,
        _REASONS.get(status, b"Unknown"),
        fields,
        SERVER_NAME,
        _Clock.date(),
        extra,
    )


class HttpServer:
    """Shared by all connections of one listener: the handler, the limits and the open connections."""

    def __init__(
        self, handler: Handler, limits: Callable[[], Limits], on_reject: RejectHook | None = None
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.on_reject = on_reject
        self.connections: set[HttpConnection] = set()
        self.closing = False
        self._sweeping = False

    def __call__(self) -> HttpConnection:
        if not self._sweeping:
            self._sweeping = True
            asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)
        return HttpConnection(self)

    def _sweep(self) -> None:
        """Fire expired connection deadlines: one timer per listener instead of two per request (those
        timer handles were a measurable share of CPU; deadlines need no sub-second accuracy)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.connections):
            if conn.deadline and conn.deadline <= now:
                conn.deadline = 0.0
                conn.on_deadline()
        if self.connections:
            loop.call_later(SWEEP_INTERVAL, self._sweep)
        else:
            self._sweeping = False

    def close_idle(self) -> None:
        for conn in list(self.connections):
            if conn.current is None and not conn.queue:
                conn.close()

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.limits = server.limits()
        self.queue: deque[Request] = deque()
        self.current: asyncio.Task | None = None
        self.closed = False
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future | None = None
        self.deadline = 0.0  # loop time after which on_deadline() fires (0 = none)
        # per-message parsing state
        self.url = bytearray()
        self.header_pairs: list[tuple[str, str]] = []
        self.head_bytes = 0
        self.request: Request | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.reject: tuple[int, str, str] | None = None
        self.in_message = False
        # response state
        self.streaming = False
        self.head_only = False
        self.http10 = False

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self._arm(self.limits.keepalive_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._disarm()
        if self.current is not None and not self.current.done():
            self.current.cancel()  # the client is gone: stop the handler (and its provider request)
        self.queue.clear()
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_exception(ConnectionResetError("client disconnected"))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self.request is None or self.request.method == "CONNECT":
                self._fail(400, "invalid_request", "protocol upgrades are not supported")
            else:
                # e.g. `Upgrade: h2c` on a complete request: answer it in HTTP/1.1, then close.
                self.request.keep_alive = False
                self.read_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
        except httptools.HttpParserError as exc:
            status, code, message = self.reject or (
                400,
                "bad_request",
                f"malformed HTTP request ({exc.__class__.__name__})",
            )
            self._fail(status, code, message)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    # --- httptools callbacks ---
    def on_message_begin(self) -> None:
        self.in_message = True
        self.url.clear()
        self.header_pairs = []
        self.head_bytes = 0
        self.body = []
        self.body_size = 0
        self.reject = None
        self.request = None
        self._arm(self.limits.body_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_line:
            self.reject = (414, "uri_too_long", "request target too long")
            raise ValueError("url too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        if len(name) + len(value) > self.limits.max_line or len(self.header_pairs) >= self.limits.max_headers:
            self.reject = (431, "headers_too_large", "request header fields too large")
            raise ValueError("headers too large")
        self.header_pairs.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self.parser
        headers = Headers(self.header_pairs)
        request = Request(
            self,
            parser.get_method().decode("latin-1"),
            self.url.decode("latin-1"),
            headers,
            parser.get_http_version(),
        )
        request.keep_alive = parser.should_keep_alive()
        self.request = request
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limits.max_body:
            self.reject = (413, "body_too_large", f"request body over the {self.limits.max_body}-byte limit")
        elif (
            (headers.get("expect") or "").lower() == "100-continue"
            and not self.queue
            and self.current is None
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        if self.reject is not None:
            raise ValueError("refused")  # stop parsing: the body is not wanted

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.limits.max_body:
            self.reject = (413, "body_too_large", f"request body over the {self.limits.max_body}-byte limit")
            raise ValueError("body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        self.in_message = False
        body = self.body
        request.body = body[0] if len(body) == 1 else b"".join(body)
        self.body = []
        self.queue.append(request)
        if len(self.queue) >= MAX_PIPELINED and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        if self.current is None:
            self._disarm()
            self._next()

    # --- request processing ---
    def _next(self) -> None:
        if not self.queue or self.closed:
            return
        request = self.queue.popleft()
        if self.read_paused and len(self.queue) < MAX_PIPELINED // 2 and request.keep_alive:
            self.read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self.current = self.loop.create_task(self._run(request))

    async def _run(self, request: Request) -> None:
        self.head_only = request.method == "HEAD"
        self.http10 = request.version == "1.0"
        self.streaming = False
        try:
            response = await self.server.handler(request)
        except asyncio.CancelledError:
            self.current = None
            return
        except Exception:
            log.exception("handler failed")
            if self.streaming:
                self.abort()
                return
            err = RelayError(500, "internal_error", "the relay failed to handle this request")
            response = Response(500, [("Content-Type", "application/json")], err.body(), close=True)
        self.current = None
        if self.closed:
            return
        keep = request.keep_alive and not self.server.closing
        if response is not None:
            keep = keep and not response.close
            self._write_response(response, keep)
        elif not self.streaming or self.http10:
            keep = False
        if not keep:
            self.close()
            return
        if self.queue:
            self._next()
        else:
            self._arm(self.limits.body_timeout if self.in_message else self.limits.keepalive_timeout)

    def _write_response(self, response: Response, keep: bool) -> None:
        status, body = response.status, response.body
        extra = b"" if keep else b"Connection: close\r\n"
        if status >= 200 and status not in (204, 304):
            extra += b"Content-Length: %d\r\n" % len(body)
        head = _head(status, response.headers, extra)
        self.transport.write(head if self.head_only or not body else head + body)  # type: ignore[union-attr]

    # --- streaming API used by reply.StreamWriter ---
    def start_stream(self, status: int, headers: list[tuple[str, str]]) -> bool:
        """Send the head of a streamed answer; returns whether the connection may be kept afterwards."""
        self.streaming = True
        if self.http10:  # no chunked encoding in HTTP/1.0: the end of the body is the end of the connection
            self.transport.write(_head(status, headers, b"Connection: close\r\n"))  # type: ignore[union-attr]
            return False
        extra = b"Transfer-Encoding: chunked\r\n"
        if self.server.closing:
            extra += b"Connection: close\r\n"
        self.transport.write(_head(status, headers, extra))  # type: ignore[union-attr]
        return not self.server.closing

    async def write_chunk(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("client disconnected")
        if data and not self.head_only:
            framed = data if self.http10 else b"%x\r\n%s\r\n" % (len(data), data)
            self.transport.write(framed)  # type: ignore[union-attr]
        if self.write_paused:
            self.drain_waiter = self.loop.create_future()
            try:
                await self.drain_waiter
            finally:
                self.drain_waiter = None

    def end_stream(self) -> None:
        if not self.closed and not self.head_only and not self.http10:
            self.transport.write(b"0\r\n\r\n")  # type: ignore[union-attr]

    # --- connection management ---
    def _fail(self, status: int, code: str, message: str) -> None:
        """Answer a request we refuse to parse further, then close (its remaining bytes are unusable)."""
        if self.closed:
            return
        request = self.request
        if self.server.on_reject is not None:
            method = request.method if request else "-"
            path = request.path if request else "-"
            self.server.on_reject(method, path, status, code)
        if self.current is None and not self.queue:
            err = RelayError(status, code, message)
            self.transport.write(  # type: ignore[union-attr]
                _head(
                    status,
                    [("Content-Type", "application/json")],
                    b"Connection: close\r\nContent-Length: %d\r\n" % len(err.body()),
                )
                + err.body()
            )
            self.close()
        else:
            # Earlier pipelined requests are still being answered: stop reading, let them finish.
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
            for queued in self.queue:
                queued.keep_alive = False
            if self.current is None:
                self.close()

    def _arm(self, seconds: float) -> None:
        self.deadline = self.loop.time() + seconds

    def _disarm(self) -> None:
        self.deadline = 0.0

    def on_deadline(self) -> None:
        if self.closed or self.current is not None:
            return
        if self.in_message:
            self._fail(408, "body_timeout", "request not received in time")
        else:
            self.close()  # idle keep-alive connection

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()
