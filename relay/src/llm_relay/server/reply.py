"""How an answer goes back to the client: as is, or sealed in Envelope v2 or v1 (CONTRIBUTING.md).

The forwarder and the local routes produce (status, headers, body) or a stream of chunks; a Reply turns
them into responses of our HTTP server (http11.py), so envelope mode is one object swapped in, not a
branch in every route.
"""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, MultiFernet

from llm_relay import envelope, envelope_v2

from .errors import RelayError
from .headers import as_dict
from .http11 import Request, Response

STREAM_HEADERS = [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
JSON_CT = ("Content-Type", "application/json")


class StreamWriter:
    def __init__(self, request: Request) -> None:
        self.conn = request.conn
        self.bytes_out = 0

    async def write(self, chunk: bytes) -> None:
        self.bytes_out += len(chunk)
        await self.conn.write_chunk(chunk)

    async def finish(self) -> None:
        self.conn.end_stream()


class SealedStreamWriter(StreamWriter):
    """Re-frames the provider's SSE stream: one Fernet token per upstream event."""

    def __init__(self, request: Request, fernet: Fernet | MultiFernet) -> None:
        super().__init__(request)
        self.fernet = fernet
        self.splitter = envelope.SSESplitter()

    async def write(self, chunk: bytes) -> None:
        events = self.splitter.feed(chunk)
        if events:
            out = b"".join(envelope.seal_stream_event(self.fernet, e) for e in events)
            await super().write(out)

    async def finish(self) -> None:
        rest = self.splitter.flush()
        if rest:
            await super().write(envelope.seal_stream_event(self.fernet, rest))
        await super().finish()


class PlainReply:
    sealed = False
    streams_raw = True  # a non-SSE answer can be streamed as it comes (see forward._answer)

    def full(self, status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
        return Response(status, headers, body)

    def json(self, status: int, doc: object, headers: dict[str, str] | None = None) -> Response:
        return self.full(status, [JSON_CT, *(headers or {}).items()], json.dumps(doc).encode())

    def error(self, err: RelayError) -> Response:
        resp = self.full(err.status, [JSON_CT, *err.headers.items()], err.body())
        resp.close = err.close_connection
        return resp

    async def open_stream(
        self, request: Request, status: int, headers: list[tuple[str, str]]
    ) -> StreamWriter:
        present = {n.lower() for n, _ in headers}  # the provider's own Cache-Control wins: never two
        request.conn.start_stream(
            status, [*headers, *(h for h in STREAM_HEADERS if h[0].lower() not in present)]
        )
        return StreamWriter(request)

    async def open_raw_stream(
        self, request: Request, status: int, headers: list[tuple[str, str]]
    ) -> StreamWriter:
        """A stream of a non-SSE answer (too large to buffer): its bytes as they come."""
        return await self.open_stream(request, status, headers)


class SealedReply(PlainReply):
    """Envelope v1: answers after a successful decryption are sealed; the outer status is 200 (v1 clients
    read the inner one), so the proxy no longer sees 401, 429 or 500."""

    sealed = True
    streams_raw = False  # a v1 answer that is not SSE is one Fernet token: buffered whole

    def __init__(self, fernet: Fernet | MultiFernet) -> None:
        self.fernet = fernet

    def full(self, status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
        sealed = envelope.seal_response(self.fernet, envelope.InnerResponse(status, as_dict(headers), body))
        return Response(200, [("Content-Type", envelope.CONTENT_TYPE)], sealed)

    async def open_stream(
        self, request: Request, status: int, headers: list[tuple[str, str]]
    ) -> StreamWriter:
        request.conn.start_stream(200, [("Content-Type", "text/event-stream"), *STREAM_HEADERS])
        writer = SealedStreamWriter(request, self.fernet)
        await StreamWriter.write(writer, envelope.seal_stream_head(self.fernet, status, as_dict(headers)))
        return writer


# Every sealed v2 answer, buffered or streamed, errors included: status 200 and these headers only.
V2_HEADERS = [("Content-Type", envelope_v2.CONTENT_TYPE), ("Cache-Control", "no-store")]


class SealedStreamWriterV2(StreamWriter):
    """One DATA frame per upstream SSE event, then the END frame: the client detects a cut stream."""

    def __init__(self, request: Request, sealer: envelope_v2.ReplySealer) -> None:
        super().__init__(request)
        self.sealer = sealer
        self.splitter = envelope.SSESplitter()

    async def write(self, chunk: bytes) -> None:
        events = self.splitter.feed(chunk)
        if events:
            await super().write(b"".join(self.sealer.data(e) for e in events))

    async def finish(self) -> None:
        rest = self.splitter.flush()
        await super().write((self.sealer.data(rest) if rest else b"") + self.sealer.end())
        await super().finish()


class RawSealedWriterV2(StreamWriter):
    """A non-SSE answer sealed frame by frame as the provider sends it: one DATA frame per piece read
    (the answer is never held whole), then the END frame. The client reads the same HEAD, DATA..., END
    sequence as a buffered answer's (envelope_v2.ReplySealer.full), so it reassembles the same body."""

    def __init__(self, request: Request, sealer: envelope_v2.ReplySealer) -> None:
        super().__init__(request)
        self.sealer = sealer

    async def write(self, chunk: bytes) -> None:
        if chunk:
            await super().write(self.sealer.data(chunk))

    async def finish(self) -> None:
        await super().write(self.sealer.end())
        await super().finish()


class SealedReplyV2(PlainReply):
    """Envelope v2: frames under the client's own response key, bound to the request's nonce."""

    sealed = True

    def __init__(self, sealer: envelope_v2.ReplySealer) -> None:
        self.sealer = sealer

    def full(self, status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
        inner = envelope.InnerResponse(status, as_dict(headers), body)
        return Response(200, list(V2_HEADERS), self.sealer.full(inner))

    async def open_stream(
        self, request: Request, status: int, headers: list[tuple[str, str]]
    ) -> StreamWriter:
        request.conn.start_stream(200, list(V2_HEADERS))
        writer = SealedStreamWriterV2(request, self.sealer)
        await StreamWriter.write(writer, self.sealer.head(status, as_dict(headers)))
        return writer

    async def open_raw_stream(
        self, request: Request, status: int, headers: list[tuple[str, str]]
    ) -> StreamWriter:
        request.conn.start_stream(200, list(V2_HEADERS))
        writer = RawSealedWriterV2(request, self.sealer)
        await StreamWriter.write(writer, self.sealer.head(status, as_dict(headers)))
        return writer
