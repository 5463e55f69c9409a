"""Cloudflare's v4 response envelope, its errors, and `page`/`per_page` paging.

Success: `{"success": true, "errors": [], "messages": [], "result": ..., "result_info"?: {...}}`.
Failure: `{"success": false, "errors": [{"code", "message"}], "messages": [], "result": null}`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# cloudflared's API client (cfapi/base_client.go, statusCodeToError) decodes an error body only when
# Content-Type is exactly "application/json"; aiohttp's json_response adds "; charset=utf-8", which made
# cloudflared print a generic "unauthorized" instead of the API's code and reason. The live API sends the
# bare type (public reports of cloudflared show the decoded `code: ..., reason: ...` form).
JSON_TYPE = "application/json"

DEFAULT_PER_PAGE = {"tunnels": 20, "zones": 20, "dns_records": 100}
MIN_PER_PAGE = {"tunnels": 1, "zones": 5, "dns_records": 1}
MAX_PER_PAGE = {"tunnels": 1000, "zones": 50, "dns_records": 5000000}


class CloudflareError(Exception):
    """An API refusal: HTTP status + one or more `{code, message}` errors (raised by handlers)."""

    def __init__(self, status: int, code: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.errors = [{"code": code, "message": message}]
        self.headers = headers or {}


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer with Content-Type exactly `application/json` (no charset parameter)."""
    return web.Response(
        body=json.dumps(body).encode(), status=status, headers=headers, content_type=JSON_TYPE
    )


def ok(result: Any, result_info: dict[str, int] | None = None, status: int = 200) -> web.Response:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return json_reply(body, status=status)


def failure(error: CloudflareError) -> web.Response:
    body = {"success": False, "errors": error.errors, "messages": [], "result": None}
    return json_reply(body, status=error.status, headers=error.headers)


def bad_request(message: str, code: int = 1001) -> CloudflareError:
    return CloudflareError(400, code, message)


def unroutable(path: str) -> CloudflareError:
    """The live API's answer for an id in the path that is malformed or names nothing."""
    return CloudflareError(
        400, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?"
    )


def page_params(query: Any, kind: str) -> tuple[int, int]:
    """(page, per_page) from the query string, refusing what the real API refuses."""
    try:
        page = int(query.get("page", 1))
        per_page = int(query.get("per_page", DEFAULT_PER_PAGE[kind]))
    except ValueError as exc:
        raise bad_request("page and per_page must be integers", 1001) from exc
    if page < 1:
        raise bad_request("page must be greater than or equal to 1", 1001)
    if not MIN_PER_PAGE[kind] <= per_page <= MAX_PER_PAGE[kind]:
        raise bad_request(f"per_page must be between {MIN_PER_PAGE[kind]} and {MAX_PER_PAGE[kind]}", 1001)
    return page, per_page


def paged(items: list[Any], query: Any, kind: str) -> web.Response:
    """One page of `items` with an exact result_info; a page past the end is empty (the SDK stops there)."""
    page, per_page = page_params(query, kind)
    start = (page - 1) * per_page
    chunk = items[start : start + per_page]
    info = {"page": page, "per_page": per_page, "count": len(chunk), "total_count": len(items)}
    if kind != "zones":
        info["total_pages"] = max(1, -(-len(items) // per_page))
    return ok(chunk, info)


async def json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object; malformed JSON is the API's 400 / 1001 / 9207-style refusal."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise bad_request("Request body is invalid.", 9207)
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request("Request body is invalid.", 9207) from exc
    if not isinstance(body, dict):
        raise bad_request("Request body is invalid.", 9207)
    return body
