"""Forward one request to a provider and relay the answer: buffered JSON, or SSE chunk by chunk.

Streams have no total timeout, only the provider's idle timeout between chunks. If the client goes away,
the HTTP server cancels the handler and the `finally` below aborts the provider connection: that is what
stops generation, and billing, at the provider.

A route may list several providers (fallback): when one cannot be reached, times out before its answer's
head, or answers 429 or 5xx, the next is tried. That decision is always taken before the first byte goes
to the client; once the answer has started, a failure reaches the client as it is and nothing is retried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from urllib.parse import quote

from .errors import RelayError
from .headers import check_target, client_response_headers
from .http11 import Request, Response
from .metrics import Metrics
from .reply import PlainReply, StreamWriter
from .state import Provider
from .upstream import UpstreamError, _Connection
from .usage import StreamTap, Usage, from_json

# Failures that mean "this provider did not take the request": fall back to the next one (if any).
FALLBACK_KINDS = frozenset({"connect", "connect_timeout", "tls", "timeout", "reset"})
# Above this a non-SSE answer is streamed instead of buffered (v2 sealed too). 1 MiB holds every usual
# JSON answer; a larger pre-buffer only held more for clients that read slowly or not at all (4 MiB each
# before issue 25: 40 such clients held 160 MiB of it).
BUFFER_LIMIT = 1024 * 1024
# Envelope v1 must buffer a non-SSE answer to seal it in one token: up to this, and only while the
# connection's and the process's memory budgets have room for it (budget.py).
SEALED_LIMIT = 64 * 1024 * 1024


@dataclass
class Outbound:
    method: str
    path: str  # path below the provider's base URL ("/chat/completions"); base_path is added per provider
    query: str  # raw query string without "?"
    headers: list[tuple[str, str]]
    body: bytes
    json_doc: dict | None = None  # the parsed body, when it was parsed and is a JSON object
    is_json: bool = False  # the body is JSON (checked), even when too large to have been parsed

    def for_model(self, model: str) -> Outbound:
        """The same request for another model (a fallback entry's `model`); only JSON objects have one."""
        if not model or not self.is_json:
            return self
        doc = self.json_doc
        if doc is None:
            # A large body (app.JSON_CHECK_BYTES) is never parsed on the event loop: parsing and
            # re-serialising 8 MB stalled every other connection for 1.7 s (issue 25). Its closing brace
            # is replaced by one more member instead; JSON parsers keep the last of duplicate names
            # (Python's json, JavaScript's JSON.parse, Go's encoding/json), so this `model` wins.
            body = self.body
            end = len(body)
            while end and body[end - 1] in b" \t\r\n":
                end -= 1
            if body[end - 1 : end] != b"}":
                return self
            tail = b', "model": ' + json.dumps(model).encode() + b"}"
            return replace(self, body=b"".join((memoryview(body)[: end - 1], tail)))
        doc = {**doc, "model": model}
        return replace(self, body=json.dumps(doc).encode(), json_doc=doc)


@dataclass
class Outcome:
    status: int = 0
    bytes_out: int = 0
    streamed: bool = False
    upstream_error: str = ""
    client_gone: bool = False
    provider: str = ""  # the provider that answered (the last one tried)
    fallbacks: list[str] = field(default_factory=list)  # "provider:reason" of each attempt given up
    usage: Usage = field(default_factory=Usage)
    reply_headers: list[tuple[str, str]] = field(default_factory=list)  # added to the answer (CORS)


def _encode(value: str) -> bytes:
    # Our HTTP server decodes head bytes as latin-1, so this restores them exactly. Only an envelope can
    # carry characters beyond latin-1, and those are not valid in an HTTP head.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise RelayError(400, "invalid_header", "header or path characters not allowed in HTTP") from None


def _target(provider: Provider, out: Outbound, key: str) -> str:
    path = provider.base_path + out.path
    param = provider.auth_query
    if param is None:
        return path + "?" + out.query if out.query else path
    # The key goes in the query: any value the client put under that name is replaced, never forwarded.
    kept = [p for p in out.query.split("&") if p and p.partition("=")[0] != param] if out.query else []
    return path + "?" + "&".join([*kept, f"{param}={quote(key, safe='')}"])


def build_head(provider: Provider, out: Outbound) -> bytes:
    pool = provider.pool
    key = provider.next_key()
    target = pool.request_target(check_target(_target(provider, out, key)))
    parts = [_encode(f"{out.method} {target} HTTP/1.1\r\nHost: {pool.authority}\r\n")]
    owned = provider.owned_headers  # the provider's fixed headers and its auth header: ours, not the client's
    for name, value in out.headers:
        if name.lower() not in owned:
            parts.append(_encode(f"{name}: {value}\r\n"))
    for name, value in provider.extra_headers:
        parts.append(_encode(f"{name}: {value}\r\n"))
    if pool.proxy_auth and not pool.secure:
        parts.append(f"Proxy-Authorization: Basic {pool.proxy_auth}\r\n".encode())
    header = provider.auth_header
    if header == "Authorization":
        parts.append(f"Authorization: Bearer {key}\r\n".encode())
    elif header is not None:
        parts.append(f"{header}: {key}\r\n".encode())
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
    attempts: list[tuple[Provider, str]],
    out: Outbound,
    reply: PlainReply,
    outcome: Outcome,
    metrics: Metrics,
) -> Response | None:
    """Try each (provider, model) in order until one takes the request; relay that one's answer."""
    last = len(attempts) - 1
    for i, (provider, model) in enumerate(attempts):
        outcome.provider = provider.name
        try:
            conn = await _exchange(provider, out.for_model(model))
        except UpstreamError as exc:
            if i == last or exc.kind not in FALLBACK_KINDS:
                outcome.upstream_error = exc.kind
                raise
            metrics.upstream_errors[(provider.name, exc.kind)] += 1
            _fell_back(provider, exc.kind, outcome, metrics)
            continue
        if i < last and (conn.status == 429 or conn.status >= 500):
            conn.abort()  # its error body is not wanted: the next provider answers instead
            _fell_back(provider, str(conn.status), outcome, metrics)
            continue
        return await _answer(request, provider, conn, reply, outcome, metrics)
    raise AssertionError("a route has at least one provider")  # pragma: no cover


def _fell_back(provider: Provider, reason: str, outcome: Outcome, metrics: Metrics) -> None:
    outcome.fallbacks.append(f"{provider.name}:{reason}")
    metrics.fallbacks[(provider.name, reason)] += 1


async def _answer(
    request: Request,
    provider: Provider,
    conn: _Connection,
    reply: PlainReply,
    outcome: Outcome,
    metrics: Metrics,
) -> Response | None:
    ps = provider.settings
    held = 0  # answer bytes charged to the client's connection
    try:
        headers, content_type = client_response_headers(conn.headers)
        headers += outcome.reply_headers
        outcome.status = conn.status
        if content_type.startswith("text/event-stream"):
            return await _relay_stream(request, conn, headers, reply, outcome, metrics, ps.idle_timeout)
        # Pre-buffered (to answer with a Content-Length and read its usage) while it is small and the
        # memory budget has room for it, charged to the client's connection while held; otherwise the
        # answer is streamed as the provider sends it (a v2 envelope seals it frame by frame). Only v1,
        # which has no frames for a non-SSE answer, must buffer it whole, within the budget, or fail.
        chunks = bytearray()
        client = request.conn
        limit = BUFFER_LIMIT if reply.streams_raw else min(SEALED_LIMIT, client.limits.connection_budget)
        while chunk := await conn.read(ps.idle_timeout):
            if len(chunks) + len(chunk) > limit or not client.charge(len(chunk)):
                if not reply.streams_raw:
                    raise UpstreamError("too_large", "provider answer too large to seal in an envelope")
                writer = await reply.open_raw_stream(request, conn.status, headers)
                outcome.streamed = True
                chunks += chunk
                await writer.write(chunks)  # no copy: handed over as the client takes it
                chunks = bytearray()
                client.release(held)
                held = 0
                return await _pump(request, conn, writer, b"", outcome, ps.idle_timeout)
            chunks += chunk
            held += len(chunk)
        body = bytes(chunks)
        outcome.bytes_out = len(body)
        if conn.status < 300 and "json" in content_type:
            from_json(body, outcome.usage)
        return reply.full(conn.status, headers, body)
    except UpstreamError as exc:
        outcome.upstream_error = exc.kind
        raise
    finally:
        if held:
            request.conn.release(held)
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
    tap = StreamTap(outcome.usage) if conn.status < 300 else None
    try:
        if first:
            await writer.write(first)
        while chunk := await conn.read(idle_timeout):
            if tap is not None:
                tap.feed(chunk)
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
