"""Authentication and token permissions: the live API's status codes, error codes and envelope."""

from __future__ import annotations

import cloudflare
import pytest
import requests

from .harness import ACCOUNT, ADMIN, DNS_ONLY, OTHER_ACCOUNT, READER, STRANGER
from .openapi import validate_response

TUNNELS = "/accounts/{account_id}/cfd_tunnel"


def get_tunnels(emulator, headers, account=ACCOUNT):
    return requests.get(f"{emulator.api}/accounts/{account}/cfd_tunnel", headers=headers, timeout=10)


def test_missing_authorization_is_9106(emulator):
    resp = get_tunnels(emulator, {})
    assert resp.status_code == 400
    body = resp.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    assert body["errors"] == [
        {"code": 9106, "message": "Missing X-Auth-Key, X-Auth-Email or Authorization headers"}
    ]
    validate_response(TUNNELS, "get", 400, body)


@pytest.mark.parametrize("header", ["Bearer short", "Token " + ADMIN, "Bearer " + "!" * 40, ADMIN])
def test_malformed_authorization_is_6003_with_chain(emulator, header):
    resp = get_tunnels(emulator, {"Authorization": header})
    assert resp.status_code == 400
    error = resp.json()["errors"][0]
    assert (error["code"], error["message"]) == (6003, "Invalid request headers")
    assert error["error_chain"] == [{"code": 6111, "message": "Invalid format for Authorization header"}]


def test_unknown_token_is_403_authentication_error(emulator):
    resp = get_tunnels(emulator, {"Authorization": "Bearer " + "x" * 40})
    assert resp.status_code == 403
    assert resp.json()["errors"] == [{"code": 10000, "message": "Authentication error"}]
    validate_response(TUNNELS, "get", 403, resp.json())


def test_sdk_surfaces_the_code(emulator):
    client = cloudflare.Cloudflare(api_token="y" * 40, base_url=emulator.api, max_retries=0)
    with pytest.raises(cloudflare.PermissionDeniedError) as caught:
        client.get(f"/accounts/{ACCOUNT}/cfd_tunnel", cast_to=object)
    assert caught.value.status_code == 403
    assert caught.value.body["errors"][0]["code"] == 10000


def test_read_only_token_reads_but_cannot_write(emulator):
    auth = {"Authorization": f"Bearer {READER}"}
    assert get_tunnels(emulator, auth).status_code == 200
    resp = requests.post(
        f"{emulator.api}/accounts/{ACCOUNT}/cfd_tunnel", json={"name": "x"}, headers=auth, timeout=10
    )
    assert resp.status_code == 403 and resp.json()["errors"][0]["code"] == 10000
    assert emulator.state.tunnels == {}


def test_token_scopes_account_and_zones(emulator):
    assert get_tunnels(emulator, {"Authorization": f"Bearer {DNS_ONLY}"}).status_code == 403
    stranger = {"Authorization": f"Bearer {STRANGER}"}
    assert get_tunnels(emulator, stranger).status_code == 403
    # Its own account is not the lab account: the emulator knows nothing there either.
    assert get_tunnels(emulator, stranger, OTHER_ACCOUNT).status_code == 403
    zones = requests.get(f"{emulator.api}/zones", headers=stranger, timeout=10).json()
    assert zones["success"] is True and zones["result"] == []


def test_verify_token(emulator):
    ok = requests.get(
        f"{emulator.api}/user/tokens/verify", headers={"Authorization": f"Bearer {READER}"}, timeout=10
    )
    assert ok.status_code == 200 and ok.json()["result"] == {"id": "reader", "status": "active"}


def test_unknown_route_is_7000(http):
    resp = http.get(f"{http.api}/accounts/{ACCOUNT}/nothing_here", timeout=10)
    assert resp.status_code == 400 and resp.json()["errors"][0]["code"] == 7000


def test_zone_lookup_needs_zone_read(emulator):
    """A DNS-only token can edit records by zone id but cannot look the zone up by name, as live."""
    dns_only = {"Authorization": f"Bearer {DNS_ONLY}"}
    zones = requests.get(f"{emulator.api}/zones", params={"name": "lab.test"}, headers=dns_only, timeout=10)
    assert zones.status_code == 200 and zones.json()["result"] == []
    zone_id = emulator.state.zones[0]["id"]
    assert requests.get(f"{emulator.api}/zones/{zone_id}", headers=dns_only, timeout=10).status_code == 403
    records = requests.get(f"{emulator.api}/zones/{zone_id}/dns_records", headers=dns_only, timeout=10)
    assert records.status_code == 200 and records.json()["result"] == []
