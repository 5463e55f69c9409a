"""Fake OpenAI-compatible upstream ("OpenRouter" in the lab), served by the lab daemon on :8790.

`create_app(config)` (app.py) is what tests run in-process on port 0; `start(ctx)` is the daemon component.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .app import create_app, state_of

DEFAULT_PORT = 8790

__all__ = ["DEFAULT_PORT", "create_app", "start", "state_of"]


async def start(ctx: Any) -> Callable[[], Awaitable[None]]:
    """Serve the upstream on every lab bind host; publishes its state as `ctx.registry["upstream"]`."""
    config = ctx.section("upstream")
    app = create_app(config)
    port, tls = int(config.get("port", DEFAULT_PORT)), bool(config.get("tls", True))
    stop_serving = await ctx.serve(app, port, tls=tls)
    ctx.registry["upstream"] = state_of(app)

    async def cleanup() -> None:
        ctx.registry.pop("upstream", None)
        await stop_serving()

    return cleanup
