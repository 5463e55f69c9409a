"""`PUT /zones/{zone_id}/tunnels/{tunnel_id}/routes`: what `cloudflared tunnel route dns` calls.

cloudflared (cfapi/hostname.go, RouteTunnel) sends `{"type": "dns", "user_hostname": ...,
"overwrite_existing": bool}` to the zone of its origin certificate and reads `{"cname": "new" | "unchanged" |
"updated", "name": ...}`, printing "Added CNAME <name> which will route to this tunnel" or "<name> is already
configured to route to your tunnel". The route is a proxied CNAME `<tunnel id>.cfargotunnel.com`, an ordinary
DNS record: it shows in `/dns_records` and the lab edge routes by it (store.route_hostname).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .auth import require_account, require_zone
from .dns import store_record
from .dns_rules import ADDRESS_TYPES, full_name, normalise
from .envelope import CloudflareError, bad_request, json_object, ok, unroutable
from .keys import state, token
from .store import TUNNEL_TARGET_SUFFIX
from .tunnels import UUID_RE, not_found
from .zones import find_zone

# cfapi/hostname.go: "updated" exists in cloudflared's vocabulary but, in its own words, "is not currently
# returned by tunnelstore"; an overwrite replaces the colliding records with a new one, so it answers "new".
NEW, UNCHANGED = "new", "unchanged"


def collision() -> CloudflareError:
    """Public reports of real cloudflared: `Failed to add route: code: 1003, reason: An A, AAAA, or CNAME
    record with that host already exists.` (cloudflared then suggests --overwrite-dns)."""
    return CloudflareError(400, 1003, "An A, AAAA, or CNAME record with that host already exists.")


def _tunnel(request: web.Request, zone: dict[str, Any]) -> dict[str, Any]:
    store = state(request)
    require_account(token(request), store.account_id, "Cloudflare Tunnel", write=False)
    tunnel_id = request.match_info["tunnel_id"]
    if not UUID_RE.match(tunnel_id):
        raise unroutable(request.path)
    tunnel = store.live_tunnel(tunnel_id)
    if tunnel is None:
        raise not_found()
    return tunnel


def _dns_route(request: web.Request, zone: dict[str, Any], tunnel: dict[str, Any], body: dict) -> dict:
    hostname = body.get("user_hostname")
    overwrite = body.get("overwrite_existing", False)
    if not isinstance(overwrite, bool):
        raise bad_request("overwrite_existing must be a boolean", 1001)
    # Names are completed within the zone, as the DNS API does: a hostname of another domain becomes
    # `<hostname>.<zone>` (a known surprise of `route dns` with a certificate for another zone).
    name = full_name(hostname, zone["name"])
    target = f"{tunnel['id']}{TUNNEL_TARGET_SUFFIX}"
    records = state(request).records[zone["id"]]
    same = [r for r in records.values() if r["name"] == name and r["type"] in ADDRESS_TYPES]
    if [(r["type"], r["content"], r["proxied"]) for r in same] == [("CNAME", target, True)]:
        return {"cname": UNCHANGED, "name": name}
    if same and not overwrite:
        raise collision()
    for record in same:
        del records[record["id"]]
    fields = normalise({"type": "CNAME", "name": name, "content": target, "proxied": True}, zone["name"])
    store_record(request, zone, fields, None)
    return {"cname": NEW, "name": name}


async def route_tunnel(request: web.Request) -> web.Response:
    zone = find_zone(request)
    require_zone(token(request), zone["name"], "DNS", write=True)
    tunnel = _tunnel(request, zone)
    body = await json_object(request)
    kind = body.get("type")
    if kind == "dns":
        return ok(_dns_route(request, zone, tunnel, body))
    if kind == "lb":
        # `route lb` makes a load balancer and pool: the lab has no Load Balancing API (lab/README).
        raise bad_request("Load balancer routes are not emulated by the lab", 1001)
    raise bad_request("type must be one of 'dns', 'lb'", 1001)


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_put(f"{prefix}/zones/{{zone_id}}/tunnels/{{tunnel_id}}/routes", route_tunnel)
