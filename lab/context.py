"""LabContext: what the daemon hands every component's `start(ctx)`."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

Cleanup = Callable[[], Awaitable[None]]


@dataclass
class LabContext:
    config: dict[str, Any]
    ssl_context: ssl.SSLContext
    ca_path: Path
    state_dir: Path
    cache_dir: Path
    bind_hosts: list[str]
    registry: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        """One lab.toml section (empty dict when absent)."""
        return dict(self.config.get(name, {}))

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the lab CA (for components calling each other)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    async def serve(self, app: web.Application, port: int, *, tls: bool = True) -> Cleanup:
        """Serve `app` on `port` over every bind host (TLS with the lab cert unless tls=False).

        Returns the cleanup that stops every site and the app's runner.
        """
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            for host in self.bind_hosts:
                site = web.TCPSite(
                    runner, host, port, ssl_context=self.ssl_context if tls else None, reuse_address=True
                )
                await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner.cleanup
