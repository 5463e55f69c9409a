"""Connector side of the lab edge (port 7844): tunnel connections from cloudflared (stand-in) processes.

Each connection authenticates with a tunnel token (checked through the Cloudflare emulator's
``tunnel_for_token``), is registered in the emulator (so it shows in ``…/connections``), gets the tunnel's
remote configuration pushed (again on every ``config_updated``), and then carries multiplexed request
streams for the client side. ``DELETE …/connections`` and tunnel deletion drop the tunnel's connections, as
Cloudflare does; the connector's reconnect then meets the new state. A rotated secret drops nothing: as
Cloudflare documents for tunnel tokens, the old token cannot establish new connections, but connectors
already connected stay active until restarted. A connector that says GOAWAY (graceful shutdown) gets no
new requests; the ones it is serving finish.
"""

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
from datetime import UTC, datetime

from lab.cloudflared_standin.cloudflared import (
    CONFIG,
    DATA,
    END,
    GOAWAY,
    HEADERS,
    REGISTER,
    REGISTER_ERROR,
    REGISTERED,
    RESET,
    STREAM_WINDOW,
    WINDOW,
    Credit,
    json_frame,
    read_frame,
)

log = logging.getLogger("lab.edge")

LOST = -1  # queue marker: the connector connection went away mid-stream
REGISTRATION_TIMEOUT = 10
DROP_EVENTS = {
    "connections_deleted": "tunnel connections deleted through the API",
    "tunnel_deleted": "tunnel deleted",
}


class ConnectorConnection:
    """One registered TLS connection from a connector; demultiplexes frames into per-stream queues."""

    def __init__(
        self,
        tunnel_id: str,
        conn_id: str,
        info: dict,
        reader,
        writer,
        remote_config: bool = True,
        window: int | None = None,
    ):
        self.window = window  # the connector's advertised stream window; None = no flow control
        self.tunnel_id, self.conn_id, self.info = tunnel_id, conn_id, info
        self.remote_config = remote_config
        self.reader, self.writer = reader, writer
        self.streams: dict[int, asyncio.Queue] = {}
        self.credits: dict[int, Credit] = {}
        self._ids = itertools.count(1)
        self.draining = False  # the connector said GOAWAY: no new streams, running ones finish

    @property
    def usable(self) -> bool:
        return not self.draining and not self.writer.is_closing()

    def open_stream(self) -> tuple[int, asyncio.Queue, Credit]:
        """A new stream: its queue of frames from the connector and its request-body send credit."""
        sid = next(self._ids)
        self.streams[sid], self.credits[sid] = asyncio.Queue(), Credit(self.window)
        return sid, self.streams[sid], self.credits[sid]

    def close_stream(self, sid: int) -> None:
        self.streams.pop(sid, None)
        self.credits.pop(sid, None)

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def read_loop(self) -> str:
        """Routes the connector's frames to their streams until the connection ends; returns why."""
        reason = "connector closed the connection"
        try:
            while True:
                sid, kind, payload = await read_frame(self.reader)
                if sid == 0:
                    if kind == GOAWAY:
                        reason = json.loads(payload or b"{}").get("reason", reason)
                        self.draining = True
                        log.info(
                            "connection %s of tunnel %s draining: %s", self.conn_id, self.tunnel_id, reason
                        )
                    continue
                if kind == WINDOW and sid in self.credits:
                    self.credits[sid].give(payload)
                    continue
                queue = self.streams.get(sid)
                if queue is not None and kind in (HEADERS, DATA, END, RESET):
                    queue.put_nowait((kind, payload))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            if not isinstance(exc, asyncio.IncompleteReadError):
                reason = f"connection error: {exc}"
        finally:
            for queue in self.streams.values():
                queue.put_nowait((LOST, reason.encode()))
            self.streams.clear()
        return reason

    def goaway(self, reason: str) -> None:
        self.send(json_frame(0, GOAWAY, {"reason": reason}))
        self.writer.close()


class ConnectorSide:
    """The pool of connected connectors per tunnel, plus the registration handshake."""

    def __init__(self, registry: dict, location: str):
        self.registry = registry
        self.location = location
        self.pools: dict[str, list[ConnectorConnection]] = {}
        self._round_robin: dict[str, itertools.count] = {}
        self._listening_to = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- the Cloudflare emulator, looked up lazily (components may start in any order) --------------
    def cloudflare(self):
        cf = self.registry.get("cloudflare")
        if cf is not None and cf is not self._listening_to:
            cf.add_listener(self.on_event)
            self._listening_to = cf
        return cf

    def on_event(self, event: str, tunnel_id: str) -> None:
        """Emulator listener; may be called from any thread, so it only schedules work on our loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._handle_event, event, tunnel_id)

    def _handle_event(self, event: str, tunnel_id: str) -> None:
        if event in DROP_EVENTS:
            # DELETE …/connections?client_id= removes one connector only: cut what the emulator forgot.
            known = getattr(self.cloudflare(), "connections", {}).get(tunnel_id, {})
            for conn in list(self.pools.get(tunnel_id, [])):
                if event == "connections_deleted" and conn.conn_id in known:
                    continue
                log.info(
                    "dropping connection %s of tunnel %s: %s", conn.conn_id, tunnel_id, DROP_EVENTS[event]
                )
                conn.goaway(DROP_EVENTS[event])
        elif event == "config_updated":
            for conn in self.pools.get(tunnel_id, []):
                self.push_config(conn)

    def push_config(self, conn: ConnectorConnection) -> int:
        """Sends the tunnel's remote configuration; cloudflared ignores it for locally-managed tunnels."""
        if not conn.remote_config:
            return 0
        try:
            config, version = self.cloudflare().tunnel_config(conn.tunnel_id)
        except KeyError:  # deleted meanwhile; the tunnel_deleted event cuts the connection
            return 0
        conn.send(json_frame(0, CONFIG, {"version": version, "config": config or {}}))
        return version

    # -- balancing for the client side ---------------------------------------------------------------
    def pick(self, tunnel_id: str) -> ConnectorConnection | None:
        """Round robin over the tunnel's live connections (Cloudflare balances across connectors)."""
        pool = [c for c in self.pools.get(tunnel_id, []) if c.usable]
        if not pool:
            return None
        counter = self._round_robin.setdefault(tunnel_id, itertools.count())
        return pool[next(counter) % len(pool)]

    def connection_count(self, tunnel_id: str) -> int:
        return len(self.pools.get(tunnel_id, []))

    # -- registration --------------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._loop = asyncio.get_running_loop()
        peer = (writer.get_extra_info("peername") or ("?",))[0]
        try:
            sid, kind, payload = await asyncio.wait_for(read_frame(reader), REGISTRATION_TIMEOUT)
            hello = json.loads(payload) if sid == 0 and kind == REGISTER else None
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError):
            hello = None
        if not isinstance(hello, dict):
            writer.close()
            return
        conn = await self.register(hello, peer, reader, writer)
        if conn is None:
            return
        try:
            reason = await conn.read_loop()
        finally:
            self.pools[conn.tunnel_id].remove(conn)
            cf = self.cloudflare()
            if cf is not None:
                cf.connection_closed(conn.tunnel_id, conn.conn_id)
            writer.close()
        log.info("connection %s of tunnel %s closed: %s", conn.conn_id, conn.tunnel_id, reason)

    async def register(self, hello: dict, peer: str, reader, writer) -> ConnectorConnection | None:
        token = str(hello.get("token", ""))
        cf = self.cloudflare()
        tunnel = cf.tunnel_for_token(token) if cf is not None else None
        if tunnel is None:
            reason = self.refusal(cf, token)
            log.info("refused a connector from %s: %s", peer, reason)
            writer.write(json_frame(0, REGISTER_ERROR, {"error": reason, "permanent": True}))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return None
        tunnel_id = tunnel["id"]
        info = {
            "client_id": hello.get("connector_id"),
            "client_version": hello.get("version"),
            "arch": hello.get("arch"),
            "conn_index": hello.get("conn_index"),
            "protocol": hello.get("protocol"),
            "features": hello.get("features") or [],
            "run_at": hello.get("run_at"),
            "origin_ip": peer,
            "colo_name": self.location,
            "opened_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        remote = bool(tunnel.get("remote_config", True))
        if remote:
            info["config_version"] = cf.tunnel_config(tunnel_id)[1]
        conn_id = cf.connection_opened(tunnel_id, info)
        window = hello.get("window") if isinstance(hello.get("window"), int) else None
        conn = ConnectorConnection(tunnel_id, conn_id, info, reader, writer, remote, window)
        self.pools.setdefault(tunnel_id, []).append(conn)
        registered = {"connection_id": conn_id, "location": self.location, "window": STREAM_WINDOW}
        conn.send(json_frame(0, REGISTERED, registered))
        self.push_config(conn)
        log.info(
            "registered connection %s (index %s) of tunnel %s from %s",
            conn_id,
            info["conn_index"],
            tunnel_id,
            peer,
        )
        return conn

    @staticmethod
    def refusal(cf, token: str) -> str:
        """The reason cloudflared logs for a refused registration, as close to Cloudflare's as we can tell."""
        if cf is None:
            return "Unauthorized: lab edge has no Cloudflare emulator"
        try:
            tunnel_id = json.loads(base64.b64decode(token, validate=True))["t"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            return "Unauthorized: Invalid tunnel token"
        try:
            cf.tunnel_config(tunnel_id)
        except KeyError:  # the emulator has no live tunnel with this id (never made, or deleted)
            return "Unauthorized: Tunnel not found"
        return "Unauthorized: Invalid tunnel secret"

    async def close(self) -> None:
        for pool in list(self.pools.values()):
            for conn in list(pool):
                conn.goaway("lab edge shutting down")
