"""Forward one request to a provider and relay the answer: buffered JSON, or SSE chunk by chunk.

Streams have no total timeout, only the provider's idle timeout between chunks. If the client goes away,
the HTTP server cancels the handler and the `finally` below aborts the provider connection: that is what
stops generation, and billing, at the provider.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RelayError
from .headers import check_target, client_response_headers
from .http11 import Request, Response
from .metrics import Metrics
from .reply import PlainReply, StreamWriter
from .state import Provider
from .upstream import UpstreamError, _Connection

BUFFER_LIMIT = 4 * 1024 * 1024  # plain mode: above this a non-SSE answer is streamed instead of buffered
SEALED_LIMIT = 64 * 1024 * 1024  # envelope mode must buffer a non-SSE answer to seal it in one token


@dataclass
class Outbound:
    method: str
    path_qs: str  # path below the provider's base (already prefixed with base_path) + "?query"
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Outcome:
    status: int = 0
    bytes_out: int = 0
    streamed: bool = False
    upstream_error: str = ""
    client_gone: bool = False


def _encode(value: str) -> bytes:
    # Our HTTP server decodes head bytes as latin-1, so this restores them exactly. Only an envelope can
    # carry characters beyond latin-1, and those are not valid in an HTTP head.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise RelayError(400, "invalid_header", "header or path characters not allowed in HTTP") from None


def build_head(provider: Provider, out: Outbound) -> bytes:
    pool = provider.pool
    parts = [
        _encode(
            f"{out.method} {pool.request_target(check_target(out.path_qs))} HTTP/1.1\r\n"
            f"Host: {pool.authority}\r\n"
        )
    ]
    extra = {n.lower() for n, _ in provider.extra_headers}
    for name, value in out.headers:
        if name.lower() not in extra:
            parts.append(_encode(f"{name}: {value}\r\n"))
    for name, value in provider.extra_headers:
        parts.append(_encode(f"{name}: {value}\r\n"))
    if pool.proxy_auth and not pool.secure:
        parts.append(f"Proxy-Authorization: Basic {pool.proxy_auth}\r\n".encode())
    parts.append(f"Authorization: Bearer {provider.next_key()}\r\n".encode())
    if out.body or out.method in ("POST", "PUT", "PATCH"):
        parts.append(b"Content-Length: %d\r\n" % len(out.body))
    parts.append(b"\r\n")
    return b"".join(parts)


# Methods RFC 9110 §9.2.1 calls safe: sending one twice changes nothing and bills nothing.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _exchange(provider: Provider, out: Outbound) -> _Connection:
    """Send the request. Only a safe request is sent again (once, on a fresh connection) when a pooled
    connection turns out dead: anything else may have reached the provider and been acted on (a
    completion billed) even if no byte came back, so it fails with 502 instead. Connections found dead
    before anything is written (UpstreamPool.acquire) are not a re-send: nothing was sent on them."""
    pool = provider.pool
    ps = provider.settings
    head = build_head(provider, out)
    head_only = out.method == "HEAD"
    conn, reused = await pool.acquire()
    try:
        await conn.start(head, out.body, head_only, ps.response_timeout)
        return conn
    except UpstreamError as exc:
        conn.abort()
        if not (reused and exc.kind == "reset" and not conn.got_bytes and out.method in SAFE_METHODS):
            raise
    conn = await pool._connect()
    try:
        await conn.start(head, out.body, head_only, ps.response_timeout)
    except BaseException:
        conn.abort()
        raise
    return conn


async def forward(
    request: Request,
    provider: Provider,
    out: Outbound,
    reply: PlainReply,
    outcome: Outcome,
    metrics: Metrics,
) -> Response | None:
    ps = provider.settings
    try:
        conn = await _exchange(provider, out)
    except UpstreamError as exc:
        outcome.upstream_error = exc.kind
        raise
    try:
        headers, content_type = client_response_headers(conn.headers)
        outcome.status = conn.status
        if content_type.startswith("text/event-stream"):
            return await _relay_stream(request, conn, headers, reply, outcome, metrics, ps.idle_timeout)
        chunks: list[bytes] = []
        size = 0
        limit = SEALED_LIMIT if reply.sealed else BUFFER_LIMIT
        while chunk := await conn.read(ps.idle_timeout):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if reply.sealed:
                    raise UpstreamError("too_large", "provider answer too large to seal in an envelope")
                writer = await reply.open_stream(request, conn.status, headers)
                return await _pump(request, conn, writer, b"".join(chunks), outcome, ps.idle_timeout)
        body = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        outcome.bytes_out = size
        return reply.full(conn.status, headers, body)
    except UpstreamError as exc:
        outcome.upstream_error = exc.kind
        raise
    finally:
        if conn.reusable:
            provider.pool.release(conn)
        else:
            conn.abort()


async def _relay_stream(
    request: Request,
    conn: _Connection,
    headers: list[tuple[str, str]],
    reply: PlainReply,
    outcome: Outcome,
    metrics: Metrics,
    idle_timeout: float,
) -> Response | None:
    metrics.streams += 1
    try:
        writer = await reply.open_stream(request, conn.status, headers)
        return await _pump(request, conn, writer, b"", outcome, idle_timeout)
    finally:
        metrics.streams -= 1


async def _pump(
    request: Request,
    conn: _Connection,
    writer: StreamWriter,
    first: bytes,
    outcome: Outcome,
    idle_timeout: float,
) -> Response | None:
    outcome.streamed = True
    try:
        if first:
            await writer.write(first)
        while chunk := await conn.read(idle_timeout):
            await writer.write(chunk)
        await writer.finish()
    except UpstreamError as exc:
        # Headers are gone already: the only honest signal left is to cut the client connection, so it
        # sees a truncated stream instead of a clean end.
        outcome.upstream_error = exc.kind
        request.conn.abort()
    finally:
        outcome.bytes_out = writer.bytes_out
    return None
