"""The client side of Envelope v2 (llm_relay.envelope_v2): seal a request, open its framed answer.

The outer request is what any API client sends: `POST <relay>/` with `Content-Type:
application/octet-stream`, `Accept: */*` and the HTTP library's own User-Agent; nothing names the tool, the
API, the model or the path. Every answer the relay seals is status 200 with the same content type; the
frames inside carry the real status, and each is bound to this request's nonce, numbered, and followed by
a terminator, so a swapped, reordered, duplicated, dropped or truncated answer raises instead of being used.
An answer that is not sealed at all raises too (EnvelopeRefused): once a client holds a v2 key, nothing on
the path can make it speak v1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from llm_relay import envelope, envelope_v2

from . import access
from ._http import httpx

V2_PATH = "/"
OUTER_HEADERS = {"Content-Type": envelope_v2.CONTENT_TYPE, "Accept": "*/*"}
# Not copied from an opened inner response: the body we hand over is already decoded and complete.
DROP_OPENED = frozenset({"content-length", "transfer-encoding", "content-encoding", "connection"})


class EnvelopeRefused(httpx.RemoteProtocolError):
    """A v2 request got an answer that is not sealed. Anyone on the path can produce such an answer (a
    proxy forging `401 missing_token` did, to make clients fall back to v1), so it is never acted on:
    no fallback, no retry; the caller gets this error, which says how to find out who answered."""


class AccessRefused(EnvelopeRefused):
    """The unsealed answer was Cloudflare Access refusing the request at the edge (access.py): the relay
    never saw it. The message says whether the service token was sent and what to do."""


def reply_failure(exc: envelope.EnvelopeError) -> Exception:
    return httpx.RemoteProtocolError(f"sealed answer from the relay: {exc}")


def is_v2_answer(response: object) -> bool:
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return response.status_code == 200 and ctype == envelope_v2.CONTENT_TYPE


def plain_answer(response: object, body: bytes) -> str:
    """`401 missing_token` (the code of an OpenAI-shaped error body) or `502 text/html`: for messages."""
    try:
        code = httpx.Response(response.status_code, content=body).json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    return f"{response.status_code} {str(code)[:64]}"


def refusal(response: object, body: bytes) -> EnvelopeRefused:
    if response.status_code == 407:  # the configured proxy's own demand, about the proxy hop only
        return EnvelopeRefused(
            "the proxy requires authentication (407): use proxy = http://user:password@host:port"
        )
    refused_at_edge = access.refusal_message(response, body)
    if refused_at_edge is not None:  # Cloudflare Access stopped it: say that, not "something on the way"
        return AccessRefused(refused_at_edge)
    relay_denied = access.relay_denied_message(body)
    if relay_denied is not None:  # the relay's [access] check runs before it reads (and opens) the body
        return EnvelopeRefused(relay_denied)
    return EnvelopeRefused(
        f"the answer to an encrypted (envelope v2) request was not sealed ({plain_answer(response, body)}): "
        "the relay seals every answer it gives to an envelope it could open, so this came from something "
        "on the way (a proxy) or from a relay that does not know this client's key. Not falling back to "
        'envelope v1. Run `llm-relay doctor` to see who answers; `envelope = "v1"` in the client config '
        "is only for a relay that speaks nothing else"
    )


class V2Codec:
    def __init__(self, key_text: str, prefix: str, pad_to: int) -> None:
        self.key = envelope_v2.ClientKey(key_text)
        self.prefix, self.pad_to = prefix, pad_to

    def outgoing(self, request: object, inner: envelope.InnerRequest) -> tuple[object, bytes]:
        sealed, nonce = envelope_v2.seal_request(self.key, inner, pad_to=self.pad_to)
        url = request.url.copy_with(raw_path=(self.prefix + V2_PATH).encode())
        outer = httpx.Request(
            "POST", url, headers=OUTER_HEADERS, content=sealed, extensions=request.extensions
        )
        return outer, nonce

    @staticmethod
    def response(request: object, opener: envelope_v2.ReplyOpener, **content: object) -> object:
        assert opener.head is not None
        status, headers = opener.head
        kept = [(k, v) for k, v in headers.items() if k.lower() not in DROP_OPENED]
        return httpx.Response(status, headers=kept, request=request, **content)

    @staticmethod
    def streams(opener: envelope_v2.ReplyOpener) -> bool:
        assert opener.head is not None
        ctype = next((v for k, v in opener.head[1].items() if k.lower() == "content-type"), "")
        return ctype.startswith("text/event-stream")

    def open_sync(self, request: object, outer: object, nonce: bytes) -> object:
        opener = envelope_v2.ReplyOpener(self.key, nonce)
        chunks = iter(outer.stream)
        try:
            first = _until_head(opener, chunks)
            if self.streams(opener):
                return self.response(request, opener, stream=_SyncFrames(opener, first, chunks, outer))
            parts = first + [p for chunk in chunks for p in opener.feed(chunk)]
            opener.close()
        except envelope.EnvelopeError as exc:
            outer.close()
            raise reply_failure(exc) from exc
        outer.close()
        return self.response(request, opener, content=b"".join(parts))

    async def open_async(self, request: object, outer: object, nonce: bytes) -> object:
        opener = envelope_v2.ReplyOpener(self.key, nonce)
        chunks = aiter(outer.stream)
        try:
            first: list[bytes] = []
            while opener.head is None:
                chunk = await anext(chunks, None)
                if chunk is None:
                    opener.close()
                first += opener.feed(chunk)
            if self.streams(opener):
                return self.response(request, opener, stream=_AsyncFrames(opener, first, chunks, outer))
            async for chunk in chunks:
                first += opener.feed(chunk)
            opener.close()
        except envelope.EnvelopeError as exc:
            await outer.aclose()
            raise reply_failure(exc) from exc
        await outer.aclose()
        return self.response(request, opener, content=b"".join(first))


def _until_head(opener: envelope_v2.ReplyOpener, chunks: Iterator[bytes]) -> list[bytes]:
    parts: list[bytes] = []
    while opener.head is None:
        chunk = next(chunks, None)
        if chunk is None:
            opener.close()  # raises: truncated before the head
        parts += opener.feed(chunk)
    return parts


class _SyncFrames(httpx.SyncByteStream):
    def __init__(self, opener, first: list[bytes], chunks: Iterator[bytes], outer: object) -> None:
        self._opener, self._first, self._chunks, self._outer = opener, first, chunks, outer
        self._last = b""

    def __iter__(self) -> Iterator[bytes]:
        try:
            for part in self._first:
                self._last = part
                yield part
            for chunk in self._chunks:
                for part in self._opener.feed(chunk):
                    self._last = part
                    yield part
            self._opener.close()
        except envelope.EnvelopeError as exc:
            raise reply_failure(exc) from exc

    def close(self) -> None:
        try:
            if _stopped_at_done(self._opener, self._last):
                for chunk in self._chunks:
                    self._opener.feed(chunk)
                    if self._opener.ended:
                        break
                self._opener.close()
        except envelope.EnvelopeError as exc:
            raise reply_failure(exc) from exc
        finally:
            self._outer.close()


class _AsyncFrames(httpx.AsyncByteStream):
    def __init__(self, opener, first: list[bytes], chunks: AsyncIterator[bytes], outer: object) -> None:
        self._opener, self._first, self._chunks, self._outer = opener, first, chunks, outer
        self._last = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            for part in self._first:
                self._last = part
                yield part
            async for chunk in self._chunks:
                for part in self._opener.feed(chunk):
                    self._last = part
                    yield part
            self._opener.close()
        except envelope.EnvelopeError as exc:
            raise reply_failure(exc) from exc

    async def aclose(self) -> None:
        try:
            if _stopped_at_done(self._opener, self._last):
                async for chunk in self._chunks:
                    self._opener.feed(chunk)
                    if self._opener.ended:
                        break
                self._opener.close()
        except envelope.EnvelopeError as exc:
            raise reply_failure(exc) from exc
        finally:
            await self._outer.aclose()


def _stopped_at_done(opener: envelope_v2.ReplyOpener, last: bytes) -> bool:
    """The OpenAI SDK stops reading at the `[DONE]` event, before the relay's terminator that follows it
    directly: closing there reads on to the terminator, so a stream cut right after `[DONE]` is caught too.
    (A caller that stops anywhere else abandons the answer on purpose; nothing is checked then.)"""
    return not opener.ended and last.startswith(b"data: [DONE]")


def relay_epoch(root: str, key_text: str, token: str) -> str:
    """The epoch of the relay process at `root` (server/replay.py), for tools that seal envelopes
    themselves ahead of time (the benchmarks): one sealed probe, whose 409 names it."""
    key = envelope_v2.ClientKey(key_text)
    body, nonce = envelope_v2.seal_request(key, envelope.InnerRequest("GET", "/v1/providers", token=token))
    answer = httpx.post(root.rstrip("/") + V2_PATH, content=body, headers=OUTER_HEADERS, trust_env=False)
    opener = envelope_v2.ReplyOpener(key, nonce)
    opener.feed(answer.content)
    opener.close()
    if opener.head is None:  # close() raises on a truncated reply; a reply without a head is no answer
        raise envelope.EnvelopeError(f"the relay sent no sealed head (HTTP {answer.status_code})")
    epoch = {k.lower(): v for k, v in opener.head[1].items()}.get("x-relay-epoch", "")
    if not epoch:
        raise envelope.EnvelopeError(f"the relay named no epoch (inner status {opener.head[0]})")
    return epoch
