"""OpenRouter's error body: `{"error": {"code": <HTTP status>, "message": str, "metadata"?: {...}}}`."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

DEFAULT_MESSAGES = {
    400: "Bad Request",
    401: "User not found.",
    402: "Insufficient credits. Add more using https://openrouter.ai/credits",
    408: "Request timed out",
    429: "Rate limit exceeded: lab limit. Retry shortly.",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "No endpoints found that can handle the requested parameters.",
}
RATE_LIMIT_PER_MINUTE = 20


def error_body(status: int, message: str | None = None, metadata: dict[str, Any] | None = None) -> dict:
    error: dict[str, Any] = {"code": status, "message": message or DEFAULT_MESSAGES.get(status, "Error")}
    if metadata:
        error["metadata"] = metadata
    return {"error": error}


def error_response(
    status: int, message: str | None = None, *, metadata: dict | None = None, retry_after: int | None = None
) -> web.Response:
    headers = {}
    if status == 429:
        wait = 1 if retry_after is None else retry_after
        reset_ms = int((time.time() + wait) * 1000)
        headers = {
            "Retry-After": str(wait),
            "X-RateLimit-Limit": str(RATE_LIMIT_PER_MINUTE),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_ms),
        }
    return web.json_response(error_body(status, message, metadata), status=status, headers=headers)
