"""Client side of the lab edge (HTTPS 9443): routes by Host header to a tunnel's connectors and streams.

Host → ``route_hostname`` (the emulator follows the proxied CNAME to ``<id>.cfargotunnel.com``) → one of
the tunnel's registered cloudflared connections (round robin) → an HTTP/2 request on it, with the headers
Cloudflare's edge adds. cloudflared answers with the origin's status; the origin's headers travel
serialised in `cf-cloudflared-response-headers` (connection/header.go) and are decoded here. The answer
body is written to the visitor frame by frame as cloudflared sends it, and HTTP/2 flow control is only
credited back once the visitor took a frame, so ``text/event-stream`` is never buffered and a slow visitor
slows the origin instead of filling the edge's memory.
"""

import asyncio
import base64
import contextlib
import logging

import h2.exceptions
from aiohttp import web

from lab.edge.access_gate import STRIPPED as ACCESS_STRIPPED
from lab.edge.access_gate import AccessGate
from lab.edge.errors import BAD_GATEWAY, NO_ROUTE, TUNNEL_DOWN, error_response, ray_id
from lab.edge.tunnel import (
    DATA,
    END,
    HEADERS,
    RESPONSE_HEADERS,
    RESPONSE_META,
    ConnectorSide,
    TunnelConnection,
)

log = logging.getLogger("lab.edge")

CHUNK = 65536
# Connection-specific headers: HTTP/2 forbids them (Go's server rejects a stream carrying one).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "expect",  # the edge answered 100-continue to its visitor itself
}
CLOUDFLARE_SET = {"x-forwarded-for", "x-forwarded-proto", "cf-connecting-ip", "cf-ray", "cf-visitor"}


def request_headers(request: web.Request, host: str, ray: str) -> list[tuple[str, str]]:
    """The HTTP/2 request cloudflared gets: the visitor's headers minus hop-by-hop ones, plus Cloudflare's."""
    peer = request.remote or ""
    previous = request.headers.get("X-Forwarded-For")
    headers = [
        (":method", request.method),
        (":scheme", "https"),
        (":authority", host),
        (":path", request.raw_path or "/"),
    ]
    headers += [
        (k.lower(), v)
        for k, v in request.headers.items()
        if k.lower() not in HOP_BY_HOP | CLOUDFLARE_SET and not k.startswith(":")
    ]
    headers += [
        ("cf-connecting-ip", peer),
        ("x-forwarded-for", f"{previous}, {peer}" if previous else peer),
        ("x-forwarded-proto", "https"),
        ("cf-ray", ray),
        ("cf-visitor", '{"scheme":"https"}'),
        ("cdn-loop", "cloudflare"),
    ]
    return headers


def decode_response_headers(value: str) -> list[tuple[str, str]]:
    """`b64(name):b64(value)` pairs joined by `;` (standard alphabet, unpadded), one pair per value."""
    pairs = []
    for item in filter(None, value.split(";")):
        name, _, encoded = item.partition(":")
        pairs.append((_unb64(name), _unb64(encoded)))
    return pairs


def _unb64(text: str) -> str:
    return base64.b64decode(text + "=" * (-len(text) % 4)).decode("latin-1")


def make_app(connectors: ConnectorSide, gate: AccessGate | None = None) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        host = (request.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        ray = ray_id()
        cf = connectors.cloudflare()
        access_headers = None
        if gate is not None and host:
            if host == gate.team_domain:  # <team>.cloudflareaccess.com: the team's certs
                return gate.team_endpoint(request, ray)
            # Access sits in front of routing: a refused request never picks a connector.
            refusal, access_headers = gate.check(cf, request, host, ray)
            if refusal is not None:
                return refusal
        tunnel_id = cf.route_hostname(host) if cf is not None and host else None
        if tunnel_id is None:
            return error_response(request, NO_ROUTE, host, ray)
        conn = connectors.pick(tunnel_id)
        if conn is None:
            return error_response(request, TUNNEL_DOWN, host, ray)
        return await forward(request, conn, host, ray, access_headers)

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def forward(
    request: web.Request, conn: TunnelConnection, host: str, ray: str, access_headers=None
) -> web.StreamResponse:
    has_body = request.body_exists
    headers = request_headers(request, host, ray)
    if access_headers is not None:  # admitted by Access: its token instead of the service-token headers
        headers = [(k, v) for k, v in headers if k not in ACCESS_STRIPPED] + access_headers
    try:
        stream_id, stream = conn.open_stream(headers, end=not has_body)
    except h2.exceptions.ProtocolError:
        return error_response(request, BAD_GATEWAY, host, ray)
    pump = asyncio.create_task(pump_body(request, conn, stream_id)) if has_body else None
    response = None
    try:
        kind, headers, _ = await stream.events.get()
        if kind != HEADERS:
            log.info("stream %s on %s failed before headers: %s", stream_id, conn.conn_id, headers[:200])
            return error_response(request, BAD_GATEWAY, host, ray)
        head = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
        status = int(head[":status"])
        if head.get(RESPONSE_META, "").find('"src":"cloudflared"') >= 0 and status == 502:
            # cloudflared could not reach the origin: Cloudflare shows its own 502 page.
            with contextlib.suppress(asyncio.CancelledError):
                await drain(stream, conn, stream_id)
            return error_response(request, BAD_GATEWAY, host, ray)
        response = web.StreamResponse(status=status)
        for name, value in decode_response_headers(head.get(RESPONSE_HEADERS, "")):
            if name.lower() not in HOP_BY_HOP | {"server"}:
                response.headers.add(name, value)
        if "content-length" in head and "Content-Length" not in response.headers:
            response.headers["Content-Length"] = head["content-length"]
        response.headers["Server"] = "cloudflare"
        response.headers["CF-RAY"] = ray
        await response.prepare(request)
        while True:
            kind, data, length = await stream.events.get()
            if kind == DATA:
                await response.write(data)
                conn.consumed(stream_id, length)  # the visitor took it: cloudflared may send more
            elif kind == END:
                await response.write_eof()
                return response
            else:  # reset or lost after the headers went out: the visitor sees a truncated answer
                log.info("stream %s on %s aborted mid-body: %s", stream_id, conn.conn_id, data[:200])
                if request.transport is not None:
                    request.transport.close()
                return response
    except (ConnectionError, asyncio.CancelledError):
        conn.reset(stream_id)  # the visitor went away: cloudflared stops reading from the origin
        raise
    finally:
        if pump is not None:
            pump.cancel()
        conn.forget_stream(stream_id)


async def drain(stream, conn: TunnelConnection, stream_id: int) -> None:
    while True:
        kind, _, length = await stream.events.get()
        if kind != DATA:
            return
        conn.consumed(stream_id, length)


async def pump_body(request: web.Request, conn: TunnelConnection, stream_id: int) -> None:
    """The visitor's body to cloudflared as it arrives, within cloudflared's flow-control window."""
    with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError):
        async for chunk in request.content.iter_chunked(CHUNK):
            await conn.send_body(stream_id, chunk)
        await conn.send_body(stream_id, b"", end=True)
