"""`/zones` (list with `name`, `status`, `account.id` filters) and `/zones/{zone_id}`."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from .auth import authentication_error
from .envelope import ok, paged, unroutable
from .keys import state, token

ZONE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
ZONE_TIMESTAMP = "2024-01-01T00:00:00.000000Z"


def zone_view(request: web.Request, zone: dict[str, Any]) -> dict[str, Any]:
    store = state(request)
    return {
        "id": zone["id"],
        "name": zone["name"],
        "status": "active",
        "paused": False,
        "type": "full",
        "development_mode": 0,
        "name_servers": ["ada.ns.lab.test", "bob.ns.lab.test"],
        "original_name_servers": None,
        "original_registrar": None,
        "original_dnshost": None,
        "created_on": ZONE_TIMESTAMP,
        "modified_on": ZONE_TIMESTAMP,
        "activated_on": ZONE_TIMESTAMP,
        "meta": {"step": 2, "custom_certificate_quota": 0, "page_rule_quota": 3, "phishing_detected": False},
        "owner": {"id": None, "type": "user", "email": None},
        "account": {"id": store.account_id, "name": store.account_name},
        "permissions": sorted(token(request).permissions),
        "plan": {
            "id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
            "name": "Free Website",
            "price": 0,
            "currency": "USD",
        },
    }


def find_zone(request: web.Request) -> dict[str, Any]:
    """The zone in the path, if it exists and the token covers it (any permission; callers refine)."""
    zone_id = request.match_info["zone_id"]
    zone = state(request).zone(zone_id) if ZONE_ID_RE.match(zone_id) else None
    if zone is None:
        raise unroutable(request.path)
    if zone["name"] not in token(request).zones:
        raise authentication_error()
    return zone


def _visible(request: web.Request, zone: dict[str, Any]) -> bool:
    query = request.query
    return (
        token(request).sees_zone(zone["name"])
        and query.get("name", zone["name"]) == zone["name"]
        and query.get("status", "active") == "active"
        and query.get("account.id", state(request).account_id) == state(request).account_id
    )


async def list_zones(request: web.Request) -> web.Response:
    zones = [zone_view(request, z) for z in sorted(state(request).zones, key=lambda z: z["name"])]
    return paged([z for z in zones if _visible(request, z)], request.query, "zones")


async def get_zone(request: web.Request) -> web.Response:
    zone = find_zone(request)
    if not token(request).sees_zone(zone["name"]):
        raise authentication_error()
    return ok(zone_view(request, zone))


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_get(f"{prefix}/zones", list_zones)
    router.add_get(f"{prefix}/zones/{{zone_id}}", get_zone)
