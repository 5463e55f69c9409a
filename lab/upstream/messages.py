"""`POST /v1/messages`: Anthropic's Messages API, as `api.anthropic.com/v1` answers it.

Auth is Anthropic's: the key in `x-api-key` (an `Authorization` header does not count) and a required
`anthropic-version` header. Errors have Anthropic's shape, `{"type": "error", "error": {"type", "message"},
"request_id"}`, with a `request-id` header on every answer. A stream is Anthropic's named SSE events:
`message_start` (usage: input tokens), `content_block_start`, `ping`, one `content_block_delta`
(`text_delta`) per token, `content_block_stop`, `message_delta` (stop_reason, cumulative output tokens),
`message_stop`; a mid-stream failure is an `error` event, after which the stream ends.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from aiohttp import web

from . import answers
from .chat import abort, sse_answer

ROLES = {"user", "assistant"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def request_id() -> str:
    return "req_" + secrets.token_hex(12)


def error_response(status: int, message: str, *, retry_after: int | None = None) -> web.Response:
    rid = request_id()
    kind = ERROR_TYPES.get(status, "api_error")
    headers = {"request-id": rid}
    if status == 429:
        headers["retry-after"] = str(1 if retry_after is None else retry_after)
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": rid}
    return web.json_response(body, status=status, headers=headers)


def credentials(request: web.Request) -> str | None:
    """The key Anthropic reads: `x-api-key` only."""
    value = request.headers.get("x-api-key", "").strip()
    return value or None


def auth_problem(request: web.Request, key: str | None, keys: list[str]) -> web.Response | None:
    if key is None:
        return error_response(401, "x-api-key header is required")
    if key not in keys:
        return error_response(401, "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return error_response(400, "anthropic-version: header is required")
    return None


def validate(body: Any) -> tuple[int, str] | None:
    """(status, message) Anthropic would refuse this body with, or None."""
    if not isinstance(body, dict):
        return 400, "request body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return 400, "model: Field required"
    if not model.startswith("claude-"):
        return 404, f"model: {model}"
    limit = body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        return 400, "max_tokens: Field required (a positive integer)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, "messages: Field required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return 400, f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if not isinstance(message.get("content"), str | list):
            return 400, f"messages.{i}.content: Field required"
    return None


def _usage(body: dict, text: str) -> dict[str, int]:
    counts = answers.usage(body, text)
    return {
        "input_tokens": counts["prompt_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": counts["completion_tokens"],
    }


def _message(body: dict, msg_id: str, text: str, stop: str | None, usage: dict) -> dict[str, Any]:
    content = [{"type": "text", "text": text}] if text or stop else []
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def answer(body: dict) -> tuple[str, str]:
    """(text, stop_reason): the lab's deterministic answer, `max_tokens` truncating like a model."""
    text, finish = answers.chat_answer(body)
    return text, "max_tokens" if finish == "length" else "end_turn"


async def _emit(request: web.Request, response: web.StreamResponse, body: dict, rule: dict) -> str:
    msg_id = "msg_" + secrets.token_hex(12)
    text, stop = answer(body)
    usage = _usage(body, text)
    start = _message(body, msg_id, "", None, usage | {"output_tokens": 1})
    await response.write(_event("message_start", {"type": "message_start", "message": start}))
    block = {"type": "text", "text": ""}
    await response.write(
        _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
    )
    await response.write(_event("ping", {"type": "ping"}))
    delay = rule.get("token_delay_ms", 0) / 1000
    for i, token in enumerate(answers.tokenize(text)):
        if rule.get("disconnect_after_tokens") == i:
            abort(request)
            return "fault_disconnect"
        if rule.get("error_after_tokens") == i:
            error = {"type": "overloaded_error", "message": rule.get("message", "Overloaded")}
            await response.write(_event("error", {"type": "error", "error": error}))
            return "fault_error_event"
        delta = {"type": "text_delta", "text": token}
        await response.write(
            _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
        if delay:
            await asyncio.sleep(delay)
    await response.write(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    delta_event = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    await response.write(_event("message_delta", delta_event))
    await response.write(_event("message_stop", {"type": "message_stop"}))
    return "completed"


async def messages(request: web.Request, body: Any, rule: dict, entry: dict) -> web.StreamResponse:
    problem = validate(body)
    if problem:
        return error_response(*problem)
    entry |= {"model": body["model"], "stream": bool(body.get("stream"))}
    if not body.get("stream"):
        text, stop = answer(body)
        msg = _message(body, "msg_" + secrets.token_hex(12), text, stop, _usage(body, text))
        return web.json_response(msg, headers={"request-id": request_id()})

    async def emit(response: web.StreamResponse) -> str:
        return await _emit(request, response, body, rule)

    return await sse_answer(request, {"request-id": request_id()}, emit, entry)
