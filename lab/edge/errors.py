"""Cloudflare-style error answers of the lab edge (status, 1xxx code, HTML page or JSON).

Cloudflare answers HTTP 530 with error 1033 ("Cloudflare Tunnel error") when a hostname routes to a
tunnel without a healthy connector, 530 with 1016 ("Origin DNS error") when the proxied hostname does not
resolve to anything it can reach, and 502 ("Bad gateway") when the connector could not reach the origin.
Clients asking for JSON (Accept: application/json) get a small JSON object instead of the HTML page.
"""

import html
import json
import secrets
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class EdgeError:
    status: int
    code: int | None
    title: str
    detail: str


TUNNEL_DOWN = EdgeError(
    530,
    1033,
    "Cloudflare Tunnel error",
    "The host is configured as a Cloudflare Tunnel, and no connector is up.",
)
NO_ROUTE = EdgeError(530, 1016, "Origin DNS error", "The hostname does not route to any origin or tunnel.")
BAD_GATEWAY = EdgeError(
    502, None, "Bad gateway", "The tunnel connector could not get an answer from the origin."
)


def ray_id() -> str:
    return secrets.token_hex(8) + "-LAB"


def error_response(request: web.Request, error: EdgeError, host: str, ray: str) -> web.Response:
    headers = {"Server": "cloudflare", "CF-RAY": ray, "Cache-Control": "private, max-age=0, no-store"}
    label = f"Error {error.code}" if error.code else f"Error {error.status}"
    if "application/json" in request.headers.get("Accept", "") and "text/html" not in request.headers.get(
        "Accept", ""
    ):
        body = {
            "status": error.status,
            "error_code": error.code or error.status,
            "title": f"{label}: {error.title}",
            "detail": error.detail,
            "host": host,
            "ray_id": ray,
        }
        return web.Response(
            status=error.status, text=json.dumps(body), content_type="application/json", headers=headers
        )
    safe_host = html.escape(host)
    page = (
        f"<!DOCTYPE html><html><head><title>{error.title} | {safe_host} | Cloudflare</title></head><body>"
        f"<h1><span>{label}</span> Ray ID: {ray}</h1><h2>{error.title}</h2><p>{html.escape(error.detail)}</p>"
        "<p>Served by the llm-relay lab edge (in place of Cloudflare's edge).</p></body></html>"
    )
    return web.Response(status=error.status, text=page, content_type="text/html", headers=headers)
