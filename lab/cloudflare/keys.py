"""aiohttp app/request keys shared by the emulator's handlers."""

from __future__ import annotations

from aiohttp import web

from .auth import ApiToken
from .faults import FaultBook
from .store import CloudflareState

STATE_KEY = web.AppKey("cloudflare_state", CloudflareState)
FAULTS_KEY = web.AppKey("cloudflare_faults", FaultBook)
TOKENS_KEY = web.AppKey("cloudflare_tokens", dict)
TOKEN_KEY = web.RequestKey("cloudflare_token", ApiToken)


def state(request: web.Request) -> CloudflareState:
    return request.app[STATE_KEY]


def token(request: web.Request) -> ApiToken:
    return request[TOKEN_KEY]
