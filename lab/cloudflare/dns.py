"""`/zones/{zone_id}/dns_records…`: list (filters, order, paging), create, get, PUT, PATCH, DELETE."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from .auth import require_zone
from .dns_rules import PROXIABLE, normalise, refuse_conflicts
from .envelope import CloudflareError, bad_request, json_object, ok, paged
from .keys import state, token
from .store import now
from .zones import find_zone

RESOURCE = "DNS"
ORDER_KEYS = ("type", "name", "content", "ttl", "proxied")
EDITABLE = ("type", "name", "content", "proxied", "ttl", "comment", "tags", "settings", "priority")
# `<field>.<op>` filters of the list endpoint, for the fields our modules filter on.
FILTER_OPS = {
    "exact": lambda have, want: have == want,
    "contains": lambda have, want: want in have,
    "startswith": lambda have, want: have.startswith(want),
    "endswith": lambda have, want: have.endswith(want),
}


def zone_for(request: web.Request, write: bool) -> dict[str, Any]:
    zone = find_zone(request)
    require_zone(token(request), zone["name"], RESOURCE, write)
    return zone


def record_view(record: dict[str, Any]) -> dict[str, Any]:
    return record | {"proxiable": record["type"] in PROXIABLE, "meta": {}}


def find_record(request: web.Request, zone: dict[str, Any]) -> dict[str, Any]:
    record = state(request).records[zone["id"]].get(request.match_info["record_id"])
    if record is None:
        raise CloudflareError(404, 81044, "Record does not exist.")
    return record


def _filters(query: Any) -> list[Any]:
    checks = []
    for field in ("name", "content", "type", "comment"):
        for key, value in query.items():
            base, _, op = key.partition(".")
            if base != field or (op and op not in FILTER_OPS):
                continue
            want = value.lower()  # the live API matches names, contents and comments case-insensitively
            if field == "name" and op in ("", "exact"):
                want = want.rstrip(".")
            test = FILTER_OPS[op or "exact"]
            checks.append(lambda r, f=field, t=test, w=want: t(str(r.get(f) or "").lower(), w))
    if "proxied" in query:
        want_proxied = query["proxied"] == "true"
        checks.append(lambda r: r["proxied"] == want_proxied)
    return checks


async def list_records(request: web.Request) -> web.Response:
    zone = zone_for(request, write=False)
    query = request.query
    checks = _filters(query)
    match_any = query.get("match", "all") == "any"
    records = [
        r
        for r in state(request).records[zone["id"]].values()
        if not checks or (any if match_any else all)(c(r) for c in checks)
    ]
    order = query.get("order", "type")
    if order not in ORDER_KEYS:
        raise bad_request(f"order must be one of {', '.join(ORDER_KEYS)}", 1001)
    records.sort(
        key=lambda r: (r[order], r["name"], r["created_on"]), reverse=query.get("direction") == "desc"
    )
    return paged([record_view(r) for r in records], query, "dns_records")


def store_record(
    request: web.Request, zone: dict[str, Any], fields: dict[str, Any], record_id: str | None
) -> dict:
    records = state(request).records[zone["id"]]
    others = [r for rid, r in records.items() if rid != record_id]
    refuse_conflicts(fields, others)
    stamp = now()
    if record_id is None:
        record = {"id": uuid.uuid4().hex, "created_on": stamp} | fields | {"modified_on": stamp}
        records[record["id"]] = record
    else:
        record = records[record_id] | fields | {"modified_on": stamp}
        records[record_id] = record
    state(request).save()
    return record


async def create(request: web.Request) -> web.Response:
    zone = zone_for(request, write=True)
    fields = normalise(await json_object(request), zone["name"])
    return ok(record_view(store_record(request, zone, fields, None)))


async def get(request: web.Request) -> web.Response:
    zone = zone_for(request, write=False)
    return ok(record_view(find_record(request, zone)))


async def replace(request: web.Request) -> web.Response:
    zone = zone_for(request, write=True)
    record = find_record(request, zone)
    fields = normalise(await json_object(request), zone["name"])
    return ok(record_view(store_record(request, zone, fields, record["id"])))


async def patch(request: web.Request) -> web.Response:
    zone = zone_for(request, write=True)
    record = find_record(request, zone)
    body = await json_object(request)
    current = {k: record[k] for k in EDITABLE if k in record}
    if body.get("proxied") is False and "ttl" not in body:
        current["ttl"] = 1
    fields = normalise(current | body, zone["name"])
    return ok(record_view(store_record(request, zone, fields, record["id"])))


async def delete(request: web.Request) -> web.Response:
    zone = zone_for(request, write=True)
    record = find_record(request, zone)
    del state(request).records[zone["id"]][record["id"]]
    state(request).save()
    return ok({"id": record["id"]})


def add_routes(router: web.UrlDispatcher, prefix: str) -> None:
    base = f"{prefix}/zones/{{zone_id}}/dns_records"
    one = f"{base}/{{record_id}}"
    router.add_get(base, list_records)
    router.add_post(base, create)
    router.add_get(one, get)
    router.add_put(one, replace)
    router.add_patch(one, patch)
    router.add_delete(one, delete)
