"""`/accounts/{account_id}/cfd_tunnel…`: tunnels, their token, configuration and connections."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from .auth import require_account
from .envelope import CloudflareError, bad_request, json_object, ok, paged, unroutable
from .ingress import validate_config
from .keys import state, token
from .store import encode_token, now

RESOURCE = "Cloudflare Tunnel"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CONFIG_SOURCES = ("local", "cloudflare")
MIN_SECRET_BYTES = 32


def not_found() -> CloudflareError:
    return CloudflareError(404, 1003, "Tunnel not found")


def check_account(request: web.Request, write: bool) -> str:
    account_id = request.match_info["account_id"]
    require_account(token(request), account_id, RESOURCE, write)
    if account_id != state(request).account_id:
        raise CloudflareError(403, 10000, "Authentication error")
    return account_id


def find_tunnel(request: web.Request, write: bool, *, live: bool = True) -> dict[str, Any]:
    check_account(request, write)
    tunnel_id = request.match_info["tunnel_id"]
    if not UUID_RE.match(tunnel_id):
        raise unroutable(request.path)
    store = state(request)
    tunnel = store.live_tunnel(tunnel_id) if live else store.tunnels.get(tunnel_id)
    if tunnel is None:
        raise not_found()
    return tunnel


def check_secret(value: Any) -> str:
    if not isinstance(value, str):
        raise bad_request("tunnel_secret must be a base64 string", 1001)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request("tunnel_secret must be valid base64", 1001) from exc
    if len(raw) < MIN_SECRET_BYTES:
        raise bad_request(f"tunnel_secret must be at least {MIN_SECRET_BYTES} bytes", 1001)
    return value


def check_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad_request("Tunnel name is required and must be a non-empty string", 1001)
    if len(value) > 255:
        raise bad_request("Tunnel name must be at most 255 characters", 1001)
    return value


def refuse_duplicate_name(request: web.Request, name: str, except_id: str | None = None) -> None:
    for other in state(request).tunnels.values():
        if other["name"] == name and other.get("deleted_at") is None and other["id"] != except_id:
            raise CloudflareError(409, 1013, "tunnel with name already exists")


async def create(request: web.Request) -> web.Response:
    account_id = check_account(request, write=True)
    body = await json_object(request)
    name = check_name(body.get("name"))
    config_src = body.get("config_src", "local")
    if config_src not in CONFIG_SOURCES:
        raise bad_request("config_src must be one of 'local', 'cloudflare'", 1001)
    secret = check_secret(body["tunnel_secret"]) if "tunnel_secret" in body else None
    refuse_duplicate_name(request, name)
    tunnel = {
        "id": str(uuid.uuid4()),
        "account_tag": account_id,
        "name": name,
        "created_at": now(),
        "deleted_at": None,
        "conns_active_at": None,
        "conns_inactive_at": None,
        "tun_type": "cfd_tunnel",
        "metadata": {},
        "remote_config": config_src == "cloudflare",
        "config_src": config_src,
        "secret": secret or base64.b64encode(secrets.token_bytes(32)).decode(),
        "config": None,
        "config_version": 0,
        "config_created_at": None,
    }
    store = state(request)
    store.tunnels[tunnel["id"]] = tunnel
    store.save()
    # The live API answers a create with the connector token too (Cloudflare's "Create a tunnel (API)"
    # guide shows it in the result); the OpenAPI schema and the SDK's CloudflareTunnel type do not list
    # it (the SDK keeps it as an extra field). Later reads (GET) do not carry it.
    view = store.tunnel_view(tunnel)
    view["token"] = encode_token(tunnel["account_tag"], tunnel["id"], tunnel["secret"])
    return ok(view)


def _bool_param(query: Any, name: str) -> bool | None:
    value = query.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise bad_request(f"{name} must be true or false", 1001)
    return value == "true"


def timestamp(value: str, name: str) -> datetime:
    """An RFC 3339 date-time with any UTC offset (cloudflared sends `--when` as time.RFC3339, its local
    offset included: cfapi/tunnel_filter.go ByExistedAt), as an aware datetime to compare instants."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise bad_request(f"{name} must be an RFC 3339 date-time", 1001) from exc
    if parsed.tzinfo is None:
        raise bad_request(f"{name} must be an RFC 3339 date-time", 1001)
    return parsed


def _existed_at(tunnel: dict[str, Any], instant: datetime) -> bool:
    """Created at or before `instant` and not deleted by then (schema `tunnel_existed_at`)."""
    if timestamp(tunnel["created_at"], "created_at") > instant:
        return False
    return tunnel["deleted_at"] is None or timestamp(tunnel["deleted_at"], "deleted_at") > instant


def _matches(tunnel: dict[str, Any], query: Any, status: str, existed: datetime | None) -> bool:
    deleted = _bool_param(query, "is_deleted")
    if deleted is not None and (tunnel.get("deleted_at") is not None) != deleted:
        return False
    checks = [
        ("name", lambda v: tunnel["name"] == v),
        ("uuid", lambda v: tunnel["id"] == v),
        ("include_prefix", lambda v: tunnel["name"].startswith(v)),
        # `cloudflared tunnel list --name-prefix` sends `name_prefix` (cfapi/tunnel_filter.go ByNamePrefix),
        # the schema names `include_prefix`: both select names starting with the value.
        ("name_prefix", lambda v: tunnel["name"].startswith(v)),
        ("exclude_prefix", lambda v: not tunnel["name"].startswith(v)),
        ("status", lambda v: status == v),
    ]
    if existed is not None and not _existed_at(tunnel, existed):
        return False
    return all(check(query[key]) for key, check in checks if key in query)


async def list_tunnels(request: web.Request) -> web.Response:
    check_account(request, write=False)
    existed = timestamp(request.query["existed_at"], "existed_at") if "existed_at" in request.query else None
    store = state(request)
    ordered = sorted(store.tunnels.values(), key=lambda t: (t["created_at"], t["id"]))
    found = [
        store.tunnel_view(t) for t in ordered if _matches(t, request.query, store.tunnel_status(t), existed)
    ]
    return paged(found, request.query, "tunnels")


async def get(request: web.Request) -> web.Response:
    tunnel = find_tunnel(request, write=False, live=False)
    return ok(state(request).tunnel_view(tunnel))


async def edit(request: web.Request) -> web.Response:
    tunnel = find_tunnel(request, write=True)
    body = await json_object(request)
    store = state(request)
    rotated = False
    if "name" in body:
        name = check_name(body["name"])
        refuse_duplicate_name(request, name, except_id=tunnel["id"])
        tunnel["name"] = name
    if "tunnel_secret" in body:
        secret = check_secret(body["tunnel_secret"])
        rotated = secret != tunnel["secret"]
        tunnel["secret"] = secret
    store.save()
    if rotated:
        store.emit("secret_rotated", tunnel["id"])
    return ok(store.tunnel_view(tunnel))


async def delete(request: web.Request) -> web.Response:
    tunnel = find_tunnel(request, write=True)
    store = state(request)
    # Connections pending reconnect count too: they are why users are told to run `cloudflared tunnel
    # cleanup` (DELETE …/connections) after stopping a connector, or `delete -f`, which adds ?cascade=true
    # ("Cascade will delete all tunnel dependencies (connections, routes, etc.)", cloudflared
    # cfapi/tunnel.go DeleteTunnel).
    if store.listed_connections(tunnel["id"]):
        if request.query.get("cascade") != "true":
            raise bad_request("Cannot delete tunnel because it has active connections", 1022)
        store.drop_connections(tunnel["id"])
    tunnel["deleted_at"] = now()
    store.save()
    store.emit("tunnel_deleted", tunnel["id"])
    return ok(store.tunnel_view(tunnel))


async def get_token(request: web.Request) -> web.Response:
    tunnel = find_tunnel(request, write=False)
    return ok(encode_token(tunnel["account_tag"], tunnel["id"], tunnel["secret"]))


def _config_result(tunnel: dict[str, Any]) -> dict[str, Any]:
    return {
        "account_id": tunnel["account_tag"],
        "tunnel_id": tunnel["id"],
        "version": tunnel["config_version"],
        "config": tunnel["config"],
        "source": tunnel["config_src"],
        "created_at": tunnel["config_created_at"] or tunnel["created_at"],
    }


async def get_config(request: web.Request) -> web.Response:
    tunnel = find_tunnel(request, write=False)
    return ok(_config_result(tunnel))


async def put_config(request: web.Request) -> web.Response:
    tunnel = find_tunnel(request, write=True)
    body = await json_object(request)
    if "config" not in body:
        raise bad_request("config is required", 1055)
    tunnel["config"] = validate_config(body["config"])
    tunnel["config_version"] += 1
    tunnel["config_created_at"] = now()
    store = state(request)
    store.save()
    store.emit("config_updated", tunnel["id"])
    return ok(_config_result(tunnel))


async def get_connections(request: web.Request) -> web.Response:
    tunnel = find_tunnel(request, write=False)
    clients = state(request).clients_view(tunnel["id"])
    return ok(
        clients,
        {"page": 1, "per_page": max(1, len(clients)), "count": len(clients), "total_count": len(clients)},
    )


async def delete_connections(request: web.Request) -> web.Response:
    tunnel = find_tunnel(request, write=True)
    state(request).drop_connections(tunnel["id"], request.query.get("client_id"))
    return ok({})


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    base = f"{prefix}/accounts/{{account_id}}/cfd_tunnel"
    one = f"{base}/{{tunnel_id}}"
    router.add_get(base, list_tunnels)
    router.add_post(base, create)
    router.add_get(one, get)
    router.add_patch(one, edit)
    router.add_delete(one, delete)
    router.add_get(f"{one}/token", get_token)
    router.add_get(f"{one}/configurations", get_config)
    router.add_put(f"{one}/configurations", put_config)
    router.add_get(f"{one}/connections", get_connections)
    router.add_delete(f"{one}/connections", delete_connections)
