"""Runs the Cloudflare emulator in a background thread on an ephemeral loopback port.

A thread (not the test's event loop) so the synchronous clients the modules use — the official
`cloudflare` SDK and `requests` — can drive it. `call()` runs state-object methods on the server's loop,
as the lab edge does.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from lab.cloudflare import CloudflareState, create_app, state_of

ACCOUNT = "0123456789abcdef0123456789abcdef"
OTHER_ACCOUNT = "fedcba9876543210fedcba9876543210"
ZONE = "lab.test"
OTHER_ZONE = "other.test"
ADMIN = "labAdminToken000000000000000000000000001"
READER = "labReaderToken00000000000000000000000002"
DNS_ONLY = "labDnsOnlyToken0000000000000000000000003"
STRANGER = "labStrangerToken000000000000000000000004"

CONFIG: dict[str, Any] = {
    "account_id": ACCOUNT,
    "account_name": "Lab account",
    "zones": [{"name": ZONE}, {"name": OTHER_ZONE}],
    "tokens": [
        {
            "name": "admin",
            "value": ADMIN,
            "permissions": ["Cloudflare Tunnel:Edit", "DNS:Edit", "Zone:Read"],
            "accounts": [ACCOUNT],
            "zones": [ZONE, OTHER_ZONE],
        },
        {
            "name": "reader",
            "value": READER,
            "permissions": ["Cloudflare Tunnel:Read", "DNS:Read", "Zone:Read"],
            "accounts": [ACCOUNT],
            "zones": [ZONE],
        },
        {"name": "dns-only", "value": DNS_ONLY, "permissions": ["DNS:Edit"], "accounts": [], "zones": [ZONE]},
        {
            "name": "stranger",
            "value": STRANGER,
            "permissions": ["Cloudflare Tunnel:Edit", "DNS:Edit", "Zone:Read"],
            "accounts": [OTHER_ACCOUNT],
            "zones": [],
        },
    ],
}


class EmulatorThread:
    def __init__(
        self,
        state_path: Path | None,
        config: dict[str, Any] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        """`config` defaults to CONFIG; with `ssl_context` it serves HTTPS (as the lab daemon does)."""
        self.app = create_app(CONFIG if config is None else config, state_path)
        self.state: CloudflareState = state_of(self.app)
        self.ssl_context = ssl_context
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> EmulatorThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/client/v4"

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the emulator's loop (where the edge calls the state object) and return it."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)
