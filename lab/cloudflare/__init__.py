"""Cloudflare API emulator (`/client/v4` on :8443, TLS with the lab CA), a lab daemon component.

The state object (tunnels, configs, connections, DNS) is published as `ctx.registry["cloudflare"]` for the
lab edge; its interface is documented in store.py and README.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .app import create_app, state_of
from .store import CloudflareState, decode_token, encode_token

DEFAULT_PORT = 8443

__all__ = [
    "DEFAULT_PORT",
    "CloudflareState",
    "create_app",
    "decode_token",
    "encode_token",
    "start",
    "state_of",
]


async def start(ctx: Any) -> Callable[[], Awaitable[None]]:
    config = ctx.config.get("cloudflare", {})
    app = create_app(config, ctx.state_dir / "cloudflare" / "state.json")
    ctx.registry["cloudflare"] = state_of(app)
    port = int(config.get("port", DEFAULT_PORT))
    if hasattr(ctx, "serve"):
        return await ctx.serve(app, port, tls=True)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for host in ctx.bind_hosts:
        await web.TCPSite(runner, host, port, ssl_context=ctx.ssl_context).start()
    return runner.cleanup
