"""Fake OpenAI-compatible upstream ("OpenRouter" in the lab), served by the lab daemon on :8790.

`create_app(config)` (app.py) is what tests run in-process on port 0; `start(ctx)` is the daemon component.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .app import create_app, state_of

DEFAULT_PORT = 8790

__all__ = ["DEFAULT_PORT", "create_app", "start", "state_of"]


async def start(ctx: Any) -> Callable[[], Awaitable[None]]:
    """Serve the upstream on every lab bind host; publishes its state as `ctx.registry["upstream"]`."""
    config = ctx.config.get("upstream", {})
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = int(config.get("port", DEFAULT_PORT))
    ssl_context = ctx.ssl_context if config.get("tls", False) else None
    for host in ctx.bind_hosts:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    ctx.registry["upstream"] = state_of(app)
    return runner.cleanup
