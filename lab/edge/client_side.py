"""Client side of the lab edge (HTTPS 9443): routes by Host header to a tunnel's connectors and streams.

Host → ``route_hostname`` (the emulator follows the proxied CNAME to ``<id>.cfargotunnel.com``) → one of
the tunnel's connector connections (round robin) → a stream on it. The response body is written to the
client frame by frame as the connector sends it, so ``text/event-stream`` is never buffered here.
"""

import asyncio
import contextlib
import json
import logging

from aiohttp import web

from lab.cloudflared_standin.cloudflared import (
    DATA,
    END,
    HEADERS,
    HOP_BY_HOP,
    RESET,
    frame,
    json_frame,
    window_frame,
)
from lab.edge.connectors import ConnectorSide
from lab.edge.errors import BAD_GATEWAY, NO_ROUTE, TUNNEL_DOWN, error_response, ray_id

log = logging.getLogger("lab.edge")

CHUNK = 65536


def request_headers(request: web.Request, ray: str) -> list[list[str]]:
    """What the origin sees: the client's headers minus hop-by-hop ones, plus Cloudflare's own."""
    peer = request.remote or ""
    headers = [[k, v] for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}]
    previous = request.headers.get("X-Forwarded-For")
    headers = [
        h for h in headers if h[0].lower() not in {"x-forwarded-for", "x-forwarded-proto", "cf-connecting-ip"}
    ]
    headers += [
        ["CF-Connecting-IP", peer],
        ["X-Forwarded-For", f"{previous}, {peer}" if previous else peer],
        ["X-Forwarded-Proto", "https"],
        ["CF-RAY", ray],
        ["CF-Visitor", '{"scheme":"https"}'],
        ["CDN-Loop", "cloudflare"],
    ]
    return headers


def make_app(connectors: ConnectorSide) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        host = (request.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        ray = ray_id()
        cf = connectors.cloudflare()
        tunnel_id = cf.route_hostname(host) if cf is not None and host else None
        if tunnel_id is None:
            return error_response(request, NO_ROUTE, host, ray)
        conn = connectors.pick(tunnel_id)
        if conn is None:
            return error_response(request, TUNNEL_DOWN, host, ray)
        return await forward(request, conn, host, ray)

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def forward(request: web.Request, conn, host: str, ray: str) -> web.StreamResponse:
    sid, queue, credit = conn.open_stream()
    chunked = request.body_exists and request.content_length is None
    conn.send(
        json_frame(
            sid,
            HEADERS,
            {
                "method": request.method,
                "path": request.raw_path,
                "host": host,
                "headers": request_headers(request, ray),
                "chunked": chunked,
            },
        )
    )
    pump = asyncio.create_task(pump_body(request, conn, sid, credit))
    response = None
    try:
        kind, payload = await queue.get()
        if kind != HEADERS:
            log.info("stream %s on %s failed before headers: %s", sid, conn.conn_id, payload[:200])
            return error_response(request, BAD_GATEWAY, host, ray)
        head = json.loads(payload)
        response = web.StreamResponse(status=head["status"])
        for name, value in head["headers"]:
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        response.headers["Server"] = "cloudflare"
        response.headers["CF-RAY"] = ray
        await response.prepare(request)
        while True:
            kind, payload = await queue.get()
            if kind == DATA:
                await response.write(payload)
                conn.send(window_frame(sid, len(payload)))  # the client took it: more may come
            elif kind == END:
                await response.write_eof()
                return response
            else:  # RESET or LOST after the headers went out: the client sees a truncated answer
                log.info("stream %s on %s aborted mid-body: %s", sid, conn.conn_id, payload[:200])
                request.transport and request.transport.close()
                return response
    except (ConnectionError, asyncio.CancelledError):
        # The client went away: tell the connector to stop reading from the origin.
        conn.send(json_frame(sid, RESET, {"error": "client disconnected"}))
        raise
    finally:
        pump.cancel()
        conn.close_stream(sid)


async def pump_body(request: web.Request, conn, sid: int, credit) -> None:
    with contextlib.suppress(ConnectionError):
        if request.body_exists:
            async for chunk in request.content.iter_chunked(CHUNK):
                await credit.take(len(chunk))  # the connector has not passed a window's worth on yet
                conn.send(frame(sid, DATA, chunk))
                await conn.drain()
        conn.send(frame(sid, END))
