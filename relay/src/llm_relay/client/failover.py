"""Failover between endpoints: a profile's `failover` list names other profiles tried in order.

Each endpoint keeps its own transport (route, proxy, TLS, envelope codec with its own epochs, key): one
relay's state never leaks to another. A request moves to the next endpoint on a transport failure
(connection refused, connect or read timeout, connection closed) or a 5xx/429 answer, and only before the
first byte of the answer body reached the caller: the first non-empty body chunk is read here, before the
response is handed over. After that nothing is replayed (a stream that breaks is the caller's error: a
second endpoint would generate a different answer, and the caller already holds the start of this one).

An endpoint that failed is skipped for `failover_cooldown` seconds (process-wide, COOLDOWN_ENTRIES at
most); when every endpoint is cooling, they are still tried, the one that failed first first.

Direct endpoints (`kind = "openai"` / `"anthropic"`) are providers reached without a relay: their API key
in `token`, the request body unchanged (the model id must be one that provider knows).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

from ._http import httpx
from .codec_v2 import EnvelopeRefused
from .config import Profile

LOG = logging.getLogger("llm_relay.client.failover")
# A request body larger than this is sent to one endpoint only (never held for a replay). serve-local
# accepts at most this much (its client_max_size), so every body it forwards can move on.
MAX_REPLAY_BYTES = 64 * 1024 * 1024
COOLDOWN_ENTRIES = 256  # failed endpoints remembered at most; the one whose cooldown ends first goes first
# Headers recomputed for the endpoint's own URL and body; credentials a direct endpoint must not receive
# from the caller (the OpenAI SDK's placeholder key, a local tool's key).
_DROP_REQUEST = frozenset({"host", "content-length", "transfer-encoding"})
_DROP_DIRECT = frozenset({"authorization", "x-api-key", "x-relay-token"})


class Cooldowns:
    """Endpoints that failed lately: key -> monotonic time until which they are skipped."""

    def __init__(self, limit: int = COOLDOWN_ENTRIES) -> None:
        self.limit = limit
        self._until: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()  # sync clients may share a profile across threads

    def fail(self, key: tuple[str, str, str], seconds: float) -> None:
        with self._lock:
            self._until[key] = time.monotonic() + seconds
            while len(self._until) > self.limit:
                del self._until[min(self._until, key=self._until.__getitem__)]

    def clear(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._until.pop(key, None)

    def until(self, key: tuple[str, str, str]) -> float:
        """When the endpoint's cooldown ends (monotonic), 0.0 when it is not cooling."""
        with self._lock:
            end = self._until.get(key, 0.0)
            if end and end <= time.monotonic():
                del self._until[key]
                return 0.0
            return end


COOLDOWNS = Cooldowns()


def endpoint_key(profile: Profile) -> tuple[str, str, str]:
    return (profile.name, profile.root, profile.connect_to)


def label(profile: Profile) -> str:
    """How logs name an endpoint: profile and host, never the path (the `path` token channel) or a key."""
    return f"profile {profile.name!r} ({profile.host})"


def endpoint_path(profile: Profile, path: str) -> str | None:
    """The path (below the endpoint's URL) for a request path relative to the primary's URL, or None
    when this endpoint cannot serve it. A relay serves every path. A direct OpenAI-compatible provider
    serves `/v1/...`. A direct Anthropic-compatible one serves `/v1/...` and the relay's provider paths
    `/<provider>/v1/...` (what ANTHROPIC_BASE_URL points at through serve-local), the provider name dropped.
    """
    if profile.kind == "relay":
        return path
    if path.startswith("/v1/"):
        return path
    if profile.kind == "anthropic":
        _, _, rest = path[1:].partition("/")
        if rest.startswith("v1/"):
            return "/" + rest
    return None


def retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def retryable_error(exc: BaseException) -> bool:
    """Transport failures move on; an unsealed answer only when it was a 5xx/429 (a proxy's 502 for a
    relay that is down): any other one may be forged, and the caller must see it (codec_v2)."""
    if isinstance(exc, EnvelopeRefused):
        return retryable_status(exc.status)
    return isinstance(exc, httpx.TransportError)


def _reason(exc: BaseException) -> str:
    """A failure in a log line: its type (exception texts may quote a URL, and a URL may hold a token)."""
    if isinstance(exc, EnvelopeRefused):
        return f"unsealed HTTP {exc.status} answer"
    return type(exc).__name__


def _direct_request(profile: Profile, request: object) -> object:
    """The request with this provider's key in its own header; the caller's credentials dropped."""
    headers = httpx.Headers(request.headers)
    for name in _DROP_DIRECT:
        headers.pop(name, None)
    if profile.kind == "anthropic":
        headers["x-api-key"] = profile.token
        headers.setdefault("anthropic-version", "2023-06-01")
    else:
        headers["Authorization"] = f"Bearer {profile.token}"
    return httpx.Request(
        request.method, request.url, headers=headers, content=request.content, extensions=request.extensions
    )


class DirectTransport(httpx.BaseTransport):
    """A provider reached without a relay (`kind = "openai"` / `"anthropic"`)."""

    def __init__(self, profile: Profile, inner: object) -> None:
        self.profile, self.inner = profile, inner

    def handle_request(self, request: object) -> object:
        request.read()
        return self.inner.handle_request(_direct_request(self.profile, request))

    def close(self) -> None:
        self.inner.close()


class AsyncDirectTransport(httpx.AsyncBaseTransport):
    def __init__(self, profile: Profile, inner: object) -> None:
        self.profile, self.inner = profile, inner

    async def handle_async_request(self, request: object) -> object:
        await request.aread()
        return await self.inner.handle_async_request(_direct_request(self.profile, request))

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Chain:
    """What both failover transports share: the order of endpoints, requests for them, logs (no I/O)."""

    def __init__(self, primary: Profile, endpoints: list[tuple[Profile, object]]) -> None:
        self.primary, self.endpoints = primary, endpoints
        self.prefix = urlsplit(primary.url).path.rstrip("/")
        self.cooldown = primary.failover_cooldown

    def attempts(self, request: object) -> list[tuple[Profile, object, str]]:
        """(profile, transport, raw path with query) per endpoint that serves this request: those not
        cooling in the configured order, then the cooling ones by the end of their cooldown."""
        raw = request.url.raw_path.decode("ascii")
        relative = raw[len(self.prefix) :] if self.prefix and raw.startswith(self.prefix) else raw
        path, sep, query = relative.partition("?")
        ready, cooling = [], []
        for profile, transport in self.endpoints:
            mapped = endpoint_path(profile, path)
            if mapped is None:
                continue
            attempt = (profile, transport, mapped + sep + query)
            end = COOLDOWNS.until(endpoint_key(profile))
            (cooling if end else ready).append((end, attempt))
        cooling.sort(key=lambda item: item[0])
        found = [attempt for _, attempt in ready + cooling]
        return found or [(self.primary, self.endpoints[0][1], relative)]

    def request_for(self, profile: Profile, request: object, raw_path: str, body: bytes) -> object:
        prefix = urlsplit(profile.url).path.rstrip("/")
        url = httpx.URL(profile.root).copy_with(raw_path=(prefix + raw_path).encode("ascii"))
        headers = httpx.Headers(request.headers)
        for name in _DROP_REQUEST:
            headers.pop(name, None)
        extensions = dict(request.extensions)
        if profile is not self.primary:  # the caller's timeout is for its own endpoint; others have theirs
            extensions["timeout"] = {
                "connect": profile.connect_timeout,
                "read": profile.timeout,
                "write": profile.timeout,
                "pool": profile.timeout,
            }
        return httpx.Request(request.method, url, headers=headers, content=body, extensions=extensions)

    def failed(self, profile: Profile, reason: str, last: bool) -> None:
        COOLDOWNS.fail(endpoint_key(profile), self.cooldown)
        then = "no endpoint left" if last else "trying the next endpoint"
        LOG.warning("failover: %s failed (%s); %s", label(profile), reason, then)

    def answered(self, profile: Profile) -> None:
        COOLDOWNS.clear(endpoint_key(profile))
        if profile is self.primary:
            LOG.info("answered by %s", label(profile))
        else:
            LOG.warning("failover: answered by %s instead of %s", label(profile), label(self.primary))


def _rebuilt(response: object, stream: object) -> object:
    return httpx.Response(
        response.status_code, headers=response.headers, stream=stream, extensions=response.extensions
    )


class _SyncPeeked(httpx.SyncByteStream):
    """The answer body with its first chunk already read (to know the endpoint delivers one)."""

    def __init__(self, first: bytes | None, rest: Iterator[bytes], response: object) -> None:
        self._first, self._rest, self._response = first, rest, response

    def __iter__(self) -> Iterator[bytes]:
        if self._first is None:
            return
        yield self._first
        yield from self._rest

    def close(self) -> None:
        self._response.close()


class _AsyncPeeked(httpx.AsyncByteStream):
    def __init__(self, first: bytes | None, rest: AsyncIterator[bytes], response: object) -> None:
        self._first, self._rest, self._response = first, rest, response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._first is None:
            return
        yield self._first
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class FailoverTransport(httpx.BaseTransport):
    """Synchronous failover over one transport per endpoint (`ask`, `openai_client`)."""

    def __init__(self, primary: Profile, endpoints: list[tuple[Profile, object]]) -> None:
        self.chain = _Chain(primary, endpoints)

    def handle_request(self, request: object) -> object:
        body = request.read()
        attempts = self.chain.attempts(request)
        if len(body) > MAX_REPLAY_BYTES:
            attempts = attempts[:1]
        for i, (profile, transport, raw_path) in enumerate(attempts):
            last = i == len(attempts) - 1
            try:
                response = transport.handle_request(self.chain.request_for(profile, request, raw_path, body))
            except Exception as exc:
                if not retryable_error(exc):
                    raise
                self.chain.failed(profile, _reason(exc), last)
                if last:
                    raise
                continue
            if retryable_status(response.status_code):
                self.chain.failed(profile, f"HTTP {response.status_code}", last)
                if last:
                    return response  # the caller sees the endpoint's own error
                response.close()
                continue
            if last:
                self.chain.answered(profile)
                return response
            try:
                rest = iter(response.stream)
                first = next((chunk for chunk in rest if chunk), None)
            except Exception as exc:
                response.close()
                if not retryable_error(exc):
                    raise
                self.chain.failed(profile, _reason(exc), last)
                continue
            self.chain.answered(profile)
            return _rebuilt(response, _SyncPeeked(first, rest, response))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def close(self) -> None:
        for _, transport in self.chain.endpoints:
            transport.close()


class AsyncFailoverTransport(httpx.AsyncBaseTransport):
    """Asynchronous failover (`serve-local`, `async_openai_client`)."""

    def __init__(self, primary: Profile, endpoints: list[tuple[Profile, object]]) -> None:
        self.chain = _Chain(primary, endpoints)

    async def handle_async_request(self, request: object) -> object:
        body = await request.aread()
        attempts = self.chain.attempts(request)
        if len(body) > MAX_REPLAY_BYTES:
            attempts = attempts[:1]
        for i, (profile, transport, raw_path) in enumerate(attempts):
            last = i == len(attempts) - 1
            outgoing = self.chain.request_for(profile, request, raw_path, body)
            try:
                response = await transport.handle_async_request(outgoing)
            except Exception as exc:
                if not retryable_error(exc):
                    raise
                self.chain.failed(profile, _reason(exc), last)
                if last:
                    raise
                continue
            if retryable_status(response.status_code):
                self.chain.failed(profile, f"HTTP {response.status_code}", last)
                if last:
                    return response
                await response.aclose()
                continue
            if last:
                self.chain.answered(profile)
                return response
            try:
                rest = aiter(response.stream)
                first = await _first_chunk(rest)
            except Exception as exc:
                await response.aclose()
                if not retryable_error(exc):
                    raise
                self.chain.failed(profile, _reason(exc), last)
                continue
            self.chain.answered(profile)
            return _rebuilt(response, _AsyncPeeked(first, rest, response))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def aclose(self) -> None:
        for _, transport in self.chain.endpoints:
            await transport.aclose()


async def _first_chunk(chunks: AsyncIterator[bytes]) -> bytes | None:
    async for chunk in chunks:
        if chunk:
            return chunk
    return None
