"""What cloudflared's own API client relies on, at the HTTP level: content type, the zone-level route
endpoint, connections pending reconnect, and the list filters it sends (cfapi/ in cloudflared's source)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from .harness import ACCOUNT, READER, ZONE

CONNECTOR = "c0ffee00-0000-4000-8000-0000000000a1"


def tunnels_url(http) -> str:
    return f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel"


def new_tunnel(http, name: str) -> str:
    resp = http.post(tunnels_url(http), json={"name": name}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["result"]["id"]


def zone_id(emulator) -> str:
    return next(z["id"] for z in emulator.state.zones if z["name"] == ZONE)


def route(http, emulator, tunnel_id: str, body: dict):
    url = f"{http.api}/zones/{zone_id(emulator)}/tunnels/{tunnel_id}/routes"
    return http.put(url, json=body, timeout=10)


def dns(hostname: str, overwrite: bool = False) -> dict:
    return {"type": "dns", "user_hostname": hostname, "overwrite_existing": overwrite}


def records_named(http, emulator, name: str) -> list[tuple]:
    url = f"{http.api}/zones/{zone_id(emulator)}/dns_records"
    found = http.get(url, params={"name": name}, timeout=10).json()["result"]
    return [(r["type"], r["content"], r["proxied"]) for r in found]


class Clock:
    """Stands in for the store's monotonic clock, so ageing a connection needs no sleep."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def open_conn(emulator, tunnel_id: str, index: int, client_id: str = CONNECTOR) -> str:
    info = {"client_id": client_id, "client_version": "2026.8.2", "arch": "linux_amd64", "conn_index": index}
    return emulator.call(emulator.state.connection_opened, tunnel_id, info)


def close_conn(emulator, tunnel_id: str, conn_id: str) -> None:
    emulator.call(emulator.state.connection_closed, tunnel_id, conn_id)


def listed(http, tunnel_id: str) -> list[tuple[str, bool]]:
    clients = http.get(f"{tunnels_url(http)}/{tunnel_id}/connections", timeout=10).json()["result"]
    return sorted((c["id"], c["is_pending_reconnect"]) for client in clients for c in client["conns"])


def status(http, tunnel_id: str) -> str:
    return http.get(f"{tunnels_url(http)}/{tunnel_id}", timeout=10).json()["result"]["status"]


def test_every_answer_is_exactly_application_json(http):
    # cloudflared decodes an error body only for this exact type (cfapi/base_client.go statusCodeToError).
    answers = [
        http.get(tunnels_url(http), timeout=10),
        http.get(f"{tunnels_url(http)}/{uuid.uuid4()}", timeout=10),
        http.post(tunnels_url(http), data=b"{", timeout=10),
        http.get(f"{http.api}/no/such/route", timeout=10),
        http.get(tunnels_url(http), headers={"Authorization": "Bearer " + "x" * 40}, timeout=10),
    ]
    assert [a.status_code for a in answers] == [200, 404, 400, 400, 403]
    assert {a.headers["Content-Type"] for a in answers} == {"application/json"}


def test_route_dns_new_unchanged_collision_and_overwrite(http, emulator):
    tunnel_id = new_tunnel(http, "routes")
    target = f"{tunnel_id}.cfargotunnel.com"
    first = route(http, emulator, tunnel_id, dns("api"))
    assert first.status_code == 200 and first.json()["result"] == {"cname": "new", "name": f"api.{ZONE}"}
    assert records_named(http, emulator, f"api.{ZONE}") == [("CNAME", target, True)]
    assert emulator.call(emulator.state.route_hostname, f"api.{ZONE}") == tunnel_id
    again = route(http, emulator, tunnel_id, dns(f"API.{ZONE}.", overwrite=True))
    assert again.json()["result"] == {"cname": "unchanged", "name": f"api.{ZONE}"}
    assert records_named(http, emulator, f"api.{ZONE}") == [("CNAME", target, True)]

    # The same name, not proxied, does not route through a tunnel: it collides like any address record.
    url = f"{http.api}/zones/{zone_id(emulator)}/dns_records"
    plain = {"type": "CNAME", "name": "web", "content": target, "proxied": False}
    assert http.post(url, json=plain, timeout=10).status_code == 200
    refused = route(http, emulator, tunnel_id, dns("web"))
    assert refused.status_code == 400
    assert refused.json()["errors"] == [
        {"code": 1003, "message": "An A, AAAA, or CNAME record with that host already exists."}
    ]
    replaced = route(http, emulator, tunnel_id, dns("web", overwrite=True))
    # "updated" is in cloudflared's vocabulary, "not currently returned by tunnelstore" (cfapi/hostname.go).
    assert replaced.json()["result"] == {"cname": "new", "name": f"web.{ZONE}"}
    assert records_named(http, emulator, f"web.{ZONE}") == [("CNAME", target, True)]

    # Both A and AAAA records of a name are replaced by the one CNAME.
    for rtype, content in (("A", "192.0.2.1"), ("AAAA", "2001:db8::1")):
        body = {"type": rtype, "name": "dual", "content": content, "ttl": 300}
        assert http.post(url, json=body, timeout=10).status_code == 200
    assert route(http, emulator, tunnel_id, dns("dual")).json()["errors"][0]["code"] == 1003
    assert route(http, emulator, tunnel_id, dns("dual", overwrite=True)).status_code == 200
    assert records_named(http, emulator, f"dual.{ZONE}") == [("CNAME", target, True)]
    # A wildcard hostname is a route too; the edge matches it for names below the zone.
    assert route(http, emulator, tunnel_id, dns(f"*.{ZONE}")).json()["result"]["cname"] == "new"
    assert emulator.call(emulator.state.route_hostname, f"anything.{ZONE}") == tunnel_id


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "lb", "lb_name": "lb.lab.test", "lb_pool": "pool"}, 1001),
        ({"type": "mx", "user_hostname": "x"}, 1001),
        ({"type": "dns", "user_hostname": "x", "overwrite_existing": "yes"}, 1001),
        ({"type": "dns", "user_hostname": "bad..name"}, 9000),
        ({"type": "dns"}, 9000),
    ],
)
def test_route_refuses_what_it_cannot_make(http, emulator, body, code):
    tunnel_id = new_tunnel(http, "refusals")
    resp = route(http, emulator, tunnel_id, body)
    assert (resp.status_code, resp.json()["errors"][0]["code"]) == (400, code)
    assert not any(r["type"] == "CNAME" for r in emulator.state.records[zone_id(emulator)].values())


def test_route_needs_dns_edit_and_a_live_tunnel(http, emulator):
    tunnel_id = new_tunnel(http, "guarded")
    url = f"{http.api}/zones/{zone_id(emulator)}/tunnels/{tunnel_id}/routes"
    denied = http.put(url, json=dns("ro"), headers={"Authorization": f"Bearer {READER}"}, timeout=10)
    assert (denied.status_code, denied.json()["errors"][0]["code"]) == (403, 10000)
    missing = route(http, emulator, str(uuid.uuid4()), dns("ghost"))
    assert (missing.status_code, missing.json()["errors"][0]["code"]) == (404, 1003)
    assert route(http, emulator, "not-a-uuid", dns("ghost")).json()["errors"][0]["code"] == 7003
    assert http.delete(f"{tunnels_url(http)}/{tunnel_id}", timeout=10).status_code == 200
    gone = route(http, emulator, tunnel_id, dns("late"))
    assert (gone.status_code, gone.json()["errors"][0]["code"]) == (404, 1003)
    assert records_named(http, emulator, f"ro.{ZONE}") == records_named(http, emulator, f"late.{ZONE}") == []


def test_closed_connections_stay_listed_pending_reconnect_then_expire(http, emulator):
    clock = Clock()
    emulator.state.clock = clock
    tunnel_id = new_tunnel(http, "flappy")
    first, second = open_conn(emulator, tunnel_id, 0), open_conn(emulator, tunnel_id, 1)
    assert status(http, tunnel_id) == "healthy"
    close_conn(emulator, tunnel_id, first)
    # Listed, flagged; not live: the edge's routing mapping holds only the other one.
    assert listed(http, tunnel_id) == sorted([(first, True), (second, False)])
    assert list(emulator.state.connections[tunnel_id]) == [second]
    assert status(http, tunnel_id) == "degraded"
    view = http.get(f"{tunnels_url(http)}/{tunnel_id}", timeout=10).json()["result"]
    assert sorted((c["id"], c["is_pending_reconnect"]) for c in view["connections"]) == listed(
        http, tunnel_id
    )
    # The connector reconnects its index 0: the new connection takes the pending one's place.
    again = open_conn(emulator, tunnel_id, 0)
    assert listed(http, tunnel_id) == sorted([(again, False), (second, False)])
    assert status(http, tunnel_id) == "healthy"
    close_conn(emulator, tunnel_id, again)
    close_conn(emulator, tunnel_id, second)
    assert listed(http, tunnel_id) == sorted([(again, True), (second, True)])
    assert status(http, tunnel_id) == "down" and tunnel_id not in emulator.state.connections
    clock.now += emulator.state.pending_reconnect_seconds - 1
    assert len(listed(http, tunnel_id)) == 2
    clock.now += 2
    assert listed(http, tunnel_id) == [] and status(http, tunnel_id) == "down"


def test_pending_connections_block_delete_until_cleanup_or_cascade(http, emulator):
    for name, clear in (("cleaned", "cleanup"), ("cascaded", "cascade")):
        tunnel_id = new_tunnel(http, name)
        close_conn(emulator, tunnel_id, open_conn(emulator, tunnel_id, 0))
        refused = http.delete(f"{tunnels_url(http)}/{tunnel_id}", timeout=10)
        assert (refused.status_code, refused.json()["errors"][0]["code"]) == (400, 1022)
        if clear == "cleanup":
            assert http.delete(f"{tunnels_url(http)}/{tunnel_id}/connections", timeout=10).status_code == 200
            assert listed(http, tunnel_id) == []
            deleted = http.delete(f"{tunnels_url(http)}/{tunnel_id}", timeout=10)
        else:
            deleted = http.delete(f"{tunnels_url(http)}/{tunnel_id}", params={"cascade": "true"}, timeout=10)
        assert deleted.status_code == 200 and deleted.json()["result"]["connections"] == []


def test_cleanup_of_one_connector_keeps_the_others_pending_entries(http, emulator):
    tunnel_id = new_tunnel(http, "two-connectors")
    other = "c0ffee00-0000-4000-8000-0000000000a2"
    mine = open_conn(emulator, tunnel_id, 0)
    theirs = open_conn(emulator, tunnel_id, 0, client_id=other)
    close_conn(emulator, tunnel_id, mine)
    close_conn(emulator, tunnel_id, theirs)
    resp = http.delete(
        f"{tunnels_url(http)}/{tunnel_id}/connections", params={"client_id": other}, timeout=10
    )
    assert resp.status_code == 200
    assert listed(http, tunnel_id) == [(mine, True)]


def test_a_zero_period_forgets_closed_connections_at_once(emulator, http):
    emulator.state.pending_reconnect_seconds = 0
    tunnel_id = new_tunnel(http, "forgetful")
    close_conn(emulator, tunnel_id, open_conn(emulator, tunnel_id, 0))
    assert listed(http, tunnel_id) == [] and status(http, tunnel_id) == "down"
    assert http.delete(f"{tunnels_url(http)}/{tunnel_id}", timeout=10).status_code == 200


def test_existed_at_compares_instants_whatever_the_offset(http, emulator):
    tunnel_id = new_tunnel(http, "dated")
    created = datetime.fromisoformat(emulator.state.tunnels[tunnel_id]["created_at"])

    def found(instant: datetime) -> bool:
        # cloudflared sends time.RFC3339 with its local offset (cfapi/tunnel_filter.go ByExistedAt).
        resp = http.get(tunnels_url(http), params={"existed_at": instant.isoformat()}, timeout=10)
        assert resp.status_code == 200, resp.text
        return [t["id"] for t in resp.json()["result"]] == [tunnel_id]

    east, west = timezone(timedelta(hours=9)), timezone(timedelta(hours=-7))
    assert found((created + timedelta(seconds=1)).astimezone(east))
    assert found((created + timedelta(seconds=1)).astimezone(west))
    # As strings these sort after the creation time; as instants they are before it.
    assert not found((created - timedelta(seconds=1)).astimezone(east))
    assert not found((created - timedelta(seconds=1)).astimezone(west))
    assert http.delete(f"{tunnels_url(http)}/{tunnel_id}", timeout=10).status_code == 200
    assert not found(datetime.now(UTC) + timedelta(seconds=5))
    bad = http.get(tunnels_url(http), params={"existed_at": "yesterday"}, timeout=10)
    assert (bad.status_code, bad.json()["errors"][0]["code"]) == (400, 1001)


def test_name_prefix_as_cloudflared_sends_it(http):
    for name in ("edge-a", "edge-b", "core"):
        new_tunnel(http, name)
    # `cloudflared tunnel list --name-prefix` sends name_prefix (cfapi/tunnel_filter.go ByNamePrefix).
    for key in ("name_prefix", "include_prefix"):
        resp = http.get(tunnels_url(http), params={key: "edge-"}, timeout=10)
        assert sorted(t["name"] for t in resp.json()["result"]) == ["edge-a", "edge-b"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/accounts/{account}/teamnet/routes"),
        ("GET", "/accounts/{account}/teamnet/virtual_networks"),
        ("POST", "/accounts/{account}/cfd_tunnel/{tunnel}/management/logs"),
    ],
)
def test_what_the_lab_does_not_emulate_answers_no_route(http, method, path):
    # `cloudflared tunnel route ip|vnet` and `cloudflared tail` call these; lab/cloudflare/README.md lists
    # them as not emulated, and they answer as an unknown route does, in the API's envelope.
    tunnel_id = new_tunnel(http, "unemulated")
    url = http.api + path.format(account=ACCOUNT, tunnel=tunnel_id)
    resp = http.request(method, url, timeout=10)
    assert (resp.status_code, resp.headers["Content-Type"]) == (400, "application/json")
    assert resp.json()["errors"] == [{"code": 7000, "message": "No route for that URI"}]
