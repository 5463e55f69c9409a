"""How an answer goes back to the client: as is, or sealed in Envelope v1 (CONTRIBUTING.md).

The forwarder and the local routes produce (status, headers, body) or a stream of chunks; a Reply turns
them into aiohttp responses, so envelope mode is one object swapped in, not a branch in every route.
"""

from __future__ import annotations

import json

from aiohttp import web
from cryptography.fernet import MultiFernet

from llm_relay import envelope

from .errors import RelayError
from .headers import as_dict

SERVER = "llm-relay"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class StreamWriter:
    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.bytes_out = 0

    async def write(self, chunk: bytes) -> None:
        self.bytes_out += len(chunk)
        await self.response.write(chunk)

    async def finish(self) -> None:
        await self.response.write_eof()


class SealedStreamWriter(StreamWriter):
    """Re-frames the provider's SSE stream: one Fernet token per upstream event."""

    def __init__(self, response: web.StreamResponse, fernet: MultiFernet) -> None:
        super().__init__(response)
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

    def full(self, status: int, headers: list[tuple[str, str]], body: bytes) -> web.Response:
        resp = web.Response(status=status, body=body, headers=headers)
        resp.headers["Server"] = SERVER
        return resp

    def json(self, status: int, doc: object, headers: dict[str, str] | None = None) -> web.Response:
        pairs = [("Content-Type", "application/json"), *(headers or {}).items()]
        return self.full(status, pairs, json.dumps(doc).encode())

    def error(self, err: RelayError) -> web.Response:
        resp = self.full(err.status, [("Content-Type", "application/json"), *err.headers.items()], err.body())
        if err.close_connection:
            resp.force_close()
        return resp

    async def open_stream(
        self, request: web.BaseRequest, status: int, headers: list[tuple[str, str]]
    ) -> StreamWriter:
        resp = web.StreamResponse(status=status, headers=headers)
        resp.headers.update(STREAM_HEADERS)
        resp.headers["Server"] = SERVER
        await resp.prepare(request)
        return StreamWriter(resp)


class SealedReply(PlainReply):
    """Answers after a successful decryption are sealed; the outer status mirrors the inner one."""

    sealed = True

    def __init__(self, fernet: MultiFernet) -> None:
        self.fernet = fernet

    def full(self, status: int, headers: list[tuple[str, str]], body: bytes) -> web.Response:
        sealed = envelope.seal_response(self.fernet, envelope.InnerResponse(status, as_dict(headers), body))
        return web.Response(
            status=status, body=sealed, headers={"Content-Type": envelope.CONTENT_TYPE, "Server": SERVER}
        )

    async def open_stream(
        self, request: web.BaseRequest, status: int, headers: list[tuple[str, str]]
    ) -> StreamWriter:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", "Server": SERVER})
        resp.headers.update(STREAM_HEADERS)
        await resp.prepare(request)
        writer = SealedStreamWriter(resp, self.fernet)
        await StreamWriter.write(writer, envelope.seal_stream_head(self.fernet, status, as_dict(headers)))
        return writer
