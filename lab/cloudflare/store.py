"""The Cloudflare emulator's state: tunnels, their configurations and live connections, zones, DNS records.

One `CloudflareState` per daemon, published as `ctx.registry["cloudflare"]`. Persistent parts (tunnels,
configurations, DNS records) are written atomically to `<state_dir>/cloudflare/state.json` after every
change, so a restarted daemon keeps them; connections are live TCP sessions and are not persisted.

Interface for the lab edge (all synchronous; call them from the daemon's event loop):
    tunnel_for_token(token) -> dict | None    live tunnel for a connector token whose account, tunnel id
                                              and CURRENT secret match (a rotated secret fails old tokens)
    tunnel_config(tunnel_id) -> (config, version)   remote config {"ingress": [...], "originRequest": {...}};
                                                    ({}, 0) before the first PUT; KeyError if no live tunnel
    route_hostname(hostname) -> tunnel_id | None    via a proxied CNAME `<id>.cfargotunnel.com` in any zone
    connection_opened(tunnel_id, info) -> conn_id   info: client_id, client_version, arch, origin_ip,
                                                    opened_at?, colo_name?, features?, config_version?,
                                                    conn_index? (a reconnect replaces its pending entry)
    connection_closed(tunnel_id, conn_id)           the connection stays listed, `is_pending_reconnect`,
                                                    for `pending_reconnect_seconds` (lab.toml), as on
                                                    Cloudflare; `connections` holds only live ones
    add_listener(callback)   callback(event, tunnel_id) on "secret_rotated", "connections_deleted",
                             "tunnel_deleted", "config_updated"
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("lab.cloudflare")

TUNNEL_TARGET_SUFFIX = ".cfargotunnel.com"
# The schema's `is_pending_reconnect`: "Cloudflare continues to track connections for several minutes after
# they disconnect ... If true, the connection has disconnected but is still being tracked." Three minutes is
# our reading of "several"; lab.toml's [cloudflare] pending_reconnect_seconds overrides it (0 = forget at
# once), so suites that count connectors right after restarts stay fast.
DEFAULT_PENDING_RECONNECT_SECONDS = 180.0
Listener = Callable[[str, str], None]


def now() -> str:
    """Timestamps as the API writes them: RFC 3339, UTC, microseconds, `Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def zone_id_for(name: str) -> str:
    """A stable 32-hex zone id derived from the name when lab.toml does not fix one."""
    return hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()


def encode_token(account_tag: str, tunnel_id: str, secret_b64: str) -> str:
    """The connector token format: base64 of compact JSON {"a": account, "t": tunnel id, "s": secret}."""
    payload = json.dumps({"a": account_tag, "t": tunnel_id, "s": secret_b64}, separators=(",", ":"))
    return base64.b64encode(payload.encode()).decode()


def decode_token(token: str) -> dict[str, str] | None:
    try:
        payload = json.loads(base64.b64decode(token.strip(), validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or not all(isinstance(payload.get(k), str) for k in ("a", "t", "s")):
        return None
    return payload


class CloudflareState:
    def __init__(self, config: dict[str, Any], path: Path | None = None):
        self.account_id: str = config["account_id"]
        self.account_name: str = config.get("account_name", "Lab account")
        self.colo: str = config.get("colo", "LAB")
        self.deleted_retention_days: float = float(config.get("deleted_retention_days", 7))
        self.pending_reconnect_seconds: float = float(
            config.get("pending_reconnect_seconds", DEFAULT_PENDING_RECONNECT_SECONDS)
        )
        if self.pending_reconnect_seconds < 0:
            raise ValueError("[cloudflare] pending_reconnect_seconds must be >= 0")
        self.zones: list[dict[str, Any]] = []
        for zone in config.get("zones", []):
            self.zones.append({"id": zone.get("id") or zone_id_for(zone["name"]), "name": zone["name"]})
        self.path = path
        self.tunnels: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {z["id"]: {} for z in self.zones}
        # tunnel id -> connection id -> connection (with its client/connector fields): LIVE connections only,
        # the ones the edge can route through (the edge reads this mapping).
        self.connections: dict[str, dict[str, dict[str, Any]]] = {}
        # Access objects by kind (apps, policies, service_tokens) -> id -> object; served by access.py.
        self.access: dict[str, dict[str, dict[str, Any]]] = {}
        # tunnel id -> connection id -> (monotonic time it closed, connection): disconnected connections the
        # API still lists with `is_pending_reconnect: true` until pending_reconnect_seconds have passed.
        self.pending: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}
        self.clock: Callable[[], float] = time.monotonic  # tests replace it to age pending connections
        self._listeners: list[Listener] = []
        self._load()

    # -- persistence ---------------------------------------------------------------------------------
    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            # Keep the evidence, start empty: a broken file must not keep the whole lab daemon down.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            self.path.rename(aside)
            log.error("cloudflare state %s is not valid JSON; moved to %s, starting empty", self.path, aside)
            return
        self.tunnels = {k: t for k, t in data.get("tunnels", {}).items() if not self._expired(t)}
        for zone_id, records in data.get("records", {}).items():
            if zone_id in self.records:
                self.records[zone_id] = records
        self.access = data.get("access") or {}
        for tunnel in self.tunnels.values():
            # Connections died with the previous daemon: the tunnel is down until connectors come back.
            if tunnel.get("conns_active_at") and not tunnel.get("conns_inactive_at"):
                tunnel["conns_inactive_at"] = now()

    def _expired(self, tunnel: dict[str, Any]) -> bool:
        """Deleted tunnels are purged after a while (as live), so the file does not grow run after run."""
        deleted = tunnel.get("deleted_at")
        if not deleted:
            return False
        age = datetime.now(UTC) - datetime.strptime(deleted, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return age.total_seconds() > self.deleted_retention_days * 86400

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Tunnel secrets live here: owner-only, like any credential file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(
                {"tunnels": self.tunnels, "records": self.records, "access": self.access},
                fh,
                indent=1,
                sort_keys=True,
            )
        os.replace(tmp, self.path)

    # -- listeners -----------------------------------------------------------------------------------
    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def emit(self, event: str, tunnel_id: str) -> None:
        for callback in list(self._listeners):
            try:
                callback(event, tunnel_id)
            except Exception:
                log.exception("cloudflare listener failed on %s for %s", event, tunnel_id)

    # -- lookups -------------------------------------------------------------------------------------
    def zone(self, zone_id: str) -> dict[str, Any] | None:
        return next((z for z in self.zones if z["id"] == zone_id), None)

    def live_tunnel(self, tunnel_id: str) -> dict[str, Any] | None:
        tunnel = self.tunnels.get(tunnel_id)
        return tunnel if tunnel is not None and tunnel.get("deleted_at") is None else None

    def pending_connections(self, tunnel_id: str) -> list[dict[str, Any]]:
        """The tunnel's disconnected connections still tracked; older ones are forgotten on the way."""
        tracked = self.pending.get(tunnel_id)
        if not tracked:
            return []
        horizon = self.clock() - self.pending_reconnect_seconds
        for conn_id in [c for c, (closed, _) in tracked.items() if closed <= horizon]:
            del tracked[conn_id]
        if not tracked:
            del self.pending[tunnel_id]
        return [conn for _, conn in tracked.values()]

    def listed_connections(self, tunnel_id: str) -> list[dict[str, Any]]:
        """What the API lists: live connections, then the ones pending reconnect."""
        return list(self.connections.get(tunnel_id, {}).values()) + self.pending_connections(tunnel_id)

    def tunnel_status(self, tunnel: dict[str, Any]) -> str:
        """Cloudflare's tunnel health (schema `tunnel_status`; docs "Tunnel health"): `healthy` while it
        serves through connections, `degraded` when it serves but at least one individual connection has
        failed (a pending-reconnect one), `down` when none is live (pending ones serve nothing), `inactive`
        when it never had one."""
        if self.connections.get(tunnel["id"]):
            return "degraded" if self.pending_connections(tunnel["id"]) else "healthy"
        return "down" if tunnel.get("conns_active_at") else "inactive"

    def tunnel_view(self, tunnel: dict[str, Any]) -> dict[str, Any]:
        """A tunnel as the API shows it (never the secret or the stored configuration)."""
        hidden = {"secret", "config", "config_version", "config_created_at"}
        view = {k: v for k, v in tunnel.items() if k not in hidden}
        view["connections"] = [self.connection_view(c) for c in self.listed_connections(tunnel["id"])]
        view["status"] = self.tunnel_status(tunnel)
        return view

    @staticmethod
    def connection_view(conn: dict[str, Any]) -> dict[str, Any]:
        keys = ("colo_name", "id", "is_pending_reconnect", "origin_ip", "opened_at", "client_id")
        view = {k: conn[k] for k in keys}
        view |= {"client_version": conn["client_version"], "uuid": conn["id"]}
        return view

    def clients_view(self, tunnel_id: str) -> list[dict[str, Any]]:
        """GET …/connections: one entry per connector (client), each with its connections."""
        clients: dict[str, dict[str, Any]] = {}
        for conn in self.listed_connections(tunnel_id):
            client = clients.setdefault(
                conn["client_id"],
                {
                    "id": conn["client_id"],
                    "arch": conn["arch"],
                    "config_version": conn["config_version"],
                    "conns": [],
                    "features": conn["features"],
                    "run_at": conn["run_at"],
                    "version": conn["client_version"],
                },
            )
            client["conns"].append(self.connection_view(conn))
        return list(clients.values())

    # -- the edge's interface ------------------------------------------------------------------------
    def tunnel_for_token(self, token: str) -> dict[str, Any] | None:
        payload = decode_token(token)
        if payload is None or payload["a"] != self.account_id:
            return None
        tunnel = self.live_tunnel(payload["t"])
        if tunnel is None or tunnel["account_tag"] != payload["a"]:
            return None
        if not hmac.compare_digest(payload["s"].encode(), tunnel["secret"].encode()):
            return None
        return self.tunnel_view(tunnel)

    def tunnel_config(self, tunnel_id: str) -> tuple[dict[str, Any], int]:
        """A copy of the stored remote config and its version ({} and 0 before the first PUT).

        Raises KeyError for an unknown or deleted tunnel. The config is returned whatever the tunnel's
        `config_src`; the tunnel dict from tunnel_for_token carries `remote_config` for callers that
        mimic cloudflared ignoring remote configuration on locally-managed tunnels.
        """
        tunnel = self.live_tunnel(tunnel_id)
        if tunnel is None:
            raise KeyError(f"no live tunnel {tunnel_id}")
        if tunnel.get("config") is None:
            return {}, 0
        return json.loads(json.dumps(tunnel["config"])), tunnel["config_version"]

    def route_hostname(self, hostname: str) -> str | None:
        """The tunnel id a hostname is routed to (exact name first, then a `*.` wildcard record).

        Returns the id even when that tunnel is deleted or down: the edge then answers like Cloudflare
        does for a dangling tunnel CNAME (error 1033), which differs from a hostname with no record.
        """
        host = hostname.lower().rstrip(".")
        candidates = [host]
        if "." in host:
            candidates.append("*." + host.split(".", 1)[1])
        for name in candidates:
            for records in self.records.values():
                for record in records.values():
                    if record["type"] != "CNAME" or not record["proxied"] or record["name"] != name:
                        continue
                    target = record["content"].lower()
                    if target.endswith(TUNNEL_TARGET_SUFFIX):
                        return target.removesuffix(TUNNEL_TARGET_SUFFIX)
        return None

    def connection_opened(self, tunnel_id: str, info: dict[str, Any]) -> str:
        tunnel = self.live_tunnel(tunnel_id)
        if tunnel is None:
            raise KeyError(f"no live tunnel {tunnel_id}")
        conn_id = str(uuid.uuid4())
        opened = info.get("opened_at") or now()
        client_id = info.get("client_id") or str(uuid.uuid4())
        conn_index = info.get("conn_index")
        # The tracking is "an optimization to improve latency and reliability of reconnecting" (schema): the
        # same connector reconnecting its connection index takes the place of the pending entry.
        if conn_index is not None:
            for pending_id, (_, old) in list(self.pending.get(tunnel_id, {}).items()):
                if old["client_id"] == client_id and old.get("conn_index") == conn_index:
                    del self.pending[tunnel_id][pending_id]
        self.connections.setdefault(tunnel_id, {})[conn_id] = {
            "id": conn_id,
            "client_id": client_id,
            "conn_index": conn_index,
            "client_version": info.get("client_version") or "",
            "arch": info.get("arch") or "",
            "origin_ip": info.get("origin_ip") or "",
            "opened_at": opened,
            "run_at": info.get("run_at", opened),
            "colo_name": info.get("colo_name") or self.colo,
            "features": list(info.get("features") or []),
            "config_version": int(info.get("config_version") or tunnel.get("config_version", 0)),
            "is_pending_reconnect": False,
        }
        if len(self.connections[tunnel_id]) == 1:
            tunnel["conns_active_at"] = opened
            tunnel["conns_inactive_at"] = None
            self.save()
        return conn_id

    def connection_closed(self, tunnel_id: str, conn_id: str) -> None:
        """A connection ended: no longer live (routing, status); listed pending reconnect for a while."""
        conns = self.connections.get(tunnel_id, {})
        conn = conns.pop(conn_id, None)
        if conn is None:
            return
        if self.pending_reconnect_seconds > 0 and self.live_tunnel(tunnel_id) is not None:
            pending = conn | {"is_pending_reconnect": True}
            self.pending.setdefault(tunnel_id, {})[conn_id] = (self.clock(), pending)
        if not conns:
            self._mark_inactive(tunnel_id)

    def _mark_inactive(self, tunnel_id: str) -> None:
        self.connections.pop(tunnel_id, None)
        tunnel = self.tunnels.get(tunnel_id)
        if tunnel is not None:
            tunnel["conns_inactive_at"] = now()
            self.save()

    def drop_connections(self, tunnel_id: str, client_id: str | None = None) -> None:
        """DELETE …/connections (all, or one connector's): forget them, pending-reconnect ones included
        (the SDK's words: "Removes connections that are in a disconnected or pending reconnect state"), and
        tell the edge to cut the live ones."""
        conns = self.connections.get(tunnel_id, {})
        had_live = bool(conns)
        for conn_id in [c for c, v in conns.items() if client_id is None or v["client_id"] == client_id]:
            del conns[conn_id]
        tracked = self.pending.get(tunnel_id, {})
        for conn_id, (_, conn) in list(tracked.items()):
            if client_id is None or conn["client_id"] == client_id:
                del tracked[conn_id]
        if not tracked:
            self.pending.pop(tunnel_id, None)
        if not conns:
            self.connections.pop(tunnel_id, None)
            if had_live:
                self._mark_inactive(tunnel_id)
        self.emit("connections_deleted", tunnel_id)
