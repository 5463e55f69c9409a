"""`POST /api/v1/responses`: OpenAI's Responses API (what Codex speaks), one JSON `response` object, or its
typed SSE events with `"stream": true`.

Shapes follow the openai SDK's `openai.types.responses` models: a stream is `response.created`,
`response.in_progress`, `response.output_item.added` (an assistant `message` item), `response.content_part
.added` (an empty `output_text` part), one `response.output_text.delta` per token, `response.output_text
.done`, `response.content_part.done`, `response.output_item.done`, then `response.completed` carrying the
whole response with its `usage` (`input_tokens`, `output_tokens`, `total_tokens` and their details);
every event has a `sequence_number` and `event:` names its type. `max_output_tokens` truncates like a
model: status `incomplete`, `incomplete_details.reason = "max_output_tokens"`, last event
`response.incomplete`. A mid-stream failure (fault `error_after_tokens`) is an `error` event followed by
`response.failed`. Answers are the lab's usual ones (answers.py), with the last user message of `input`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from aiohttp import web

from . import answers
from .chat import answer_valid, token_fault
from .errors import error_response

INPUT_ROLES = {"user", "assistant", "system", "developer"}


def messages_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`input` (a string or a list of items) as chat-style messages: what answers.py derives answers from.
    Message items keep their role and text (`input_text`/`output_text` parts count); other items (tool
    calls and their outputs, reasoning) carry no message text and are left out."""
    given = body.get("input")
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    found = []
    for item in given or []:
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            continue
        content = item.get("content")
        if isinstance(content, list):
            parts = [
                p for p in content if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")
            ]
            content = "".join(str(p.get("text", "")) for p in parts)
        found.append({"role": item.get("role"), "content": content if isinstance(content, str) else ""})
    return found


def validate(body: Any, models: list[str]) -> str | None:
    """Why the API would refuse this body with 400, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    given = body.get("input")
    if not isinstance(given, str | list) or not given:
        return 'Input required: specify "input" (a string or a non-empty list of items)'
    if isinstance(given, list):
        for i, item in enumerate(given):
            if not isinstance(item, dict):
                return f"input[{i}] must be an object"
            if item.get("type", "message") == "message" and item.get("role") not in INPUT_ROLES:
                return f"input[{i}].role must be one of {sorted(INPUT_ROLES)}"
    model = body.get("model", models[0])
    if model not in models:
        return f"{model} is not a valid model ID"
    cap = body.get("max_output_tokens")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        return "max_output_tokens must be a positive integer"
    return None


def answer(body: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(text, usage, status) of the lab's deterministic answer: status `incomplete` when
    `max_output_tokens` cut it short, else `completed`."""
    chat_body = {"messages": messages_of(body), "max_tokens": body.get("max_output_tokens")}
    text, finish = answers.chat_answer(chat_body)
    counts = answers.usage(chat_body, text)
    usage = {
        "input_tokens": counts["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": counts["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": counts["total_tokens"],
    }
    return text, usage, "incomplete" if finish == "length" else "completed"


def _message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = (
        [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    )
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def response_object(
    body: dict[str, Any], ids: tuple[str, str], status: str, output: list, usage: dict | None
) -> dict[str, Any]:
    resp_id, model = ids
    return {
        "id": resp_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": bool(body.get("store", True)),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "metadata": body.get("metadata") or {},
    }


def complete(body: dict[str, Any], ids: tuple[str, str]) -> dict[str, Any]:
    text, usage, status = answer(body)
    item = _message_item("msg_" + secrets.token_hex(12), text, status)
    return response_object(body, ids, status, [item], usage)


def _event(kind: str, seq: int, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq, **fields})}\n\n".encode()


async def _emit(
    request: web.Request, response: web.StreamResponse, body: dict, ids: tuple[str, str], rule: dict
) -> str:
    text, usage, status = answer(body)
    item_id = "msg_" + secrets.token_hex(12)
    seq = iter(range(1_000_000))  # sequence_number: one per event, from 0
    opening = response_object(body, ids, "in_progress", [], None)
    await response.write(_event("response.created", next(seq), response=opening))
    await response.write(_event("response.in_progress", next(seq), response=opening))
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    item = _message_item(item_id, None, "in_progress")
    await response.write(_event("response.output_item.added", next(seq), output_index=0, item=item))
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    await response.write(_event("response.content_part.added", next(seq), **where, part=part))
    delay = rule.get("token_delay_ms", 0) / 1000
    for i, token in enumerate(answers.tokenize(text)):
        fault = token_fault(request, rule, i)
        if fault == "disconnect":
            return "fault_disconnect"
        if fault == "error":
            message = rule.get("message", "Provider disconnected unexpectedly")
            await response.write(_event("error", next(seq), code="server_error", message=message, param=None))
            failed = response_object(body, ids, "failed", [], None)
            failed["error"] = {"code": "server_error", "message": message}
            await response.write(_event("response.failed", next(seq), response=failed))
            return "fault_error_event"
        await response.write(
            _event("response.output_text.delta", next(seq), **where, delta=token, logprobs=[])
        )
        if delay:
            await asyncio.sleep(delay)
    await response.write(_event("response.output_text.done", next(seq), **where, text=text, logprobs=[]))
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    await response.write(_event("response.content_part.done", next(seq), **where, part=part))
    item = _message_item(item_id, text, status)
    await response.write(_event("response.output_item.done", next(seq), output_index=0, item=item))
    final = response_object(body, ids, status, [item], usage)
    await response.write(_event(f"response.{status}", next(seq), response=final))
    return "completed"


async def responses(
    request: web.Request, body: Any, rule: dict, models: list[str], entry: dict
) -> web.StreamResponse:
    """`models`: the chat models the upstream serves (the Responses API takes the same ones)."""
    if problem := validate(body, models):
        return error_response(400, problem)
    ids = ("resp_" + secrets.token_hex(16), body.get("model", models[0]))
    entry |= {"model": ids[1], "stream": bool(body.get("stream"))}

    async def emit(response: web.StreamResponse) -> str:
        return await _emit(request, response, body, ids, rule)

    stream = emit if body.get("stream") else None
    return await answer_valid(
        request, entry, rule, {"X-Generation-Id": ids[0]}, stream, lambda: complete(body, ids)
    )
