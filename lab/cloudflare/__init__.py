"""Cloudflare API emulator (`/client/v4` on :8443, TLS with the lab CA), a lab daemon component.

The state object (tunnels, configs, connections, DNS) is published as `ctx.registry["cloudflare"]` for the
lab edge; its interface is documented in store.py and README.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

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
    """Serve the emulator (TLS) on every lab bind host; publish its state as `ctx.registry["cloudflare"]`."""
    config = ctx.section("cloudflare")
    app = create_app(config, ctx.state_dir / "cloudflare" / "state.json")
    ctx.registry["cloudflare"] = state_of(app)
    stop_serving = await ctx.serve(app, int(config.get("port", DEFAULT_PORT)), tls=True)

    async def cleanup() -> None:
        ctx.registry.pop("cloudflare", None)
        await stop_serving()

    return cleanup
