"""`POST /api/v1/chat/completions`: one JSON completion, or OpenRouter-style SSE when `stream` is true.

SSE framing as OpenRouter sends it: a `: OPENROUTER PROCESSING` comment before the first chunk and every
`processing_comment_every` chunks, `data: {chat.completion.chunk}` events, a final chunk carrying the
`finish_reason`, a usage chunk (`choices: []`, `usage`), then `data: [DONE]`. A mid-stream failure is a
normal data event with an `error` member and `finish_reason: "error"`, after which the stream ends.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import answers
from .errors import error_response

PROVIDER = "Lab"
PROCESSING_COMMENT = b": OPENROUTER PROCESSING\n\n"
ROLES = {"system", "user", "assistant", "tool", "developer"}


def validate_chat(body: Any, models: list[str]) -> str | None:
    """Why OpenRouter would refuse this body with 400, or None if it is acceptable."""
    if not isinstance(body, dict):
        return 'Input required: specify "prompt" or "messages"'
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 'Input required: specify "prompt" or "messages"'
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return "Invalid messages: each message needs a valid role"
    model = body.get("model", models[0])
    if model not in models:
        return f"{model} is not a valid model ID"
    if "max_tokens" in body and (not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1):
        return "max_tokens must be a positive integer"
    return None


def _base(gen_id: str, model: str, obj: str) -> dict[str, Any]:
    return {"id": gen_id, "provider": PROVIDER, "model": model, "object": obj, "created": int(time.time())}


def completion(body: dict[str, Any], model: str, gen_id: str) -> dict[str, Any]:
    content, finish = answers.chat_answer(body)
    choice = {
        "logprobs": None,
        "finish_reason": finish,
        "native_finish_reason": finish,
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": None, "reasoning": None},
    }
    usage = answers.usage(body, content)
    return _base(gen_id, model, "chat.completion") | {"choices": [choice], "usage": usage}


def _chunk(gen_id: str, model: str, delta: dict, finish: str | None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None}
    choice |= {"finish_reason": finish, "native_finish_reason": finish}
    event = _base(gen_id, model, "chat.completion.chunk") | extra | {"choices": [choice]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def abort(request: web.Request) -> None:
    """Drop the connection without a proper end: what a crashed provider or a cut network looks like."""
    if request.transport is not None:
        request.transport.abort()


async def _emit(
    request: web.Request, response: web.StreamResponse, body: dict, ids: tuple, rule: dict, every: int
):
    """Write the SSE events; returns how the stream ended."""
    gen_id, model = ids
    content, finish = answers.chat_answer(body)
    delay = rule.get("token_delay_ms", 0) / 1000
    await response.write(PROCESSING_COMMENT)
    for i, token in enumerate(answers.tokenize(content)):
        if rule.get("disconnect_after_tokens") == i:
            abort(request)
            return "fault_disconnect"
        if rule.get("error_after_tokens") == i:
            message = rule.get("message", "Provider disconnected unexpectedly")
            error = {"code": "server_error", "message": message}
            await response.write(_chunk(gen_id, model, {"content": ""}, "error", error=error))
            return "fault_error_event"
        if every and i and i % every == 0:
            await response.write(PROCESSING_COMMENT)
        delta = {"role": "assistant", "content": token} if i == 0 else {"content": token}
        await response.write(_chunk(gen_id, model, delta, None))
        if delay:
            await asyncio.sleep(delay)
    await response.write(_chunk(gen_id, model, {"content": ""}, finish))
    usage_event = _base(gen_id, model, "chat.completion.chunk") | {
        "choices": [],
        "usage": answers.usage(body, content),
    }
    await response.write(b"data: " + json.dumps(usage_event).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    return "completed"


async def sse_answer(
    request: web.Request,
    headers: dict[str, str],
    emit: Callable[[web.StreamResponse], Awaitable[str]],
    entry: dict,
) -> web.StreamResponse:
    """An SSE answer written by `emit`; `entry["outcome"]` records how it ended, a client leaving included."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers}
    )
    await response.prepare(request)
    try:
        entry["outcome"] = await emit(response)
        if entry["outcome"] != "fault_disconnect":
            await response.write_eof()
    except ConnectionResetError:
        entry["outcome"] = "client_disconnected"
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the peer goes away (handler_cancellation): same outcome.
        entry["outcome"] = "client_disconnected"
        raise
    return response


def token_fault(request: web.Request, rule: dict, index: int) -> str | None:
    """What the fault `rule` does before the stream's token `index`: "disconnect" (done here: the
    connection is gone), "error" (the caller writes its dialect's error event), or None."""
    if rule.get("disconnect_after_tokens") == index:
        abort(request)
        return "disconnect"
    return "error" if rule.get("error_after_tokens") == index else None


async def answer_valid(
    request: web.Request,
    entry: dict,
    rule: dict,
    headers: dict[str, str],
    emit: Callable[[web.StreamResponse], Awaitable[str]] | None,
    document: Callable[[], dict],
) -> web.StreamResponse:
    """The answer to a request that passed validation: SSE written by `emit` (a stream was asked for),
    else the JSON `document()` builds; `disconnect_after_tokens` drops a JSON answer's connection."""
    if emit is not None:
        return await sse_answer(request, headers, emit, entry)
    if "disconnect_after_tokens" in rule:
        entry["outcome"] = "fault_disconnect"
        abort(request)
    return web.json_response(document(), headers=headers)


async def chat_completions(
    request: web.Request, body: Any, rule: dict, config: dict, entry: dict
) -> web.StreamResponse:
    models = config["chat_models"]
    problem = validate_chat(body, models)
    if problem:
        return error_response(400, problem)
    model = body.get("model", models[0])
    gen_id = f"gen-{int(time.time())}-{secrets.token_hex(8)}"
    every = config["processing_comment_every"]

    async def emit(response: web.StreamResponse) -> str:
        return await _emit(request, response, body, (gen_id, model), rule, every)

    return await answer_valid(
        request,
        entry,
        rule,
        {"X-Generation-Id": gen_id},
        emit if body.get("stream") else None,
        lambda: completion(body, model, gen_id),
    )
