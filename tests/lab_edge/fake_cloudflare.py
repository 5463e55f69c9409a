"""In-process stand-in for the Cloudflare emulator's state object, used until lab/cloudflare lands.

It implements exactly the interface the edge consumes from ``ctx.registry["cloudflare"]``
(tunnel_for_token, tunnel_config, route_hostname, connection_opened/closed, add_listener) plus the few
mutations the tests drive (create tunnel, put config, route, rotate, delete connections/tunnel).
"""

import base64
import json
import secrets
import uuid

ACCOUNT = "0123456789abcdef0123456789abcdef"


class FakeCloudflare:
    def __init__(self):
        self.tunnels: dict[str, dict] = {}
        self.routes: dict[str, str] = {}
        self.connections: dict[str, dict[str, dict]] = {}
        self.listeners = []

    # -- what tests drive ------------------------------------------------------------------------------
    def create_tunnel(self) -> tuple[str, str]:
        tunnel_id = str(uuid.uuid4())
        self.tunnels[tunnel_id] = {
            "id": tunnel_id,
            "secret": secrets.token_bytes(32),
            "config": {},
            "version": 0,
        }
        self.connections[tunnel_id] = {}
        return tunnel_id, self.token(tunnel_id)

    def token(self, tunnel_id: str) -> str:
        secret = base64.b64encode(self.tunnels[tunnel_id]["secret"]).decode()
        return base64.b64encode(json.dumps({"a": ACCOUNT, "t": tunnel_id, "s": secret}).encode()).decode()

    def put_config(self, tunnel_id: str, config: dict) -> int:
        tunnel = self.tunnels[tunnel_id]
        tunnel["config"], tunnel["version"] = config, tunnel["version"] + 1
        self._notify("config_updated", tunnel_id)
        return tunnel["version"]

    def route(self, hostname: str, tunnel_id: str) -> None:
        self.routes[hostname] = tunnel_id

    def rotate(self, tunnel_id: str) -> None:
        self.tunnels[tunnel_id]["secret"] = secrets.token_bytes(32)
        self._notify("secret_rotated", tunnel_id)

    def delete_connections(self, tunnel_id: str) -> None:
        self.connections[tunnel_id].clear()
        self._notify("connections_deleted", tunnel_id)

    def _notify(self, event: str, tunnel_id: str) -> None:
        for callback in self.listeners:
            callback(event, tunnel_id)

    # -- the interface the edge consumes ---------------------------------------------------------------
    def tunnel_for_token(self, token: str) -> dict | None:
        try:
            data = json.loads(base64.b64decode(token))
        except ValueError:
            return None
        tunnel = self.tunnels.get(data.get("t"))
        if not tunnel or data.get("a") != ACCOUNT or base64.b64decode(data.get("s", "")) != tunnel["secret"]:
            return None
        return {"id": tunnel["id"]}

    def tunnel_config(self, tunnel_id: str) -> tuple[dict, int]:
        tunnel = self.tunnels[tunnel_id]
        return {"config": tunnel["config"]}, tunnel["version"]

    def route_hostname(self, hostname: str) -> str | None:
        return self.routes.get(hostname)

    def connection_opened(self, tunnel_id: str, info: dict) -> str:
        conn_id = str(uuid.uuid4())
        self.connections[tunnel_id][conn_id] = info
        return conn_id

    def connection_closed(self, tunnel_id: str, conn_id: str) -> None:
        self.connections.get(tunnel_id, {}).pop(conn_id, None)

    def add_listener(self, callback) -> None:
        self.listeners.append(callback)
