"""Cloudflare API emulator: app factory, auth/fault/log middleware, lab control routes.

`create_app(config, state_path)` serves `/client/v4` (tunnels, configurations, connections, token, zones,
DNS records) and `/_lab/` (faults, call log; see faults.py). `config` is lab.toml's `[cloudflare]`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from . import access, dns, routes, tunnels, zones
from .auth import authenticate, parse_tokens
from .envelope import CloudflareError, failure, ok
from .faults import FaultBook, FaultRuleError
from .keys import FAULTS_KEY, STATE_KEY, TOKEN_KEY, TOKENS_KEY
from .store import CloudflareState

API = "/client/v4"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def inject_fault(rule: dict[str, Any]) -> web.Response:
    if rule["mode"] == "429":
        error = CloudflareError(429, 971, "Please wait and consider throttling your request speed")
        error.headers = {"Retry-After": str(rule["retry_after"])}
        return failure(error)
    if rule["mode"] == "5xx":
        return failure(CloudflareError(rule["status"], 10502, "Internal server error (lab-injected fault)"))
    await asyncio.sleep(rule["hang_seconds"])
    return failure(CloudflareError(504, 10504, "Gateway timeout (lab-injected hang)"))


@web.middleware
async def api_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """For /client/v4: faults first (the real rate limiter answers before auth), then auth, then the route."""
    if not request.path.startswith(API + "/") and request.path != API:
        return await handler(request)
    faults = request.app[FAULTS_KEY]
    subpath = request.path.removeprefix(API)
    token_name = None
    rule = faults.take(request.method, subpath)
    if rule is not None:
        response = await inject_fault(rule)
    else:
        try:
            request[TOKEN_KEY] = authenticate(request, request.app[TOKENS_KEY])
            token_name = request[TOKEN_KEY].name
            response = await handler(request)
        except CloudflareError as error:
            response = failure(error)
        except web.HTTPMethodNotAllowed:
            response = failure(
                CloudflareError(405, 10405, f"Method {request.method} not allowed for this route")
            )
        except web.HTTPNotFound:
            response = failure(CloudflareError(400, 7000, "No route for that URI"))
    faults.log(request.method, subpath, request.query_string, response.status, token_name)
    return response


async def faults_get(request: web.Request) -> web.Response:
    return web.json_response({"faults": request.app[FAULTS_KEY].rules})


async def faults_post(request: web.Request) -> web.Response:
    try:
        rule = request.app[FAULTS_KEY].add(json.loads(await request.read() or b"null"))
    except (FaultRuleError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"fault": rule}, status=201)


async def faults_delete(request: web.Request) -> web.Response:
    request.app[FAULTS_KEY].rules.clear()
    return web.json_response({"faults": []})


async def calls_get(request: web.Request) -> web.Response:
    return web.json_response({"requests": list(request.app[FAULTS_KEY].calls)})


async def calls_delete(request: web.Request) -> web.Response:
    request.app[FAULTS_KEY].calls.clear()
    return web.json_response({"requests": []})


async def verify_token(request: web.Request) -> web.Response:
    """GET /user/tokens/verify: what modules call to check a token before doing anything."""
    return ok({"id": request[TOKEN_KEY].name, "status": "active"})


def check_config(config: dict[str, Any], tokens: dict[str, Any]) -> None:
    for key in ("account_id", "zones", "tokens"):
        if not config.get(key):
            raise ValueError(f"[cloudflare] {key} is required in lab.toml")
    # The shortcuts playbooks read must name a real token and zone, or every lab run fails obscurely.
    if "api_token" in config and config["api_token"] not in tokens:
        raise ValueError("[cloudflare] api_token is not one of [cloudflare.tokens]")
    if "zone" in config and config["zone"] not in {z["name"] for z in config["zones"]}:
        raise ValueError("[cloudflare] zone is not one of [[cloudflare.zones]]")


def create_app(config: dict[str, Any], state_path: Path | None = None) -> web.Application:
    tokens = parse_tokens(config.get("tokens") or [])
    check_config(config, tokens)
    app = web.Application(middlewares=[api_gate])
    app[STATE_KEY] = CloudflareState(config, state_path)
    app[TOKENS_KEY] = tokens
    app[FAULTS_KEY] = FaultBook()
    tunnels.add_routes(app.router, API)
    zones.add_routes(app.router, API)
    dns.add_routes(app.router, API)
    access.add_routes(app.router, API)
    routes.add_routes(app.router, API)
    app.router.add_get(f"{API}/user/tokens/verify", verify_token)
    app.router.add_get("/_lab/faults", faults_get)
    app.router.add_post("/_lab/faults", faults_post)
    app.router.add_delete("/_lab/faults", faults_delete)
    app.router.add_get("/_lab/requests", calls_get)
    app.router.add_delete("/_lab/requests", calls_delete)
    return app


def state_of(app: web.Application) -> CloudflareState:
    return app[STATE_KEY]
