"""Request bodies: what the OpenAPI subset accepts the emulator accepts, and what it refuses is refused.

Bodies where the live API is stricter than the schema (e.g. a tunnel without `name`) are covered by the
bad-input tests of each resource instead.
"""

from __future__ import annotations

import pytest

from lab.cloudflare.store import zone_id_for

from .harness import ACCOUNT, ZONE
from .openapi import request_is_valid, validate_response

TUNNELS = "/accounts/{account_id}/cfd_tunnel"
ONE = TUNNELS + "/{tunnel_id}"
CONFIGS = ONE + "/configurations"
RECORDS = "/zones/{zone_id}/dns_records"
RECORD = RECORDS + "/{dns_record_id}"
CATCH_ALL = {"service": "http_status:404"}

CASES = [
    (TUNNELS, "post", {"name": "c-ok", "config_src": "cloudflare"}, True),
    (TUNNELS, "post", {"name": "c-local"}, True),
    (TUNNELS, "post", {"name": "c-enum", "config_src": "remote"}, False),
    (TUNNELS, "post", {"name": 5}, False),
    (TUNNELS, "post", {"name": "c-secret", "tunnel_secret": 5}, False),
    (ONE, "patch", {"name": "renamed"}, True),
    (ONE, "patch", {"name": ["x"]}, False),
    (
        CONFIGS,
        "put",
        {"config": {"ingress": [{"hostname": "a.lab.test", "service": "http://x:80"}, CATCH_ALL]}},
        True,
    ),
    (CONFIGS, "put", {"config": {"ingress": [CATCH_ALL], "originRequest": {"connectTimeout": 30}}}, True),
    (CONFIGS, "put", {"config": {"ingress": [CATCH_ALL], "originRequest": {"connectTimeout": "30s"}}}, False),
    (CONFIGS, "put", {"config": {"ingress": [CATCH_ALL], "originRequest": {"noTLSVerify": "yes"}}}, False),
    (CONFIGS, "put", {"config": {"ingress": "everything"}}, False),
    (CONFIGS, "put", {"config": {"ingress": [CATCH_ALL], "warp-routing": {"enabled": "yes"}}}, False),
    (CONFIGS, "put", {"config": {"ingress": [{"hostname": 7, "service": "http://x"}, CATCH_ALL]}}, False),
    (RECORDS, "post", {"type": "A", "name": "a1", "content": "192.0.2.1", "ttl": 3600}, True),
    (
        RECORDS,
        "post",
        {"type": "AAAA", "name": "a2", "content": "2001:db8::2", "proxied": True, "ttl": 1},
        True,
    ),
    (
        RECORDS,
        "post",
        {"type": "TXT", "name": "t", "content": "hi", "tags": ["owner:lab"], "comment": "c"},
        True,
    ),
    (RECORDS, "post", {"type": "MX", "name": "m", "content": "mx.lab.test", "priority": 10}, True),
    (RECORDS, "post", {"type": "MX", "name": "m", "content": "mx.lab.test"}, False),
    (RECORDS, "post", {"type": "A", "name": "a3", "content": "300.1.1.1"}, False),
    (RECORDS, "post", {"type": "AAAA", "name": "a4", "content": "192.0.2.1"}, False),
    (RECORDS, "post", {"type": "A", "name": "a5", "content": "192.0.2.5", "ttl": 10}, False),
    (RECORDS, "post", {"type": "A", "name": "a6", "content": "192.0.2.6", "proxied": "yes"}, False),
    (RECORDS, "post", {"type": "A", "name": 6, "content": "192.0.2.6"}, False),
    (RECORDS, "post", {"type": "A", "name": "a7", "content": "192.0.2.7", "tags": "owner:x"}, False),
    (RECORDS, "post", {"type": "CNAME", "name": "c"}, False),
    (RECORD, "put", {"type": "CNAME", "name": "r", "content": "target.example.com", "ttl": 120}, True),
    (RECORD, "put", {"type": "CNAME", "name": "r", "content": "target.example.com", "ttl": 100000}, False),
    (RECORD, "patch", {"type": "CNAME", "name": "r", "content": "other.example.com", "proxied": True}, True),
    (RECORD, "patch", {"type": "CNAME", "name": "r", "content": "other.example.com", "proxied": 1}, False),
]


@pytest.fixture
def ids(sdk, http):
    tunnel = sdk.zero_trust.tunnels.cloudflared.create(
        account_id=ACCOUNT, name="contract", config_src="cloudflare"
    )
    zone_id = zone_id_for(ZONE)
    body = {"type": "CNAME", "name": "r", "content": "target.example.com"}
    record = http.post(f"{http.api}/zones/{zone_id}/dns_records", json=body, timeout=10).json()["result"]
    return {"account_id": ACCOUNT, "tunnel_id": tunnel.id, "zone_id": zone_id, "dns_record_id": record["id"]}


@pytest.mark.parametrize(("template", "method", "body", "valid"), CASES)
def test_emulator_accepts_exactly_what_the_schema_accepts(http, ids, template, method, body, valid):
    assert request_is_valid(template, method, body) is valid
    resp = http.request(method.upper(), http.api + template.format(**ids), json=body, timeout=10)
    assert (resp.status_code == 200) is valid, resp.text
    validate_response(template, method, resp.status_code, resp.json())
