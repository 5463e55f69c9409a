"""HTTP transports that turn an ordinary OpenAI-style request into one the relay accepts.

Plain mode adds the client token through the configured channel (path prefix `/t/<token>`, `X-Relay-Token`
or `Authorization: Bearer`) and drops whatever `Authorization` the caller set (the OpenAI SDK always sends
its own placeholder key; corporate proxies strip that header anyway).

Encrypting mode seals the whole request - method, path, headers, body and token - into an envelope and
opens the answer, a buffered one or an SSE stream decrypted event by event as it arrives; the caller (the
OpenAI SDK, serve-local) sees a normal response either way. Envelope v2 (codec_v2.py) is spoken unless the
configuration says `envelope = "v1"` (a Fernet token posted to `<relay>/envelope`, for a relay that speaks
nothing else). There is no automatic fallback: the only signal for one would be a plain answer, which
anyone on the path can forge (codec_v2.EnvelopeRefused).

Every envelope names the relay process it is meant for (its epoch, server/replay.py): a relay that was
restarted, or another replica behind the same name, answers a sealed `409 envelope_epoch` with its own, and
the request is sealed again for it (up to EPOCH_TRIES times).
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

from llm_relay import envelope

from . import access
from ._http import httpx
from .codec_v2 import DROP_OPENED, V2Codec, is_v2_answer, refusal
from .config import Profile

ENVELOPE_PATH = "/envelope"  # v1 only; v2 posts to the relay's root
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    }
)
# Never forwarded inside an envelope: hop-by-hop, recomputed, or credentials meant for someone else (the
# Cloudflare Access headers are the edge's, added outside by access.wrap).
_DROP_INNER = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    "x-relay-token",
    "accept-encoding",
    "cookie",
}
_DROP_INNER |= access.HEADER_NAMES
_DROP_OPENED = DROP_OPENED
EPOCH_HEADER = "x-relay-epoch"  # server/replay.py's EPOCH_HEADER, inside the sealed answer
# Sends of one request while relay processes answer "not my epoch". The first request of a process needs
# two (it learns the epoch). Behind a balancer spreading single requests over N replicas, each send names
# one of the epochs learnt so far, picked at random (a fixed pick could alternate with a round-robin
# balancer forever): it reaches that replica with probability 1/N, so with N = 2 a request needs 2 sends
# on average and 16 sends leave 1 in 32768 failing.
EPOCH_TRIES = 16
KNOWN_EPOCHS = 8  # epochs kept at most (replicas, restarts); the least recently seen goes first
# An epoch not seen for this long (neither announced in a 409 nor accepted) is forgotten: a replica that
# restarted never names its old epoch again, and picking dead epochs would cost sends.
EPOCH_FRESH_S = 120.0


class RelayCodec:
    """What both transports share: request rewriting and envelope opening (no I/O)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.prefix = urlsplit(profile.url).path.rstrip("/")
        self.fernet = envelope.make_fernet([profile.fernet_key]) if profile.encrypting else None
        self.v2 = V2Codec(profile.fernet_key, self.prefix, profile.pad_to) if profile.encrypting else None
        self.version = 1 if profile.envelope == "v1" else 2
        self.reason = {
            "v1": "envelope = v1 in the configuration",
            "v2": "envelope = v2 in the configuration",
            "auto": "the default: v2 only, never a fallback",
        }[profile.envelope]
        self.epochs: dict[str, float] = {}  # relay processes' epochs -> when last seen alive (monotonic)

    def learn_epoch(self, response: object) -> bool:
        """True when the relay refused the envelope for naming another process (sealed 409 with its
        epoch, which is now ours): the caller seals the request again."""
        if self.fernet is None or response.status_code != 409:
            return False
        epoch = response.headers.get(EPOCH_HEADER, "")
        try:
            valid = bool(envelope.check_epoch(epoch))
        except envelope.EnvelopeError:
            return False
        if valid:
            self.confirm(epoch, learnt=True)
        return valid

    def confirm(self, epoch: str, learnt: bool = False) -> None:
        """`epoch` is alive: a relay announced it, or accepted an envelope naming it."""
        if epoch and (learnt or epoch in self.epochs):
            self.epochs[epoch] = time.monotonic()
            if len(self.epochs) > KNOWN_EPOCHS:
                del self.epochs[min(self.epochs, key=self.epochs.__getitem__)]

    def pick_epoch(self) -> str:
        """One of the epochs seen alive lately, at random; "" (learn it) when there is none."""
        stale = time.monotonic() - EPOCH_FRESH_S
        for epoch in [e for e, seen in self.epochs.items() if seen < stale]:
            del self.epochs[epoch]
        return random.choice(list(self.epochs)) if self.epochs else ""  # noqa: S311 - not a secret

    def relay_path(self, url: object) -> str:
        """The request path relative to the relay root (`/v1/chat/completions`)."""
        path = httpx.URL(str(url)).path
        return path[len(self.prefix) :] if self.prefix and path.startswith(self.prefix) else path

    def plain_request(self, request: object, body: bytes) -> object:
        headers = httpx.Headers(request.headers)
        headers.pop("authorization", None)
        url = request.url
        channel = self.profile.token_channel
        if channel == "path":
            url = url.copy_with(
                raw_path=f"{self.prefix}/t/{self.profile.token}".encode() + url.raw_path[len(self.prefix) :]
            )
        elif channel == "header":
            headers["X-Relay-Token"] = self.profile.token
        else:
            headers["Authorization"] = f"Bearer {self.profile.token}"
        return httpx.Request(
            request.method, url, headers=headers, content=body, extensions=request.extensions
        )

    def inner_request(self, request: object, body: bytes, epoch: str = "") -> envelope.InnerRequest:
        return envelope.InnerRequest(
            method=request.method,
            path=self.relay_path(request.url),
            query=request.url.query.decode("ascii"),
            headers={k: v for k, v in request.headers.items() if k.lower() not in _DROP_INNER},
            body=body,
            token=self.profile.token,
            epoch=epoch,
        )

    def sealed_request(self, request: object, body: bytes, epoch: str = "") -> object:
        """Envelope v1 (the transition): the content type still names it; the rest is generic."""
        sealed = envelope.seal_request(self.fernet, self.inner_request(request, body, epoch))
        url = request.url.copy_with(raw_path=(self.prefix + ENVELOPE_PATH).encode())
        headers = {"Content-Type": envelope.CONTENT_TYPE, "Accept": "*/*"}
        return httpx.Request("POST", url, headers=headers, content=sealed, extensions=request.extensions)

    def outgoing(self, request: object, body: bytes, epoch: str = "") -> object:
        if self.fernet:
            return self.sealed_request(request, body, epoch)
        return self.plain_request(request, body)

    def sealed_v2(self, request: object, body: bytes, epoch: str = "") -> tuple[object, bytes] | None:
        """(outer request, nonce) while v2 is in use; None once on v1 (or in plain mode)."""
        if self.v2 is None or self.version != 2:
            return None
        return self.v2.outgoing(request, self.inner_request(request, body, epoch))

    @staticmethod
    def kind(response: object) -> str:
        """`sealed`, `stream` (sealed SSE) or `plain` (an error given before the envelope was opened)."""
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == envelope.CONTENT_TYPE:
            return "sealed"
        if ctype == "text/event-stream" and response.status_code == 200:
            return "stream"
        return "plain"

    def opened(self, request: object, body: bytes) -> object:
        inner = envelope.open_response(self.fernet, body)
        headers = [(k, v) for k, v in inner.headers.items() if k.lower() not in _DROP_OPENED]
        return httpx.Response(inner.status, headers=headers, content=inner.body, request=request)

    def stream_head(self, request: object, token: bytes, stream: object) -> object:
        status, headers = envelope.open_stream_head(self.fernet, token)
        kept = [(k, v) for k, v in headers.items() if k.lower() not in _DROP_OPENED]
        return httpx.Response(status, headers=kept, stream=stream, request=request)

    def event(self, token: bytes) -> bytes:
        try:
            return envelope.open_stream_event(self.fernet, token)
        except envelope.EnvelopeError as exc:
            raise httpx.RemoteProtocolError(f"encrypted stream from the relay: {exc}") from None


class _SyncOpenedStream(httpx.SyncByteStream):
    def __init__(self, codec: RelayCodec, tokens: Iterator[bytes], outer: object) -> None:
        self._codec, self._tokens, self._outer = codec, tokens, outer

    def __iter__(self) -> Iterator[bytes]:
        for token in self._tokens:
            yield self._codec.event(token)

    def close(self) -> None:
        self._outer.close()


class _AsyncOpenedStream(httpx.AsyncByteStream):
    def __init__(self, codec: RelayCodec, tokens: AsyncIterator[bytes], outer: object) -> None:
        self._codec, self._tokens, self._outer = codec, tokens, outer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for token in self._tokens:
            yield self._codec.event(token)

    async def aclose(self) -> None:
        await self._outer.aclose()


def _sync_tokens(chunks: Iterator[bytes]) -> Iterator[bytes]:
    splitter = envelope.SSESplitter()
    for chunk in chunks:
        yield from envelope.iter_sse_data(splitter, chunk)


async def _async_tokens(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    splitter = envelope.SSESplitter()
    async for chunk in chunks:
        for token in envelope.iter_sse_data(splitter, chunk):
            yield token


def _no_head(request: object) -> Exception:
    return httpx.RemoteProtocolError(
        "the relay closed the encrypted stream before its first event", request=request
    )


class RelayTransport(httpx.BaseTransport):
    """Synchronous transport (the OpenAI SDK's `OpenAI` client, the CLI)."""

    def __init__(self, profile: Profile, inner: object) -> None:
        self.codec = RelayCodec(profile)
        self.inner = inner

    def handle_request(self, request: object) -> object:
        body = request.read()
        for _ in range(EPOCH_TRIES - 1):
            epoch = self.codec.pick_epoch()
            response = self._once(request, body, epoch)
            if not self.codec.learn_epoch(response):
                self.codec.confirm(epoch)
                return response
            response.read()
            response.close()
        return self._once(request, body, self.codec.pick_epoch())

    def _once(self, request: object, body: bytes, epoch: str) -> object:
        v2 = self.codec.sealed_v2(request, body, epoch)
        if v2 is not None:
            outer = self.inner.handle_request(v2[0])
            if is_v2_answer(outer):
                return self.codec.v2.open_sync(request, outer, v2[1])
            try:
                raise refusal(outer, outer.read())
            finally:
                outer.close()
        outer = self.inner.handle_request(self.codec.outgoing(request, body, epoch))
        kind = self.codec.kind(outer) if self.codec.fernet else "plain"
        if kind == "plain":
            return outer
        if kind == "sealed":
            try:
                return self.codec.opened(request, outer.read())
            finally:
                outer.close()
        tokens = _sync_tokens(iter(outer.stream))
        head = next(tokens, None)
        if head is None:
            outer.close()
            raise _no_head(request)
        return self.codec.stream_head(request, head, _SyncOpenedStream(self.codec, tokens, outer))

    def close(self) -> None:
        self.inner.close()


class AsyncRelayTransport(httpx.AsyncBaseTransport):
    """Asynchronous transport (serve-local, `AsyncOpenAI`)."""

    def __init__(self, profile: Profile, inner: object) -> None:
        self.codec = RelayCodec(profile)
        self.inner = inner

    async def handle_async_request(self, request: object) -> object:
        body = await request.aread()
        for _ in range(EPOCH_TRIES - 1):
            epoch = self.codec.pick_epoch()
            response = await self._once(request, body, epoch)
            if not self.codec.learn_epoch(response):
                self.codec.confirm(epoch)
                return response
            await response.aread()
            await response.aclose()
        return await self._once(request, body, self.codec.pick_epoch())

    async def _once(self, request: object, body: bytes, epoch: str) -> object:
        v2 = self.codec.sealed_v2(request, body, epoch)
        if v2 is not None:
            outer = await self.inner.handle_async_request(v2[0])
            if is_v2_answer(outer):
                return await self.codec.v2.open_async(request, outer, v2[1])
            try:
                raise refusal(outer, await outer.aread())
            finally:
                await outer.aclose()
        outer = await self.inner.handle_async_request(self.codec.outgoing(request, body, epoch))
        kind = self.codec.kind(outer) if self.codec.fernet else "plain"
        if kind == "plain":
            return outer
        if kind == "sealed":
            try:
                return self.codec.opened(request, await outer.aread())
            finally:
                await outer.aclose()
        tokens = _async_tokens(aiter(outer.stream))
        head = await anext(tokens, None)
        if head is None:
            await outer.aclose()
            raise _no_head(request)
        return self.codec.stream_head(request, head, _AsyncOpenedStream(self.codec, tokens, outer))

    async def aclose(self) -> None:
        await self.inner.aclose()
