"""Connector side of the lab edge (port 7844): cloudflared's HTTP/2 transport, as Cloudflare's edge speaks it.

Per TLS connection from cloudflared (which is the HTTP/2 *server*; the edge is the client):
1. the edge opens the control stream (`cf-cloudflared-proxy-connection-upgrade: control-stream`) and serves
   Cap'n Proto RPC on it, bootstrap `RegistrationServer`: `registerConnection` checks the tunnel's account,
   id and secret against the Cloudflare emulator (``tunnel_for_token``) and registers the connection there
   (``connection_opened``: connector id, version, arch, origin ip, colo), or answers a `ConnectionError`
   and closes the connection (cloudflared would otherwise sit on it);
2. the tunnel's remote configuration is pushed on a stream of its own (`update-configuration`), on
   registration and again on every `config_updated` event of the emulator (a PUT …/configurations);
3. visitors' requests are ordinary HTTP/2 requests on new streams (lab/edge/client_side.py);
4. `unregisterConnection` (cloudflared's graceful shutdown) marks the connection draining: no new
   requests; once the running ones end the edge sends GOAWAY and closes, so cloudflared exits at once
   instead of waiting out its grace period.
Facts about the wire come from running the real cloudflared (the api-schemas notes) and its source
(connection/http2.go, connection/header.go, tunnelrpc/); the schema is cloudflared's, in lab/edge/capnp/.
"""

import asyncio
import base64
import contextlib
import ipaddress
import itertools
import json
import logging
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import capnp
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from lab.cloudflare.store import encode_token

log = logging.getLogger("lab.edge")

SCHEMA_DIR = Path(__file__).with_name("capnp")
SCHEMA = capnp.load(str(SCHEMA_DIR / "tunnelrpc.capnp"), imports=[str(SCHEMA_DIR)])
UPGRADE = "cf-cloudflared-proxy-connection-upgrade"
# What a request stream's queue carries, as (kind, payload, flow-controlled length) tuples.
HEADERS, DATA, END, RESET = "headers", "data", "end", "reset"
RESPONSE_HEADERS = "cf-cloudflared-response-headers"
RESPONSE_META = "cf-cloudflared-response-meta"
REGISTRATION_TIMEOUT = 15  # cloudflared registers within ~0.5 s of the handshake
READ_SIZE = 65536
# Causes as cloudflared logs them. A cause containing "Unauthorized" is retried forever (supervisor.go);
# any other on the first connection makes cloudflared exit 1, which is what a deleted tunnel should do.
BAD_SECRET = "Unauthorized: Invalid tunnel secret"
NO_TUNNEL = "Unauthorized: Tunnel not found"
DELETED = "Tunnel deleted: this tunnel was deleted and cannot accept connections"
RETRY_AFTER_NS = 1_000_000_000
CONTROL_END_WAIT = 5
DROP_EVENTS = {
    "connections_deleted": "tunnel connections deleted through the API",
    "tunnel_deleted": "tunnel deleted",
}


def _canonical_uuid(data: bytes) -> str:
    return str(uuid.UUID(bytes=bytes(data))) if len(data) == 16 else ""


def _origin_ip(data: bytes, peer: str) -> str:
    """cloudflared sends its local address as 16 bytes (IPv4-mapped); the peer address is the fallback."""
    if len(data) == 16:
        address = ipaddress.IPv6Address(bytes(data))
        return str(address.ipv4_mapped or address)
    if len(data) == 4:
        return str(ipaddress.IPv4Address(bytes(data)))
    return peer


@dataclass
class Stream:
    """What the edge hears back on one request stream it opened."""

    events: asyncio.Queue = field(default_factory=asyncio.Queue)


class TunnelConnection:
    """One TLS connection from cloudflared: the HTTP/2 client side of it, the control stream's RPC."""

    def __init__(self, side: "ConnectorSide", reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.side, self.reader, self.writer = side, reader, writer
        self.peer = (writer.get_extra_info("peername") or ("?",))[0]
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None, validate_inbound_headers=False)
        )
        self.streams: dict[int, Stream] = {}
        self.window_open = asyncio.Event()
        self.control_ended = asyncio.Event()
        self.stream_gone = asyncio.Event()  # set whenever a request stream ends (for draining)
        self.control_id = 0
        self.tunnel_id = ""
        self.conn_id = ""
        self.info: dict = {}
        self.remote_config = False
        self.registered = asyncio.Event()
        self.draining = False
        self.closed = asyncio.Event()
        self._rpc_writer: asyncio.StreamWriter | None = None
        self._rpc_pending = bytearray()
        self._tasks: set[asyncio.Task] = set()

    # -- plumbing --------------------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return self.registered.is_set() and not self.draining and not self.closed.is_set()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            name = self.conn_id or self.peer
            log.error("tunnel connection %s: task failed", name, exc_info=task.exception())

    def close(self) -> None:
        if not self.writer.is_closing():
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
            self.flush()
            self.writer.close()

    async def send_body(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """Sends `data` on a stream within HTTP/2 flow control (cloudflared's windows), then maybe ends it."""
        view = memoryview(data)
        while view:
            if self.closed.is_set():
                raise ConnectionError("tunnel connection closed")
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if window <= 0:
                self.window_open.clear()
                await self.window_open.wait()
                continue
            self.h2.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self.flush()
            await self.writer.drain()
        if end:
            self.h2.end_stream(stream_id)
            self.flush()

    def open_stream(self, headers: list[tuple[str, str]], end: bool = False) -> tuple[int, Stream]:
        stream_id = self.h2.get_next_available_stream_id()
        stream = Stream()
        self.streams[stream_id] = stream
        self.h2.send_headers(stream_id, headers, end_stream=end)
        self.flush()
        return stream_id, stream

    def consumed(self, stream_id: int, length: int) -> None:
        """The edge passed `length` bytes of a stream on: cloudflared may send that much more."""
        if length and not self.closed.is_set():
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.h2.acknowledge_received_data(length, stream_id)
                self.flush()

    def reset(self, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self.flush()
        self.forget_stream(stream_id)

    def forget_stream(self, stream_id: int) -> Stream | None:
        stream = self.streams.pop(stream_id, None)
        self.stream_gone.set()
        return stream

    def _dispatch(self, event) -> None:
        if isinstance(event, h2.events.DataReceived):
            if event.stream_id == self.control_id:
                if self._rpc_writer is not None:
                    self._rpc_writer.write(event.data)
                else:  # RPC bytes can come in the same read as the 200, before the bridge exists
                    self._rpc_pending += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif (stream := self.streams.get(event.stream_id)) is not None:
                stream.events.put_nowait((DATA, event.data, event.flow_controlled_length))
            else:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.ResponseReceived | h2.events.InformationalResponseReceived):
            if (stream := self.streams.get(event.stream_id)) is not None and isinstance(
                event, h2.events.ResponseReceived
            ):
                stream.events.put_nowait((HEADERS, event.headers, 0))
        elif isinstance(event, h2.events.TrailersReceived):
            pass  # HTTP/1.1 visitors get no trailers
        elif isinstance(event, h2.events.StreamEnded):
            if (stream := self.forget_stream(event.stream_id)) is not None:
                stream.events.put_nowait((END, b"", 0))
            if event.stream_id == self.control_id:
                self.control_ended.set()
                if self._rpc_writer is not None:
                    self._rpc_writer.close()
        elif isinstance(event, h2.events.StreamReset):
            if (stream := self.forget_stream(event.stream_id)) is not None:
                stream.events.put_nowait((RESET, f"stream reset ({event.error_code!r})".encode(), 0))
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self.window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.draining = True  # cloudflared's GOAWAY: it takes no new streams

    # -- the connection's life -------------------------------------------------------------------------
    async def serve(self) -> None:
        reason = "cloudflared closed the connection"
        try:
            self.h2.initiate_connection()
            self.flush()
            self.control_id, control = self.open_stream(
                [
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", "localhost"),
                    (":path", "/"),
                    (UPGRADE, "control-stream"),
                ]
            )
            self.spawn(self._control(control))
            self.spawn(self._registration_deadline())
            while True:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    reason = f"HTTP/2 protocol error: {exc}"
                    break
                for event in events:
                    self._dispatch(event)
                self.flush()
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
        finally:
            self.closed.set()
            self.window_open.set()
            for stream in self.streams.values():
                stream.events.put_nowait((RESET, reason.encode(), 0))
            self.streams.clear()
            if self._rpc_writer is not None:
                self._rpc_writer.close()
            self.writer.close()
            self.side.forget(self)
            for task in list(self._tasks):
                task.cancel()
            if self.conn_id:
                log.info("connection %s of tunnel %s closed: %s", self.conn_id, self.tunnel_id, reason)

    async def _registration_deadline(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.registered.wait(), REGISTRATION_TIMEOUT)
            return
        log.info("no registration from %s within %ss: closing", self.peer, REGISTRATION_TIMEOUT)
        self.close()

    async def _control(self, control: Stream) -> None:
        """Waits for cloudflared's 200 on the control stream, then bridges its body to Cap'n Proto RPC.

        pycapnp has no custom-transport API, so a socketpair joins the HTTP/2 stream to its AsyncIoStream.
        """
        kind, headers, _ = await control.events.get()
        log.debug("control stream answer from %s: %s %s", self.peer, kind, headers)
        status = dict(headers).get(b":status") if kind == HEADERS else None
        if status != b"200":
            log.info("cloudflared from %s refused the control stream (%s)", self.peer, status)
            self.close()
            return
        ours, theirs = socket.socketpair()
        try:
            rpc_stream = await capnp.AsyncIoStream.create_connection(sock=theirs)
            server = capnp.TwoPartyServer(rpc_stream, bootstrap=Registration(self))
            reader, self._rpc_writer = await asyncio.open_connection(sock=ours)
            self._rpc_writer.write(bytes(self._rpc_pending))
            self._rpc_pending.clear()
            while data := await reader.read(READ_SIZE):
                await self.send_body(self.control_id, data)
            del server
        except (ConnectionError, h2.exceptions.ProtocolError) as exc:
            log.debug("control stream of %s ended: %s", self.peer, exc)
        finally:
            ours.close()

    # -- RPC handlers (called by Registration) ---------------------------------------------------------
    def register(self, account: str, secret: bytes, tunnel_id: str, conn_index: int, options) -> tuple:
        """Checks the credentials against the emulator: (True, details) or (False, cause)."""
        cf = self.side.cloudflare()
        token = encode_token(account, tunnel_id, base64.b64encode(secret).decode())
        tunnel = cf.tunnel_for_token(token) if cf is not None else None
        if tunnel is None:
            return False, self.side.refusal(cf, tunnel_id)
        client = options.client
        self.tunnel_id = tunnel["id"]
        self.remote_config = bool(tunnel.get("remote_config", True))
        self.info = {
            "client_id": _canonical_uuid(client.clientId),
            "client_version": client.version,
            "arch": client.arch,
            "conn_index": conn_index,
            "features": list(client.features),
            "origin_ip": _origin_ip(bytes(options.originLocalIp), self.peer),
            "colo_name": self.side.location,
            "opened_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        if self.remote_config:
            self.info["config_version"] = cf.tunnel_config(self.tunnel_id)[1]
        self.conn_id = cf.connection_opened(self.tunnel_id, self.info)
        self.side.add(self)
        self.registered.set()
        log.info(
            "registered connection %s (index %s) of tunnel %s from %s, cloudflared %s",
            self.conn_id,
            conn_index,
            self.tunnel_id,
            self.peer,
            client.version,
        )
        if self.remote_config:
            self.spawn(self.push_config())
        return True, (uuid.UUID(self.conn_id).bytes, self.side.location, self.remote_config)

    def refused(self, cause: str) -> None:
        """A refused registration must close the connection, or cloudflared waits on it forever."""
        log.info("refused cloudflared from %s: %s", self.peer, cause)
        asyncio.get_running_loop().call_later(0.2, self.close)  # after the RPC answer went out

    def unregister(self) -> None:
        log.info("connection %s of tunnel %s unregistering (draining)", self.conn_id, self.tunnel_id)
        self.draining = True
        self.spawn(self._close_when_idle())

    async def _close_when_idle(self) -> None:
        """GOAWAY and close once the visitors' streams on this connection are answered."""
        while any(sid != self.control_id for sid in self.streams):
            self.stream_gone.clear()
            await self.stream_gone.wait()
        # cloudflared ends the control stream after its unregisterConnection is answered; closing before
        # that cuts the answer ("Error shutting down control stream: rpc: connection closed").
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.control_ended.wait(), CONTROL_END_WAIT)
        self.close()

    async def push_config(self) -> None:
        """PUT the tunnel's configuration (as the emulator holds it) on a stream of its own."""
        cf = self.side.cloudflare()
        try:
            config, version = cf.tunnel_config(self.tunnel_id)
        except KeyError:  # deleted meanwhile: tunnel_deleted cuts the connection
            return
        if not version:
            return
        body = json.dumps({"version": version, "config": config}).encode()
        try:
            stream_id, stream = self.open_stream(
                [
                    (":method", "PUT"),
                    (":scheme", "https"),
                    (":authority", "localhost"),
                    (":path", "/"),
                    (UPGRADE, "update-configuration"),
                    ("content-type", "application/json"),
                    ("content-length", str(len(body))),
                ]
            )
            await self.send_body(stream_id, body, end=True)
            answer = b""
            while True:
                kind, data, length = await stream.events.get()
                if kind == DATA:
                    answer += data
                    self.consumed(stream_id, length)
                elif kind != HEADERS:
                    break
            reply = answer.decode(errors="replace")
            log.info("config version %s pushed to %s: %s", version, self.conn_id, reply)
        except (ConnectionError, h2.exceptions.ProtocolError) as exc:
            log.info("config push to %s failed: %s", self.conn_id, exc)


class Registration(SCHEMA.RegistrationServer.Server):
    """The edge's bootstrap capability on a control stream."""

    def __init__(self, conn: TunnelConnection):
        self.conn = conn

    async def registerConnection(self, auth, tunnelId, connIndex, options, _context, **kwargs):
        tunnel_id = _canonical_uuid(bytes(tunnelId))
        accepted, outcome = self.conn.register(
            auth.accountTag, bytes(auth.tunnelSecret), tunnel_id, connIndex, options
        )
        result = _context.results.init("result")
        if accepted:
            conn_uuid, location, remote = outcome
            details = result.result.init("connectionDetails")
            details.uuid = conn_uuid
            details.locationName = location
            details.tunnelIsRemotelyManaged = remote
        else:
            error = result.result.init("error")
            error.cause = outcome
            error.retryAfter = RETRY_AFTER_NS
            error.shouldRetry = outcome.startswith("Unauthorized")
            self.conn.refused(outcome)

    async def unregisterConnection(self, _context, **kwargs):
        self.conn.unregister()

    async def updateLocalConfiguration(self, config, _context, **kwargs):
        log.info("cloudflared %s sent its local configuration (%d bytes)", self.conn.conn_id, len(config))


class ConnectorSide:
    """The registered connections per tunnel, and the emulator's events that act on them."""

    def __init__(self, registry: dict, location: str):
        self.registry = registry
        self.location = location
        self.pools: dict[str, list[TunnelConnection]] = {}
        self._round_robin: dict[str, itertools.count] = {}
        self._listening_to = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all: set[TunnelConnection] = set()

    def cloudflare(self):
        """The Cloudflare emulator's store, looked up lazily (components may start in any order)."""
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
            known = getattr(self.cloudflare(), "connections", {}).get(tunnel_id, {})
            for conn in list(self.pools.get(tunnel_id, [])):
                if event == "connections_deleted" and conn.conn_id in known:
                    continue  # DELETE …/connections?client_id= cuts one connector's connections only
                why = DROP_EVENTS[event]
                log.info("dropping connection %s of tunnel %s: %s", conn.conn_id, tunnel_id, why)
                conn.close()
        elif event == "config_updated":
            for conn in self.pools.get(tunnel_id, []):
                if conn.remote_config:
                    conn.spawn(conn.push_config())

    def pick(self, tunnel_id: str) -> TunnelConnection | None:
        """Round robin over the tunnel's usable connections (Cloudflare balances across connectors)."""
        pool = [c for c in self.pools.get(tunnel_id, []) if c.usable]
        if not pool:
            return None
        counter = self._round_robin.setdefault(tunnel_id, itertools.count())
        return pool[next(counter) % len(pool)]

    def connection_count(self, tunnel_id: str) -> int:
        return len(self.pools.get(tunnel_id, []))

    def add(self, conn: TunnelConnection) -> None:
        self.pools.setdefault(conn.tunnel_id, []).append(conn)

    def forget(self, conn: TunnelConnection) -> None:
        self._all.discard(conn)
        pool = self.pools.get(conn.tunnel_id, [])
        if conn in pool:
            pool.remove(conn)
            cf = self.cloudflare()
            if cf is not None and conn.conn_id:
                cf.connection_closed(conn.tunnel_id, conn.conn_id)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._loop = asyncio.get_running_loop()
        self.cloudflare()
        conn = TunnelConnection(self, reader, writer)
        self._all.add(conn)
        await conn.serve()

    @staticmethod
    def refusal(cf, tunnel_id: str) -> str:
        """Why a registration is refused: no such tunnel, a deleted one, or a secret that does not match."""
        if cf is None:
            return "Unauthorized: the lab edge has no Cloudflare emulator"
        # The store's raw table (tunnel_config hides deleted tunnels, which must get their own cause).
        tunnel = getattr(cf, "tunnels", {}).get(tunnel_id) if tunnel_id else None
        if tunnel is None:
            return NO_TUNNEL
        if tunnel.get("deleted_at") is not None:
            return DELETED
        return BAD_SECRET

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
