"""Process lifecycle: listeners, SIGHUP reload, SIGTERM drain, systemd readiness notifications."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

from .app import MetricsApp, RelayApp
from .config import ConfigError, Settings, load_settings
from .http11 import HttpServer, Limits
from .state import RelayState

log = logging.getLogger("llm_relay.server")


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("sd_notify failed", extra={"fields": {"error": exc.__class__.__name__}})


class RelayServer:
    """Owns the listeners and the RelayApp; usable in-process (tests) and from the CLI."""

    def __init__(self, config_path: str | Path, listen_override: str | None = None) -> None:
        self.config_path = Path(config_path)
        self.listen_override = listen_override
        settings = load_settings(self.config_path, listen_override)
        self.relay = RelayApp(RelayState(settings))
        # One budget for the whole process (both listeners); a reload changes its limit in place.
        self.budget = self.relay.budget
        self._servers: list[asyncio.base_events.Server] = []
        self._http: list[HttpServer] = []
        self.port = 0
        self.metrics_port = 0
        self._stop = asyncio.Event()

    @property
    def settings(self) -> Settings:
        return self.relay.state.settings

    def _limits(self) -> Limits:
        s = self.settings.server  # read per connection: a reload applies to new connections
        return Limits(
            s.max_body_bytes,
            s.body_timeout,
            s.max_line_bytes,
            s.max_headers,
            max_head=s.max_head_bytes,
            max_connections=s.max_connections,
            connection_budget=s.connection_budget_bytes,
            send_timeout=s.send_timeout,
        )

    def _http_server(self, handler, on_reject=None, admit=None) -> HttpServer:
        server = HttpServer(handler, self._limits, on_reject, admit, self.budget)
        self._http.append(server)
        return server

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        access = self.relay.state.access
        if access is not None:
            # The team's keys before the first request (bounded by the fetch timeout): otherwise the first
            # requests after a start would get 503 while they are fetched. A failure does not stop the
            # start: /healthz answers, and requests get 503 until a later fetch works.
            await access.refresh()
        host, port = self.settings.server.listen
        http = self._http_server(self.relay.handle, self.relay.rejected, self.relay.admit)
        srv = await loop.create_server(http, host, port, backlog=2048)
        self._servers.append(srv)
        self.port = srv.sockets[0].getsockname()[1]
        if self.settings.server.metrics_listen:
            mhost, mport = self.settings.server.metrics_listen
            metrics_app = MetricsApp(self.relay)
            msrv = await loop.create_server(
                self._http_server(metrics_app.handle, admit=metrics_app.admit), mhost, mport
            )
            self._servers.append(msrv)
            self.metrics_port = msrv.sockets[0].getsockname()[1]
        log.info(
            "listening",
            extra={
                "fields": {
                    "listen": f"{host}:{self.port}",
                    "metrics_port": self.metrics_port,
                    # "uvloop" or "asyncio": which loop serves (uvloop when installed, ~12 % cheaper).
                    "event_loop": type(loop).__module__.partition(".")[0],
                }
            },
        )

    def reload(self) -> bool:
        """Re-read config and secrets; keep the old ones if anything is wrong."""
        sd_notify("RELOADING=1")
        try:
            settings = load_settings(self.config_path, self.listen_override)
            self.relay.swap_state(RelayState(settings, previous=self.relay.state))
            self.budget.limit = settings.server.memory_budget_bytes
            access = self.relay.state.access
            if access is not None and access.fetched_at is None:
                access.kick()  # [access] newly set or changed: fetch its keys now, not on the first request
        except (ConfigError, ValueError) as exc:
            self.relay.metrics.reloads["failed"] += 1
            log.error("reload failed; keeping the previous settings", extra={"fields": {"error": str(exc)}})
            return False
        finally:
            sd_notify("READY=1")
        self.relay.metrics.reloads["ok"] += 1
        log.info(
            "reloaded",
            extra={
                "fields": {
                    "tokens": len(self.relay.state.tokens),
                    "fernet_keys": len(settings.fernet_keys),
                    "providers": sorted(settings.providers),
                }
            },
        )
        return True

    def request_stop(self) -> None:
        self._stop.set()

    async def drain_and_close(self) -> None:
        """Stop accepting, let in-flight requests and streams finish (bounded), then close everything."""
        sd_notify("STOPPING=1")
        self.relay.draining = True
        for srv in self._servers:
            srv.close()
        for http in self._http:
            http.closing = True  # answers now carry `Connection: close`
            http.close_idle()
        timeout = self.settings.server.drain_timeout
        finished = await self.relay.wait_idle(timeout)
        log.info(
            "drained" if finished else "drain timeout: closing remaining requests",
            extra={"fields": {"in_flight": self.relay.in_flight}},
        )
        for http in self._http:
            http.close_all()
        self.relay.state.close()
        self.relay.access_log.flush()

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        await self.start()
        sd_notify("READY=1")
        await self._stop.wait()
        await self.drain_and_close()
