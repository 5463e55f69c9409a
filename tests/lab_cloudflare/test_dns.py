"""Zones and DNS records: lookup by name, CRUD, filters, the live API's validation and conflict codes."""

from __future__ import annotations

import cloudflare
import pytest

from lab.cloudflare.store import zone_id_for

from .harness import ACCOUNT, READER, ZONE
from .openapi import validate_request, validate_response

ZONE_ID = zone_id_for(ZONE)
TUNNEL_ID = "f70ff985-a4ef-4643-bbbc-4a0ed4fc8415"
RECORDS = "/zones/{zone_id}/dns_records"
ONE = RECORDS + "/{dns_record_id}"


def post(http, body, zone_id=ZONE_ID):
    return http.post(f"{http.api}/zones/{zone_id}/dns_records", json=body, timeout=10)


def cname(name="relay", target=f"{TUNNEL_ID}.cfargotunnel.com", proxied=True):
    return {"type": "CNAME", "name": name, "content": target, "proxied": proxied, "ttl": 1}


def test_zone_lookup_by_name(sdk, http):
    zones = list(sdk.zones.list(name=ZONE))
    assert [(z.id, z.name, z.account.id) for z in zones] == [(ZONE_ID, ZONE, ACCOUNT)]
    resp = http.get(f"{http.api}/zones", params={"name": ZONE}, timeout=10)
    validate_response("/zones", "get", 200, resp.json())
    assert resp.json()["result_info"] == {"page": 1, "per_page": 20, "count": 1, "total_count": 1}
    assert list(sdk.zones.list(name="unknown.test")) == []
    assert sdk.zones.get(zone_id=ZONE_ID).name == ZONE


def test_record_crud_through_sdk(sdk, emulator):
    records = sdk.dns.records
    created = records.create(
        zone_id=ZONE_ID,
        type="CNAME",
        name="relay",
        content=f"{TUNNEL_ID}.cfargotunnel.com",
        proxied=True,
        ttl=1,
    )
    assert (created.name, created.proxied, created.proxiable, created.ttl) == (
        "relay.lab.test",
        True,
        True,
        1,
    )
    assert emulator.call(emulator.state.route_hostname, "relay.lab.test") == TUNNEL_ID
    assert emulator.call(emulator.state.route_hostname, "RELAY.lab.test.") == TUNNEL_ID
    fetched = records.get(created.id, zone_id=ZONE_ID)
    assert fetched.content == f"{TUNNEL_ID}.cfargotunnel.com"
    edited = records.edit(created.id, zone_id=ZONE_ID, type="CNAME", name="relay", proxied=False, ttl=300)
    assert (edited.proxied, edited.ttl, edited.content) == (False, 300, created.content)
    assert emulator.call(emulator.state.route_hostname, "relay.lab.test") is None
    replaced = records.update(
        created.id, zone_id=ZONE_ID, type="A", name="relay", content="192.0.2.10", proxied=True, ttl=1
    )
    assert (replaced.type, replaced.content, replaced.ttl) == ("A", "192.0.2.10", 1)
    assert records.delete(created.id, zone_id=ZONE_ID).id == created.id
    with pytest.raises(cloudflare.NotFoundError) as caught:
        records.get(created.id, zone_id=ZONE_ID)
    assert caught.value.body["errors"] == [{"code": 81044, "message": "Record does not exist."}]


def test_record_shapes_against_schema(http):
    body = cname()
    validate_request(RECORDS, "post", body)
    resp = post(http, body)
    assert resp.status_code == 200, resp.text
    validate_response(RECORDS, "post", 200, resp.json())
    record = resp.json()["result"]
    one = f"{http.api}/zones/{ZONE_ID}/dns_records/{record['id']}"
    validate_response(ONE, "get", 200, http.get(one, timeout=10).json())
    validate_response(ONE, "patch", 200, http.patch(one, json={"comment": "tunnel"}, timeout=10).json())
    validate_response(ONE, "put", 200, http.put(one, json=cname(proxied=False), timeout=10).json())
    listed = http.get(f"{http.api}/zones/{ZONE_ID}/dns_records", timeout=10).json()
    validate_response(RECORDS, "get", 200, listed)
    validate_response(ONE, "delete", 200, http.delete(one, timeout=10).json())


def test_list_filters(http, sdk):
    post(http, cname("relay"))
    post(http, {"type": "A", "name": "box", "content": "192.0.2.1"})
    post(http, {"type": "TXT", "name": "relay", "content": "hello"})
    records = sdk.dns.records
    assert [r.type for r in records.list(zone_id=ZONE_ID, name={"exact": "relay.lab.test"})] == [
        "CNAME",
        "TXT",
    ]
    assert [r.name for r in records.list(zone_id=ZONE_ID, type="A")] == ["box.lab.test"]
    by_content = http.get(
        f"{http.api}/zones/{ZONE_ID}/dns_records", params={"content": "192.0.2.1"}, timeout=10
    )
    assert [r["name"] for r in by_content.json()["result"]] == ["box.lab.test"]
    both = http.get(
        f"{http.api}/zones/{ZONE_ID}/dns_records",
        params={"type": "CNAME", "name": "relay.lab.test"},
        timeout=10,
    )
    assert [r["type"] for r in both.json()["result"]] == ["CNAME"]


def test_cname_conflicts_81053_and_duplicates_81058(http, emulator):
    post(http, {"type": "A", "name": "busy", "content": "192.0.2.1"})
    clash = post(http, cname("busy"))
    assert clash.status_code == 400
    assert clash.json()["errors"] == [
        {"code": 81053, "message": "An A, AAAA, or CNAME record with that host already exists."}
    ]
    validate_response(RECORDS, "post", 400, clash.json())
    assert post(http, cname("relay")).status_code == 200
    twin = post(http, cname("relay"))
    assert twin.status_code == 400
    assert twin.json()["errors"] == [{"code": 81058, "message": "An identical record already exists."}]
    other_target = post(http, cname("relay", target="elsewhere.example.com"))
    assert other_target.json()["errors"][0]["code"] == 81053
    address_under_cname = post(http, {"type": "AAAA", "name": "relay", "content": "2001:db8::1"})
    assert address_under_cname.json()["errors"][0]["code"] == 81054
    assert len(emulator.state.records[ZONE_ID]) == 2


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "CNAME", "name": "bad name", "content": "x.example.com"}, 9000),
        ({"type": "CNAME", "name": "-lead.lab.test", "content": "x.example.com"}, 9000),
        ({"type": "CNAME", "name": "a" * 64, "content": "x.example.com"}, 9000),
        ({"type": "CNAME", "name": "", "content": "x.example.com"}, 9000),
        ({"type": "CNAME", "name": "ok", "content": "not a host"}, 9007),
        ({"type": "CNAME", "name": "ok", "content": "ok.lab.test"}, 9039),
        ({"type": "A", "name": "ok", "content": "300.1.1.1"}, 9005),
        ({"type": "AAAA", "name": "ok", "content": "192.0.2.1"}, 9006),
        ({"type": "A", "name": "ok", "content": "192.0.2.1", "ttl": 5}, 9021),
        ({"type": "A", "name": "ok", "content": "192.0.2.1", "proxied": "yes"}, 9003),
        ({"type": "TXT", "name": "ok", "content": "x", "proxied": True}, 9004),
        ({"type": "BOGUS", "name": "ok", "content": "x"}, 9020),
        ({"name": "ok", "content": "x"}, 9020),
    ],
)
def test_malformed_records_get_the_real_codes(http, emulator, body, code):
    resp = post(http, body)
    assert resp.status_code == 400
    validate_response(RECORDS, "post", 400, resp.json())
    assert resp.json()["errors"][0]["code"] == code
    assert emulator.state.records[ZONE_ID] == {}


def test_names_are_completed_within_the_zone(http):
    apex = post(http, {"type": "A", "name": "@", "content": "192.0.2.1"}).json()["result"]
    full = post(http, {"type": "A", "name": "Deep.Sub.LAB.test.", "content": "192.0.2.2"}).json()["result"]
    outside = post(http, {"type": "A", "name": "host.example.com", "content": "192.0.2.3"}).json()["result"]
    wildcard = post(http, cname("*.apps")).json()["result"]
    assert [r["name"] for r in (apex, full, outside, wildcard)] == [
        "lab.test",
        "deep.sub.lab.test",
        "host.example.com.lab.test",
        "*.apps.lab.test",
    ]


def test_wildcard_routes_one_label(http, emulator):
    post(http, cname("*.apps"))
    assert emulator.call(emulator.state.route_hostname, "x.apps.lab.test") == TUNNEL_ID
    assert emulator.call(emulator.state.route_hostname, "deeper.x.apps.lab.test") is None


@pytest.mark.parametrize("zone_id", ["0" * 32, "not-a-zone-id"])
def test_unknown_zone_is_7003(http, zone_id):
    resp = post(http, cname(), zone_id=zone_id)
    assert resp.status_code == 400 and resp.json()["errors"][0]["code"] == 7003
    listing = http.get(f"{http.api}/zones/{zone_id}/dns_records", timeout=10)
    assert listing.status_code == 400 and listing.json()["errors"][0]["code"] == 7003


def test_read_only_token_cannot_write_records(emulator):
    reader = cloudflare.Cloudflare(api_token=READER, base_url=emulator.api, max_retries=0)
    assert list(reader.dns.records.list(zone_id=ZONE_ID)) == []
    with pytest.raises(cloudflare.PermissionDeniedError):
        reader.dns.records.create(zone_id=ZONE_ID, type="A", name="x", content="192.0.2.1", ttl=1)
    # The reader's token does not cover the other zone at all.
    with pytest.raises(cloudflare.PermissionDeniedError):
        list(reader.dns.records.list(zone_id=zone_id_for("other.test")))


def test_comment_and_contains_filters(http):
    post(http, {"type": "TXT", "name": "note", "content": "x", "comment": "Managed by Ansible"})
    post(http, {"type": "TXT", "name": "other", "content": "y", "comment": "hand made"})
    url = f"{http.api}/zones/{ZONE_ID}/dns_records"
    found = http.get(url, params={"comment.contains": "ansible"}, timeout=10).json()["result"]
    assert [r["name"] for r in found] == ["note.lab.test"]
    either = http.get(
        url, params={"name": "note.lab.test", "content": "y", "match": "any"}, timeout=10
    ).json()
    assert sorted(r["name"] for r in either["result"]) == ["note.lab.test", "other.lab.test"]
    suffix = http.get(url, params={"name.endswith": "ther.lab.test"}, timeout=10).json()["result"]
    assert [r["name"] for r in suffix] == ["other.lab.test"]
