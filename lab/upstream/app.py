"""The fake OpenAI-compatible upstream ("OpenRouter" in the lab): app factory and routes.

API (`/api/v1`, Bearer key required except on `/models`, which is public on the live OpenRouter too):
  POST /api/v1/chat/completions   JSON, or SSE with `"stream": true` (see chat.py)
  POST /api/v1/embeddings         `input` string or list of strings
  POST /api/v1/responses          OpenAI's Responses API: JSON, or its typed SSE events (see responses.py)
  GET  /api/v1/models             catalogue
Anthropic's dialect (`/v1`, the key in `x-api-key`, `anthropic-version` required; see messages.py):
  POST /v1/messages               JSON, or Anthropic's named SSE events with `"stream": true`
Lab control (no auth; loopback/lab bridge only):
  GET/POST/DELETE /_lab/faults    list / add one rule (JSON object, fields in state.FAULT_FIELDS) / clear
  GET/DELETE      /_lab/requests  what each request carried (`key` = its bearer token) / forget
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import answers, chat, messages, responses
from .errors import error_response
from .models import DEFAULT_CHAT_MODELS, DEFAULT_EMBEDDING_MODELS, catalogue
from .state import FaultError, UpstreamState

API = "/api/v1"
ANTHROPIC_API = "/v1"
STATE_KEY = web.AppKey("upstream_state", UpstreamState)
CONFIG_KEY = web.AppKey("upstream_config", dict)
FAULT_KEY = web.RequestKey("upstream_fault", dict)
ENTRY_KEY = web.RequestKey("upstream_log_entry", dict)
PUBLIC_PATHS = {f"{API}/models"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@web.middleware
async def api_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record, authenticate and apply injected faults to every API request, in that order."""
    anthropic = request.path.startswith(ANTHROPIC_API + "/")
    if not anthropic and not request.path.startswith(API + "/"):
        return await handler(request)
    state = request.app[STATE_KEY]
    key = messages.credentials(request) if anthropic else bearer(request)
    entry = request[ENTRY_KEY] = state.record(
        request.method, request.path, key, dict(request.headers), request.query_string
    )
    if anthropic:
        refused = messages.auth_problem(request, key, state.api_keys)
        if refused is not None:
            entry["outcome"] = "unauthorized" if refused.status == 401 else "refused"
            return refused
    elif key is None and request.path not in PUBLIC_PATHS:
        entry["outcome"] = "unauthorized"
        return error_response(401, "No auth credentials found")
    elif key is not None and key not in state.api_keys:
        entry["outcome"] = "unauthorized"
        return error_response(401, "User not found.")
    rule = state.take_fault(request.path)
    request[FAULT_KEY] = rule
    if rule.get("latency_ms"):
        await asyncio.sleep(rule["latency_ms"] / 1000)
    if "status" in rule:
        entry["outcome"] = "fault_status"
        if anthropic:
            message = rule.get("message") or "lab fault"
            return messages.error_response(rule["status"], message, retry_after=rule.get("retry_after"))
        return error_response(rule["status"], rule.get("message"), retry_after=rule.get("retry_after"))
    if rule.get("disconnect_after_tokens") == 0:
        entry["outcome"] = "fault_disconnect"
        chat.abort(request)
        return web.Response(status=500)  # never reaches the client: the transport is gone
    try:
        response = await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        if anthropic:
            response = messages.error_response(exc.status, exc.reason)
        else:
            response = error_response(exc.status, exc.reason)
    entry.setdefault("outcome", "completed" if response.status < 400 else "refused")
    return response


async def json_body(request: web.Request) -> Any:
    try:
        return await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    if isinstance(body, dict):
        request[ENTRY_KEY] |= {"model": body.get("model"), "stream": bool(body.get("stream"))}
    entry = request[ENTRY_KEY]
    return await chat.chat_completions(request, body, request[FAULT_KEY], request.app[CONFIG_KEY], entry)


async def openai_responses(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    models = request.app[CONFIG_KEY]["chat_models"]
    return await responses.responses(request, body, request[FAULT_KEY], models, request[ENTRY_KEY])


async def anthropic_messages(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    return await messages.messages(request, body, request[FAULT_KEY], request[ENTRY_KEY])


async def embeddings(request: web.Request) -> web.Response:
    body = await json_body(request)
    config = request.app[CONFIG_KEY]
    if not isinstance(body, dict) or "input" not in body:
        return error_response(400, 'Input required: specify "input"')
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    if not inputs or not all(isinstance(i, str) for i in inputs):
        return error_response(400, "input must be a string or a non-empty list of strings")
    model = body.get("model")
    if model not in config["embedding_models"]:
        return error_response(400, f"{model} is not a valid model ID")
    data = [
        {"object": "embedding", "embedding": answers.embedding(t), "index": i} for i, t in enumerate(inputs)
    ]
    tokens = sum(len(answers.tokenize(t)) for t in inputs)
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": model,
            "provider": chat.PROVIDER,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def models(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    return web.json_response(catalogue(config["chat_models"], config["embedding_models"]))


async def faults_get(request: web.Request) -> web.Response:
    return web.json_response({"faults": request.app[STATE_KEY].faults})


async def faults_post(request: web.Request) -> web.Response:
    try:
        rule = request.app[STATE_KEY].add_fault(await json_body(request))
    except FaultError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"fault": rule}, status=201)


async def faults_delete(request: web.Request) -> web.Response:
    request.app[STATE_KEY].clear_faults()
    return web.json_response({"faults": []})


async def requests_get(request: web.Request) -> web.Response:
    return web.json_response({"requests": list(request.app[STATE_KEY].requests)})


async def requests_delete(request: web.Request) -> web.Response:
    request.app[STATE_KEY].clear_requests()
    return web.json_response({"requests": []})


def normalise_config(config: dict[str, Any]) -> dict[str, Any]:
    keys = config.get("api_keys") or []
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError("[upstream] api_keys must be a non-empty list of strings")
    return {
        "api_keys": list(keys),
        "chat_models": list(config.get("chat_models") or DEFAULT_CHAT_MODELS),
        "embedding_models": list(config.get("embedding_models") or DEFAULT_EMBEDDING_MODELS),
        "processing_comment_every": int(config.get("processing_comment_every", 8)),
    }


def create_app(config: dict[str, Any]) -> web.Application:
    """App for the `[upstream]` section of lab.toml (`api_keys` required; models/comment cadence optional)."""
    settings = normalise_config(config)
    app = web.Application(middlewares=[api_gate])
    app[CONFIG_KEY] = settings
    app[STATE_KEY] = UpstreamState(api_keys=settings["api_keys"])
    app.router.add_post(f"{API}/chat/completions", chat_completions)
    app.router.add_post(f"{API}/embeddings", embeddings)
    app.router.add_post(f"{API}/responses", openai_responses)
    app.router.add_get(f"{API}/models", models)
    app.router.add_post(f"{ANTHROPIC_API}/messages", anthropic_messages)
    app.router.add_get("/_lab/faults", faults_get)
    app.router.add_post("/_lab/faults", faults_post)
    app.router.add_delete("/_lab/faults", faults_delete)
    app.router.add_get("/_lab/requests", requests_get)
    app.router.add_delete("/_lab/requests", requests_delete)
    return app


def state_of(app: web.Application) -> UpstreamState:
    """In-process accessor: the app's fault rules and request log."""
    return app[STATE_KEY]
