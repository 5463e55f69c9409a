"""module_utils/cloudflare.py: the SDK transport with our error mapping, retry policy and paging."""

from __future__ import annotations

import time

import pytest
from ansible_collections.llm_relay.homelab.plugins.module_utils import cloudflare as cf_utils
from ansible_collections.llm_relay.homelab.tests.unit.plugins.scripted_api import envelope

ACCOUNT = "0123456789abcdef0123456789abcdef"


def client_for(api, **kwargs):
    options = {"api_token": "test-token", "base_url": api.base_url, "account_id": ACCOUNT, "timeout": 2.0}
    options.update(kwargs)
    return cf_utils.CloudflareClient(**options)


def test_result_unwrapped_and_token_sent(scripted_api, monkeypatch):
    monkeypatch.setenv("CLOUDFLARE_API_KEY", "global-key-from-env")
    monkeypatch.setenv("CLOUDFLARE_EMAIL", "someone@example.com")
    scripted_api.push(200, envelope({"id": "abc", "name": "t"}))
    client = client_for(scripted_api)
    assert client.request("get", "/accounts/x/cfd_tunnel/abc") == {"id": "abc", "name": "t"}
    # The task's token wins over the SDK's environment fallbacks.
    assert scripted_api.requests[0]["auth"] == "Bearer test-token"
    assert scripted_api.requests[0]["path"] == "/client/v4/accounts/x/cfd_tunnel/abc"


def test_429_waits_retry_after_then_succeeds(scripted_api):
    scripted_api.push(429, envelope(errors=[{"code": 971, "message": "Please wait"}]), {"Retry-After": "2"})
    scripted_api.push(200, envelope([]))
    client = client_for(scripted_api)
    assert client.request("get", "/zones") == []
    first, second = scripted_api.requests
    assert second["time"] - first["time"] >= 1.9  # Retry-After honoured, not the 0.5 s default backoff


def test_503_retried_with_backoff(scripted_api):
    scripted_api.push(503, envelope(errors=[{"code": 10000, "message": "unavailable"}]))
    scripted_api.push(502, "bad gateway")
    scripted_api.push(200, envelope({"ok": True}))
    client = client_for(scripted_api)
    assert client.request("get", "/zones") == {"ok": True}
    assert len(scripted_api.requests) == 3


def test_retry_budget_exhausted_reports_cloudflare_error(scripted_api):
    for _attempt in range(3):
        scripted_api.push(503, envelope(errors=[{"code": 10000, "message": "service unavailable"}]))
    client = client_for(scripted_api, max_retries=2)
    with pytest.raises(cf_utils.CloudflareAPIError) as caught:
        client.request("get", "/zones")
    assert caught.value.status == 503
    assert caught.value.code == 10000
    assert "Cloudflare error 10000: service unavailable (HTTP 503, GET /zones)" in caught.value.describe()
    assert len(scripted_api.requests) == 3


def test_409_is_not_retried(scripted_api):
    scripted_api.push(409, envelope(errors=[{"code": 1013, "message": "You already have a tunnel named x"}]))
    client = client_for(scripted_api)
    with pytest.raises(cf_utils.CloudflareAPIError) as caught:
        client.request("post", "/accounts/x/cfd_tunnel", body={"name": "x"})
    assert caught.value.code == 1013
    assert len(scripted_api.requests) == 1


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, 81053, "An A, AAAA, or CNAME record with that host already exists."),
        (403, 10000, "Authentication error"),
    ],
)
def test_http_errors_carry_code_and_message(scripted_api, status, code, message):
    scripted_api.push(status, envelope(errors=[{"code": code, "message": message}]))
    client = client_for(scripted_api)
    with pytest.raises(cf_utils.CloudflareAPIError) as caught:
        client.request("post", "/zones/z/dns_records", body={})
    assert (caught.value.code, caught.value.message, caught.value.status) == (code, message, status)
    assert len(scripted_api.requests) == 1  # 4xx other than 408/409/429 are final


def test_hang_beyond_budget_is_a_clear_timeout(scripted_api):
    for _attempt in range(2):
        scripted_api.push(200, envelope({}), delay=3)
    client = client_for(scripted_api, timeout=0.5, max_retries=1)
    started = time.monotonic()
    with pytest.raises(cf_utils.CloudflareAPIError) as caught:
        client.request("get", "/zones")
    assert time.monotonic() - started < 5
    text = caught.value.describe()
    assert "no answer from the Cloudflare API within timeout=0.5s, 2 attempt(s) made" in text
    assert "GET /zones" in text


def test_success_false_in_200_is_an_error(scripted_api):
    scripted_api.push(200, envelope(errors=[{"code": 1234, "message": "odd"}]))
    with pytest.raises(cf_utils.CloudflareAPIError) as caught:
        client_for(scripted_api).request("get", "/zones")
    assert caught.value.code == 1234


def test_list_all_pages_until_short_page(scripted_api):
    scripted_api.push(200, envelope([{"id": "a"}, {"id": "b"}], result_info={"page": 1, "per_page": 2}))
    scripted_api.push(200, envelope([{"id": "c"}], result_info={"page": 2, "per_page": 2}))
    items = client_for(scripted_api).list_all("/zones", per_page=2)
    assert [i["id"] for i in items] == ["a", "b", "c"]
    assert "page=2" in scripted_api.requests[1]["path"]


def test_list_all_stops_when_server_ignores_page(scripted_api):
    for _attempt in range(3):
        scripted_api.push(200, envelope([{"id": "a"}, {"id": "b"}]))
    items = client_for(scripted_api).list_all("/zones", per_page=2)
    assert [i["id"] for i in items] == ["a", "b"]
    assert len(scripted_api.requests) == 2


def test_tunnel_lookup_filters_exact_name_and_deleted(scripted_api):
    scripted_api.push(
        200,
        envelope(
            [
                {"id": "1", "name": "relay", "deleted_at": None},
                {"id": "2", "name": "relay", "deleted_at": "2026-01-01T00:00:00Z"},
                {"id": "3", "name": "relay-2", "deleted_at": None},
            ]
        ),
    )
    found = client_for(scripted_api).find_tunnels("relay")
    assert [t["id"] for t in found] == ["1"]
    assert "name=relay" in scripted_api.requests[0]["path"]
    assert "is_deleted=false" in scripted_api.requests[0]["path"]


def test_unknown_zone_name(scripted_api):
    scripted_api.push(200, envelope([]))
    with pytest.raises(cf_utils.CloudflareAPIError, match=r"zone 'nope\.test' not found"):
        client_for(scripted_api).resolve_zone("nope.test")


def test_zone_id_is_used_as_is(scripted_api):
    zone_id = "023e105f4ecef8ad9ca31a8372d0c353"
    assert client_for(scripted_api).resolve_zone(zone_id) == (zone_id, None)
    assert scripted_api.requests == []


def test_tunnel_secret_is_32_random_bytes():
    import base64

    first, second = cf_utils.new_tunnel_secret(), cf_utils.new_tunnel_secret()
    assert len(base64.b64decode(first)) == 32
    assert first != second


def test_fail_api_names_the_option_to_check():
    captured = {}

    class Module:
        def fail_json(self, **kwargs):
            captured.update(kwargs)

    auth = cf_utils.CloudflareAPIError("Authentication error", code=10000, status=403, request="GET /zones")
    cf_utils.fail_api(Module(), auth, "cloudflare_dns_record zone=lab.test name=a")
    assert captured["msg"] == (
        "cloudflare_dns_record zone=lab.test name=a: Cloudflare error 10000: Authentication error "
        "(HTTP 403, GET /zones); check api_token (its permissions and the account/zone it covers)"
    )
    assert (captured["cloudflare_code"], captured["status_code"]) == (10000, 403)
    route = cf_utils.CloudflareAPIError("Could not route", code=7003, status=400)
    cf_utils.fail_api(Module(), route, "x", {7003: "zone"})
    assert captured["msg"].endswith("; check zone")


def test_error_chain_is_part_of_the_message(scripted_api):
    chain = [{"code": 6111, "message": "Invalid format for Authorization header"}]
    scripted_api.push(
        400, envelope(errors=[{"code": 6003, "message": "Invalid request headers", "error_chain": chain}])
    )
    with pytest.raises(cf_utils.CloudflareAPIError) as caught:
        client_for(scripted_api).request("get", "/zones")
    assert caught.value.message == "Invalid request headers (6111: Invalid format for Authorization header)"
