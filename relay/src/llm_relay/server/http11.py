"""The relay's HTTP/1.1 server: asyncio protocol + httptools (llhttp) request parser.

Why not aiohttp's server: on this machine it alone costs ~4x the CPU per request of a bare httptools
protocol (measured for issue 6), and the relay's whole job is per-request overhead. This server does
only what the relay needs, strictly:
- limits hold while the bytes arrive (as nginx and Envoy do): bytes are fed to llhttp in slices of
  `SLICE` bytes, and after each slice the head so far is measured against `max_head_bytes`, so a
  never-ending header is refused (431) with at most `max_head_bytes + 2 * SLICE` bytes buffered, instead
  of when llhttp finally hands it over;
- an admission hook runs when the head is complete, before any body byte is read: it authenticates the
  request (401 with the body unread) and sets the request's body cap;
- one request at a time per connection, pipelined requests queued in order (bounded: reading stops
  while `MAX_PIPELINED` requests wait, and the rest of a received chunk waits unparsed);
- back-pressure: while the client does not read our answers (the transport called `pause_writing`),
  no further pipelined request is answered and nothing more is read from it;
- `max_connections` per listener: over it a new connection gets 503 and is closed at once;
- the whole request body is read before the handler runs, into one contiguous buffer charged to the
  memory budget as it arrives (budget.py; over the process budget: 503 + Retry-After). Bodies are capped
  by `max_body_bytes`, the connection's budget share or the admission hook's cap (0 on routes that take
  no body): a declared Content-Length over the cap is refused before reading (413), `Expect:
  100-continue` is honoured only for acceptable bodies, chunked bodies are counted on the wire (framing
  included; extensions and trailers bounded, trailers never become headers); the hook may also check a
  body's first bytes before the rest is read (envelope_gate.py);
- framing as strict as nginx's (Transfer-Encoding other than one `chunked`: 501; two TE headers, TE on
  HTTP/1.0, no or two Host on HTTP/1.1: 400) and a method allow-list (405 for TRACE, CONNECT, WebDAV);
- one deadline per request covering head and body (`body_timeout`): slow senders get 408, including
  slow *heads* (slowloris); idle keep-alive connections close after `keepalive_timeout`, connections
  that never sent a byte after FIRST_BYTE_TIMEOUT; a client that takes none of our answer for
  `send_timeout` is cut (its handler, and so its provider request, cancelled);
- limits on request-line and header sizes (414/431) and on header count; anything llhttp rejects
  (bad framing, CL+TE smuggling, bad characters) is a 400. After such an answer the
  connection closes *lingering* (our side sends FIN, then reads and drops for a bounded time what the
  client still sends), so the client gets the answer instead of a reset; a bad request pipelined behind
  others is answered after them;
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

from .budget import MemoryBudget
from .errors import RelayError

log = logging.getLogger("llm_relay.server")
MAX_PIPELINED = 8
SLICE = 8192  # bytes fed to llhttp at a time: the granularity of the head limit and of pipelining stops
SWEEP_INTERVAL = 0.25  # seconds between deadline checks
LINGER_SECONDS = 2.0  # after an error answer: how long to drop what the client still sends
LINGER_BYTES = 1 << 20  # ... and how much of it, before the connection is cut
MAX_REFUSING = 256  # connections being refused (503) that may linger at once; beyond, closed at once
# Bytes of chunk framing (a chunk-size line with its extensions, or the trailer section) allowed between
# two pieces of body data: Node caps extensions at 16 KiB; llhttp skips them without a callback, so the
# relay measures the bytes fed since the last body byte instead.
MAX_FRAMING = 16384
# A connection that has sent no byte yet is closed after this (nginx's client_header_timeout is 60 s):
# an idle keep-alive wait (75 s) is for clients that have been served, not for empty connections.
FIRST_BYTE_TIMEOUT = 10.0
QUANTUM = 65536  # bytes of one read parsed before other connections get their turn
COPY_LIMIT = 65536  # answers up to this size are joined to their head (one write); larger ones are not
# Methods the relay takes at all (the providers' APIs use these); TRACE, CONNECT and WebDAV's are 405
# before any body byte, so nothing forwards them with a provider key.
ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class Limits:
    """Per-listener limits; read from the current settings when a connection needs them."""

    __slots__ = (
        "body_timeout",
        "connection_budget",
        "keepalive_timeout",
        "max_body",
        "max_connections",
        "max_head",
        "max_headers",
        "max_line",
        "send_timeout",
    )

    def __init__(
        self,
        max_body: int,
        body_timeout: float,
        max_line: int = 8190,
        max_headers: int = 100,
        keepalive_timeout: float = 75.0,
        max_head: int = 32768,
        max_connections: int = 1024,
        connection_budget: int = 16 << 20,
        send_timeout: float = 60.0,
    ) -> None:
        self.max_body, self.body_timeout = max_body, body_timeout
        self.max_line, self.max_headers, self.keepalive_timeout = max_line, max_headers, keepalive_timeout
        self.max_head, self.max_connections = max_head, max_connections
        # What one connection may hold (its body, its pipelined requests, its unread answer bytes).
        self.connection_budget, self.send_timeout = connection_budget, send_timeout


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
    __slots__ = (
        "admitted",
        "body",
        "conn",
        "gate",
        "headers",
        "held",
        "keep_alive",
        "method",
        "raw_path",
        "version",
    )

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
        self.admitted: object = None  # what the admission hook found (e.g. the authenticated client)
        self.held = 0  # bytes of this request charged to the memory budget until it is answered
        # Set by the admission hook: (n, check) runs check(first n body bytes) as soon as they arrive,
        # before the rest is read; it raises RelayError to refuse the request (envelope_gate.py).
        self.gate: tuple[int, Callable[[bytes], None]] | None = None

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
# Runs when a request's head is complete, before its body is read: returns the body cap in bytes, or
# raises RelayError to refuse the request (its body then is never read).
AdmitHook = Callable[[Request, int], int]


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
    # No Server header: naming the tool would let a proxy on the path fingerprint it (issue 15).
    return b"HTTP/1.1 %d %s\r\n%sDate: %s\r\n%s\r\n" % (
        status,
        _REASONS.get(status, b"Unknown"),
        fields,
        _Clock.date(),
        extra,
    )


def _error_bytes(err: RelayError) -> bytes:
    body = err.body()
    fields = [("Content-Type", "application/json"), *err.headers.items()]
    return _head(err.status, fields, b"Connection: close\r\nContent-Length: %d\r\n" % len(body)) + body


def _origin_form(url: str) -> str | None:
    """The origin-form of an absolute-form target (RFC 9112 §3.2.2: a server must accept it), or None."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


class HttpServer:
    """Shared by all connections of one listener: the handler, the limits and the open connections."""

    def __init__(
        self,
        handler: Handler,
        limits: Callable[[], Limits],
        on_reject: RejectHook | None = None,
        admit: AdmitHook | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.on_reject = on_reject
        self.admit = admit
        self.budget = budget or MemoryBudget(1 << 62)  # one per process, shared by its listeners
        self.connections: set[HttpConnection] = set()
        self.refusing = 0  # connections being answered 503 (not in `connections`)
        self.closing = False
        self._sweeping = False

    def __call__(self) -> asyncio.Protocol:
        if not self._sweeping:
            self._sweeping = True
            asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)
        limits = self.limits()
        if len(self.connections) >= limits.max_connections:
            return _Refused(self)
        return HttpConnection(self, limits)

    def _sweep(self) -> None:
        """Fire expired connection deadlines: one timer per listener instead of two per request (those
        timer handles were a measurable share of CPU; deadlines need no sub-second accuracy)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.connections):
            if conn.write_deadline and conn.write_deadline <= now:
                conn.on_send_timeout()
            elif conn.deadline and conn.deadline <= now:
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


class _Refused(asyncio.Protocol):
    """A connection over `max_connections`: 503 at once, then closed (lingering briefly, so the answer is
    read rather than reset, unless too many are being refused already)."""

    ANSWER = RelayError(
        503, "too_many_connections", "the relay is at its connection limit; retry", {"Retry-After": "1"}
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        if server.on_reject is not None:
            server.on_reject("-", "-", 503, "too_many_connections")
        self.transport.write(_error_bytes(self.ANSWER))  # type: ignore[union-attr]
        if server.refusing >= MAX_REFUSING or not self.transport.can_write_eof():  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]
            return
        server.refusing += 1
        self.transport.write_eof()  # type: ignore[union-attr]
        self.timer = asyncio.get_running_loop().call_later(LINGER_SECONDS / 4, self.transport.abort)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        pass  # dropped: nothing this connection sends is wanted

    def eof_received(self) -> bool:
        return False  # the client is done too: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.server.refusing -= 1


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: HttpServer, limits: Limits) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.limits = limits
        self.queue: deque[Request] = deque()
        self.current: asyncio.Task | None = None
        self.closed = False
        self.read_paused = False
        self.write_paused = False
        self.stopped = False  # no more requests will be parsed on this connection
        self._pending = b""  # received but not yet parsed (waits while the pipeline is full)
        self.feeding = False
        self.fed = 0  # bytes fed to the parser so far (before the slice being fed)
        self.deferred: RelayError | None = None  # error answer due after the requests before it
        self.lingering = False
        self.dropped = 0
        self.drain_waiter: asyncio.Future | None = None
        self.deadline = 0.0  # loop time after which on_deadline() fires (0 = none)
        self.write_deadline = 0.0  # while the client does not read: when it is cut (send_timeout)
        self.budget = server.budget
        self.held = 0  # bytes charged to the budget for this connection (see budget.py)
        self.out_held = 0  # ... of which: answer bytes written but not yet taken by the client
        self.budget_paused = False  # reading stopped: the connection holds its whole share
        self.yielded = False  # parsing paused for fairness; resumes on the next loop iteration
        # per-message parsing state
        self.url = bytearray()
        self.header_pairs: list[tuple[str, str]] = []
        self.chunked = False
        self.head_bytes = 0
        self.head_start = 0
        self.in_head = False
        self.request: Request | None = None
        self.body = bytearray()  # one contiguous buffer: a bytes object per chunk cost ~28x (issue 25)
        self.body_size = 0
        self.body_cap = limits.max_body
        self.in_body = False
        self.wire = 0  # bytes fed since the head: body and framing (chunk lines, extensions, trailers)
        self.progress = 0  # `fed` at the last body byte: framing since then is bounded by MAX_FRAMING
        self.trailer_bytes = 0
        self.reject: RelayError | None = None
        self.in_message = False
        # response state
        self.streaming = False
        self.head_only = False
        self.http10 = False

    @property
    def pending(self) -> bytes:
        return self._pending

    @pending.setter
    def pending(self, data: bytes) -> None:
        """Bytes read but not parsed yet (up to one socket read: 256 KiB) are charged while held."""
        change = len(data) - len(self._pending)
        self._pending = data
        if change > 0:
            self.budget.force(change)
            self.held += change
        elif change < 0:
            self.release(-change)

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self._arm(min(FIRST_BYTE_TIMEOUT, self.limits.keepalive_timeout))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lingering = False
        self._pending = b""  # given back with `held` below
        self.server.connections.discard(self)
        self._disarm()
        self.write_deadline = 0.0
        self.body = bytearray()
        if self.held:
            self.budget.give(self.held)  # whatever the handler still holds is dropped with it
            self.held = self.out_held = 0
        if self.current is not None and not self.current.done():
            self.current.cancel()  # the client is gone: stop the handler (and its provider request)
        self.queue.clear()
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_exception(ConnectionResetError("client disconnected"))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            if self.lingering:
                self.dropped += len(data)
                if self.dropped > LINGER_BYTES:
                    self.transport.abort()  # type: ignore[union-attr]
            return
        if self._pending:  # only after a pause; keep the order of the bytes
            data, self.pending = self._pending + data, b""
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Parse `data` slice by slice, checking the head limit after each slice and stopping (keeping the
        rest in `pending`) once the pipeline is full or the client does not read our answers."""
        self.feeding = True
        parser = self.parser
        try:
            if len(data) <= SLICE:
                parser.feed_data(data)
                self.fed += len(data)
                if self.in_head and self.fed - self.head_start > self.limits.max_head + SLICE:
                    self._head_too_large()
                elif self.in_body and self.chunked:
                    self._framing(len(data))
                return
            view = memoryview(data)
            size, pos = len(view), 0
            while pos < size:
                if self.read_paused or self.closed or self.stopped:
                    if not (self.closed or self.stopped):
                        self.pending = bytes(view[pos:])
                    return
                piece = view[pos : pos + SLICE]
                parser.feed_data(piece)
                pos += len(piece)
                self.fed += len(piece)
                if self.in_head and self.fed - self.head_start > self.limits.max_head + SLICE:
                    self._head_too_large()
                    return
                if self.in_body and self.chunked and not self._framing(len(piece)):
                    return
                if pos >= QUANTUM and pos < size and not self.yielded:
                    # Fairness: one connection's read (up to 256 KiB) is parsed a quantum at a time, the
                    # rest after every other ready connection had its turn (a /healthz waits for a
                    # quantum of each, not for whole reads of each).
                    self.pending = bytes(view[pos:])
                    self.yielded = True
                    if not self.read_paused:
                        self.transport.pause_reading()  # type: ignore[union-attr]
                    self.loop.call_soon(self._after_yield)
                    return
        except httptools.HttpParserUpgrade:
            if self.request is None:
                self._fail(RelayError(400, "invalid_request", "protocol upgrades are not supported"))
            else:
                # e.g. `Upgrade: h2c` on a complete request: answer it in HTTP/1.1, then close.
                self.request.keep_alive = False
                self._stop_reading()
        except httptools.HttpParserError as exc:
            self._fail(
                self.reject
                or RelayError(400, "bad_request", f"malformed HTTP request ({exc.__class__.__name__})")
            )
        finally:
            self.feeding = False

    def _after_yield(self) -> None:
        self.yielded = False
        if self.closed or self.stopped or self.read_paused:
            return  # _flow resumes (and feeds `pending`) when the pause it decided on ends
        self.transport.resume_reading()  # type: ignore[union-attr]
        if self.pending and not self.feeding:
            data, self.pending = self.pending, b""
            self._feed(data)

    def _head_too_large(self) -> None:
        self._fail(RelayError(431, "headers_too_large", "request header fields too large"))

    def _framing(self, size: int) -> bool:
        """After a slice of a body: its wire bytes (framing included) count against the body cap, and
        framing without body data between (chunk extensions, trailers) is bounded. False if refused."""
        self.wire += size
        if self.wire > self.body_cap + SLICE:
            self._fail(self._too_large())
            return False
        if self.wire > 2 * self.body_size + MAX_FRAMING + SLICE:
            # Framing outweighs the data: each chunk costs a parser callback, so a body in 2-byte chunks
            # cost ~1 ms of the event loop per 8 KiB. No client needs chunks that small.
            self._fail(RelayError(400, "bad_chunk", "chunks too small: framing outweighs the body"))
            return False
        if self.fed - self.progress > MAX_FRAMING + SLICE:
            self._fail(RelayError(400, "bad_chunk", "chunk extensions or trailers too long"))
            return False
        return True

    def pause_writing(self) -> None:
        # Our unwritten output is over the transport's high-water mark: stop taking new requests.
        self.write_paused = True
        self.write_deadline = self.loop.time() + self.limits.send_timeout
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = 0.0
        if self.out_held:  # the client took our answer bytes (down to the low-water mark)
            self.release(self.out_held)
            self.out_held = 0
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        if self.closed:
            return
        if self.current is None:
            self._continue()
        elif self.read_paused:
            self._flow()  # read again during a long answer: a client that leaves is noticed

    # --- httptools callbacks ---
    def on_message_begin(self) -> None:
        self.in_message = True
        self.in_head = True
        self.head_start = self.fed
        self.url.clear()
        self.header_pairs = []
        self.head_bytes = 0
        self.body = bytearray()
        self.body_size = 0
        self.in_body = False
        self.wire = 0
        self.trailer_bytes = 0
        self.body_cap = self.limits.max_body
        self.reject = None
        self.request = None
        self._arm(self.limits.body_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_line:
            self.reject = RelayError(414, "uri_too_long", "request target too long")
            raise ValueError("url too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        if not self.in_head:
            # A trailer field: never merged into the request's headers (they were checked and may have
            # been acted on already); counted against the head limit and dropped.
            self.trailer_bytes += size + 4
            if self.trailer_bytes > self.limits.max_head:
                self.reject = RelayError(431, "headers_too_large", "request trailer fields too large")
                raise ValueError("trailers too large")
            return
        self.head_bytes += size + 4
        limits = self.limits
        if (
            size > limits.max_line
            or len(self.header_pairs) >= limits.max_headers
            or self.head_bytes + len(self.url) > limits.max_head
        ):
            self.reject = RelayError(431, "headers_too_large", "request header fields too large")
            raise ValueError("headers too large")
        self.header_pairs.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        headers = Headers(self.header_pairs)
        method = parser.get_method().decode("latin-1")
        url = self.url.decode("latin-1")
        if url[:1] != "/" and url != "*":
            url = _origin_form(url) or ""
        request = Request(self, method, url, headers, parser.get_http_version())
        request.keep_alive = parser.should_keep_alive()
        self.request = request
        declared = headers.get("content-length")
        self.chunked = chunked = "transfer-encoding" in headers
        has_body = chunked or (declared is not None and declared != "0")
        # The usual head (one Host, no TE, no repeated name) needs no scan for what nginx refuses.
        if chunked or "host" not in headers or len(headers._lookup) != len(self.header_pairs):
            self.reject = _framing_error(self.header_pairs, request.version)
        if self.reject is not None:
            pass
        elif method not in ALLOWED_METHODS:
            self.reject = RelayError(405, "method_not_allowed", f"method {method[:16]} is not allowed")
        elif not url:
            self.reject = RelayError(400, "bad_request", "request target must be a path or an http URL")
        elif has_body and self.budget.spent:
            self.reject = RelayError(
                503, "memory_budget_spent", "the relay is at its memory budget; retry", {"Retry-After": "1"}
            )
        elif self.server.admit is not None:
            try:
                self.body_cap = self.server.admit(request, self.limits.max_body)
            except RelayError as err:
                self.reject = err  # answered now: the body is never read
        if self.reject is None:
            self.body_cap = min(self.body_cap, self.limits.connection_budget)
            if has_body and not self.body_cap:
                self.reject = RelayError(413, "body_not_allowed", f"{request.path[:64]} takes no body")
            elif declared is not None and declared.isdigit() and int(declared) > self.body_cap:
                self.reject = self._too_large()
            elif (
                (headers.get("expect") or "").lower() == "100-continue"
                and not self.queue
                and self.current is None
            ):
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        if self.reject is not None:
            raise ValueError("refused")  # stop parsing: the body is not wanted
        self.in_body = True
        self.progress = self.fed

    def _too_large(self) -> RelayError:
        return RelayError(413, "body_too_large", f"request body over the {self.body_cap}-byte limit")

    def on_body(self, body: bytes) -> None:
        size = len(body)
        if self.body_size + size > self.body_cap:
            self.reject = self._too_large()
            raise ValueError("body too large")
        budget = self.budget
        if budget.used + size > budget.limit:
            self.reject = RelayError(
                503, "memory_budget_spent", "the relay is at its memory budget; retry", {"Retry-After": "1"}
            )
            raise ValueError("over the memory budget")
        budget.used += size
        self.held += size
        self.body_size += size
        self.body += body
        self.progress = self.fed
        gate = self.request.gate  # type: ignore[union-attr]
        if gate is not None and self.body_size >= gate[0]:
            self.request.gate = None  # type: ignore[union-attr]
            try:
                gate[1](bytes(self.body[: gate[0]]))
            except RelayError as err:
                self.reject = err
                raise ValueError("refused by its first bytes") from None
        if (self.queue or self.current is not None) and (
            self.held - len(self._pending) > self.limits.connection_budget
        ):
            # Earlier requests of this connection hold its share: read no more until they are answered.
            self.budget_paused = True
            self._flow()

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        self.in_message = self.in_body = False
        request.body = bytes(self.body) if self.body else b""
        request.held = self.body_size
        self.body = bytearray()
        self.queue.append(request)
        if len(self.queue) >= MAX_PIPELINED:
            self._flow()
        if self.current is None:
            self._disarm()
            self._next()

    # --- flow control ---
    def _flow(self) -> None:
        """Read from the client only while fewer than MAX_PIPELINED requests wait and the client reads
        our answers (resuming at half the queue, so a pipelining client does not flap)."""
        transport = self.transport
        # `pending` is not counted here: it is parsed only once reading resumes (it would never drop).
        if self.budget_paused and self.held - len(self._pending) <= self.limits.connection_budget // 2:
            self.budget_paused = False
        if self.write_paused or len(self.queue) >= MAX_PIPELINED or self.budget_paused:
            if not self.read_paused:
                self.read_paused = True
                transport.pause_reading()  # type: ignore[union-attr]
        elif self.read_paused and len(self.queue) < MAX_PIPELINED // 2 and not self.stopped:
            self.read_paused = False
            transport.resume_reading()  # type: ignore[union-attr]
            if self.pending and not self.feeding:
                data, self.pending = self.pending, b""
                self._feed(data)

    # --- memory accounting (budget.py) ---
    def charge(self, size: int) -> bool:
        """Charge `size` held bytes to this connection and the process; False if the process budget is
        spent (the caller then refuses, streams instead of buffering, or waits)."""
        if not self.budget.take(size):
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        size = min(size, self.held)  # after connection_lost everything was given back already
        self.held -= size
        self.budget.give(size)
        if self.budget_paused:
            self._flow()

    def _stop_reading(self) -> None:
        self.stopped = True
        self.pending = b""
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    # --- request processing ---
    def _next(self) -> None:
        if not self.queue or self.closed:
            return
        request = self.queue.popleft()
        # `current` first: resuming may parse waiting bytes, whose requests must queue behind this one.
        self.current = self.loop.create_task(self._run(request))
        if self.read_paused:
            self._flow()

    async def _run(self, request: Request) -> None:
        self.head_only = request.method == "HEAD"
        self.http10 = request.version == "1.0"
        self.streaming = False
        try:
            try:
                response = await self.server.handler(request)
            finally:
                request.body = b""  # the request's body is given back as soon as it is answered
                held = request.held
                if held and not self.closed:  # (a closed connection gave back everything it held)
                    request.held = 0
                    self.held -= held
                    self.budget.used -= held
                    if self.budget_paused:
                        self._flow()
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
        self._continue()

    def _continue(self) -> None:
        """After an answer: the next pipelined request, a deferred error answer, or wait for more."""
        if self.queue or self.deferred is not None:
            if self.write_paused:
                # The client is not reading our answers: answer no more until it does (resume_writing),
                # and give up on it if it does not within body_timeout.
                self._arm(self.limits.body_timeout)
            elif self.queue:
                self._next()
            else:
                self._answer_and_linger(self.deferred)  # type: ignore[arg-type]
            return
        if self.read_paused:
            self._flow()
        self._arm(self.limits.body_timeout if self.in_message else self.limits.keepalive_timeout)

    def _write_response(self, response: Response, keep: bool) -> None:
        status, body = response.status, response.body
        extra = b"" if keep else b"Connection: close\r\n"
        if status >= 200 and status not in (204, 304):
            extra += b"Content-Length: %d\r\n" % len(body)
        head = _head(status, response.headers, extra)
        transport = self.transport
        if self.head_only or not body:
            transport.write(head)  # type: ignore[union-attr]
        elif len(body) <= COPY_LIMIT:
            transport.write(head + body)  # type: ignore[union-attr]
        else:  # two writes: a large answer is not copied once more
            transport.write(head)  # type: ignore[union-attr]
            transport.write(body)  # type: ignore[union-attr]
            self._charge_unsent()

    def _charge_unsent(self) -> None:
        """Answer bytes the client has not taken stay in the transport's buffer: charged until it takes
        them (resume_writing) or is cut (send_timeout)."""
        unsent = self.transport.get_write_buffer_size()  # type: ignore[union-attr]
        if unsent > self.out_held:
            self.budget.force(unsent - self.out_held)
            self.held += unsent - self.out_held
            self.out_held = unsent

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

    async def write_chunk(self, data: bytes | bytearray) -> None:
        if self.closed:
            raise ConnectionResetError("client disconnected")
        if len(data) > COPY_LIMIT:
            # A large piece (a pre-buffer handed over, a big sealed frame) goes out COPY_LIMIT at a time,
            # each after the client took the previous ones: the transport never holds more than its
            # high-water mark + COPY_LIMIT of it (the whole piece there cost 4 MiB per slow client).
            view = memoryview(data)
            for start in range(0, len(view), COPY_LIMIT):
                await self.write_chunk(view[start : start + COPY_LIMIT])
            return
        if data and not self.head_only:
            transport = self.transport
            if self.http10:
                transport.write(data)  # type: ignore[union-attr]
            else:  # one write (one syscall) per piece
                transport.write(b"%x\r\n%s\r\n" % (len(data), data))  # type: ignore[union-attr]
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
    def _fail(self, err: RelayError) -> None:
        """Refuse a request we will not parse further: answer it (after the requests before it, which
        are still answered), then close (its remaining bytes are unusable)."""
        if self.closed or self.stopped:
            return
        request = self.request
        if self.server.on_reject is not None:
            method = request.method if request else "-"
            path = request.raw_path if request else "-"
            self.server.on_reject(method, path, err.status, err.code)
        self._stop_reading()
        if self.in_body and self.body_size:  # the refused request's body so far: dropped, given back
            self.release(self.body_size)
            self.body, self.body_size = bytearray(), 0
        if self.current is None and not self.queue:
            self._answer_and_linger(err)
        else:
            self.deferred = err

    def _answer_and_linger(self, err: RelayError) -> None:
        """Write an error answer and close without losing it: send FIN, then drop what the client still
        sends for a bounded time and size. Closing with unread bytes pending would reset the connection,
        and a reset can destroy the answer before the client reads it."""
        self.deferred = None
        transport = self.transport
        transport.write(_error_bytes(err))  # type: ignore[union-attr]
        if not transport.can_write_eof():  # type: ignore[union-attr]
            self.close()
            return
        self.closed = self.lingering = True
        transport.write_eof()  # type: ignore[union-attr]
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()  # type: ignore[union-attr]
        self._arm(LINGER_SECONDS)

    def _arm(self, seconds: float) -> None:
        self.deadline = self.loop.time() + seconds

    def _disarm(self) -> None:
        self.deadline = 0.0

    def on_send_timeout(self) -> None:
        """The client took none of our answer for `send_timeout` (nginx's send_timeout): cut it, which
        cancels its handler and so releases the provider connection and everything held for it."""
        self.write_deadline = 0.0
        if self.write_paused:
            log.info(
                "client stopped reading: cut", extra={"fields": {"send_timeout": self.limits.send_timeout}}
            )
            self.abort()

    def on_deadline(self) -> None:
        if self.lingering:
            self.transport.abort()  # type: ignore[union-attr]
            return
        if self.closed or self.current is not None:
            return
        if self.write_paused and (self.queue or self.deferred is not None):
            self.abort()  # answers pile up unread
        elif self.in_message:
            self._fail(RelayError(408, "body_timeout", "request not received in time"))
        else:
            self.close()  # idle keep-alive connection

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if (not self.closed or self.lingering) and self.transport is not None:
            self.closed, self.lingering = True, False
            self.transport.abort()


def _framing_error(pairs: list[tuple[str, str]], version: str) -> RelayError | None:
    """What nginx refuses in a request head and llhttp lets through: Transfer-Encoding other than one
    `chunked` (501 for an unknown coding, 400 for two headers or on HTTP/1.0), and a missing (HTTP/1.1)
    or repeated Host (400)."""
    te = [v for n, v in pairs if n.lower() == "transfer-encoding"]
    hosts = sum(1 for n, _ in pairs if n.lower() == "host")
    if te:
        if len(te) > 1:
            return RelayError(400, "bad_request", "more than one Transfer-Encoding header")
        if version == "1.0":
            return RelayError(400, "bad_request", "Transfer-Encoding on an HTTP/1.0 request")
        if te[0].strip().lower() != "chunked":
            return RelayError(501, "not_implemented", "only the chunked transfer coding is supported")
    if hosts > 1 or (hosts == 0 and version == "1.1"):
        return RelayError(400, "bad_request", "an HTTP/1.1 request needs exactly one Host header")
    return None
