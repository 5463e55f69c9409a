"""Access endpoints of the Cloudflare emulator: schema contract, permissions, secrets, rotation, errors.

Application bodies: the schema's `access_app_request` is an anyOf whose branches accept nearly any
object (a body without `type` matches the bookmark branch), while the live API refuses what it cannot
read ("app type is missing or invalid"); those refusals are tested as behaviour, not as schema cases.
"""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta

import cloudflare
import pytest
import requests

from lab.cloudflare.access import app_admits_token, application_for_host, service_token_for

from .access_harness import ACCESS_READER, NO_ACCESS, access_emulator
from .access_openapi import request_is_valid, validate_response
from .harness import ACCOUNT, ADMIN, STRANGER

APPS = "/accounts/{account_id}/access/apps"
APP = APPS + "/{app_id}"
POLICIES = "/accounts/{account_id}/access/policies"
POLICY = POLICIES + "/{policy_id}"
TOKENS = "/accounts/{account_id}/access/service_tokens"
TOKEN = TOKENS + "/{service_token_id}"
ROTATE = TOKEN + "/rotate"
REFRESH = TOKEN + "/refresh"
SERVICE_RULE = [{"service_token": {"token_id": "{service_token_id}"}}]


@pytest.fixture
def server(tmp_path):
    emulator = access_emulator(tmp_path / "state.json").start()
    yield emulator
    emulator.stop()


def session(token=ADMIN):
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    return http


@pytest.fixture
def http():
    with session() as s:
        yield s


@pytest.fixture
def sdk(server):
    client = cloudflare.Cloudflare(api_token=ADMIN, base_url=server.api, max_retries=0)
    yield client
    client.close()


def call(server, http, method, template, body=None, **ids):
    """One request; the answer is validated against the schema (status included). Returns (status, json)."""
    values = {"account_id": ACCOUNT} | ids
    resp = http.request(method, server.api + template.format(**values), json=body, timeout=10)
    validate_response(template, method, resp.status_code, resp.json())
    return resp.status_code, resp.json()


def fill(body, ids):
    return json.loads(json.dumps(body).replace("{service_token_id}", ids["service_token_id"]))


@pytest.fixture
def ids(server, http):
    _, tok = call(server, http, "POST", TOKENS, {"name": "contract"})
    body = {"name": "contract", "decision": "non_identity", "include": [{"any_valid_service_token": {}}]}
    _, policy = call(server, http, "POST", POLICIES, body)
    _, app = call(server, http, "POST", APPS, {"type": "self_hosted", "domain": "contract.lab.test"})
    return {
        "service_token_id": tok["result"]["id"],
        "policy_id": policy["result"]["id"],
        "app_id": app["result"]["id"],
    }


POLICY_OK = {"name": "p", "decision": "non_identity", "include": SERVICE_RULE}
CASES = [
    (TOKENS, "POST", {"name": "t1"}, True),
    (TOKENS, "POST", {"name": "t2", "duration": "60m"}, True),
    (TOKENS, "POST", {"name": 5}, False),
    (TOKENS, "POST", {"duration": "60m"}, False),
    (TOKEN, "PUT", {"name": "renamed", "duration": "8760h"}, True),
    (TOKEN, "PUT", {"duration": 5}, False),
    (POLICIES, "POST", POLICY_OK, True),
    (
        POLICIES,
        "POST",
        POLICY_OK | {"exclude": [{"ip": {"ip": "192.0.2.0/24"}}], "session_duration": "8h"},
        True,
    ),
    (POLICIES, "POST", POLICY_OK | {"decision": "maybe"}, False),
    (POLICIES, "POST", {"name": "p", "decision": "allow"}, False),
    (POLICIES, "POST", POLICY_OK | {"include": ["everyone"]}, False),
    (POLICIES, "POST", POLICY_OK | {"name": ["p"]}, False),
    (POLICY, "PUT", POLICY_OK | {"decision": "allow", "include": [{"everyone": {}}]}, True),
    (POLICY, "PUT", POLICY_OK | {"include": "everyone"}, False),
    (APPS, "POST", {"type": "self_hosted", "domain": "a1.lab.test"}, True),
    (APPS, "POST", {"type": "self_hosted", "domain": "a2.lab.test/api", "session_duration": "8h"}, True),
    (APP, "PUT", {"type": "self_hosted", "domain": "a3.lab.test", "service_auth_401_redirect": True}, True),
]


@pytest.mark.parametrize(("template", "method", "body", "valid"), CASES)
def test_emulator_accepts_exactly_what_the_schema_accepts(server, http, ids, template, method, body, valid):
    body = fill(body, ids)
    assert request_is_valid(template, method, body) is valid
    status, _ = call(server, http, method, template, body, **ids)
    assert (status < 300) is valid


def test_every_route_answers_in_the_schema_shape(server, http, ids):
    for method, template in [("GET", TOKENS), ("GET", TOKEN), ("POST", REFRESH), ("POST", ROTATE)]:
        assert call(server, http, method, template, **ids)[0] == 200
    for method, template in [("GET", POLICIES), ("GET", POLICY), ("GET", APPS), ("GET", APP)]:
        assert call(server, http, method, template, **ids)[0] == 200
    assert call(server, http, "DELETE", APP, **ids)[0] == 202
    assert call(server, http, "DELETE", POLICY, **ids)[0] == 202
    assert call(server, http, "DELETE", TOKEN, **ids)[0] == 200
    for template in (APP, POLICY, TOKEN):  # gone: 404 in the failure shape
        assert call(server, http, "GET", template, **ids)[0] == 404


def test_permissions_are_the_access_groups(server, ids):
    checks = [("GET", TOKENS), ("POST", TOKENS), ("GET", POLICIES), ("POST", POLICIES), ("GET", APPS)]
    with session(NO_ACCESS) as denied, session(STRANGER) as stranger, session(ACCESS_READER) as reader:
        for method, template in checks:
            for who in (denied, stranger):
                status, body = call(
                    server, who, method, template, {"name": "x"} if method == "POST" else None
                )
                assert (status, body["errors"][0]["code"]) == (403, 10000)
        assert call(server, reader, "GET", APPS)[0] == 200
        assert call(server, reader, "GET", TOKEN, **ids)[0] == 200
        status, body = call(server, reader, "POST", ROTATE, **ids)
        assert (status, body["errors"][0]["code"]) == (403, 10000)
        status, _ = call(server, reader, "PUT", APP, {"type": "self_hosted", "domain": "x.lab.test"}, **ids)
        assert status == 403


def test_secret_is_shown_once_and_stored_only_as_a_digest(server, http, sdk, tmp_path):
    created = sdk.zero_trust.access.service_tokens.create(account_id=ACCOUNT, name="once")
    assert len(created.client_secret) == 64 and created.client_id.endswith(".access")
    listed = http.get(f"{server.api}/accounts/{ACCOUNT}/access/service_tokens", timeout=10).text
    got = http.get(f"{server.api}/accounts/{ACCOUNT}/access/service_tokens/{created.id}", timeout=10).text
    assert created.client_secret not in listed + got and "client_secret" not in listed + got
    state_file = tmp_path / "state.json"
    assert created.client_secret not in state_file.read_text()
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert (
        server.call(service_token_for, server.state, created.client_id, created.client_secret)["id"]
        == created.id
    )


def test_rotation_grace_disable_and_expiry(server, http, sdk):
    tokens = sdk.zero_trust.access.service_tokens
    tok = tokens.create(account_id=ACCOUNT, name="rot")

    def valid(secret):
        return server.call(service_token_for, server.state, tok.client_id, secret) is not None

    immediate = tokens.rotate(tok.id, account_id=ACCOUNT)
    assert not valid(tok.client_secret) and valid(immediate.client_secret)
    later = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    graced = tokens.rotate(tok.id, account_id=ACCOUNT, previous_client_secret_expires_at=later)
    assert valid(immediate.client_secret) and valid(graced.client_secret)
    assert graced.client_id == tok.client_id
    # Moving the previous secret's expiry into the past revokes it at once (as the API reference says).
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tokens.update(tok.id, account_id=ACCOUNT, name="rot", previous_client_secret_expires_at=past)
    assert not valid(immediate.client_secret) and valid(graced.client_secret)
    tokens.update(tok.id, account_id=ACCOUNT, name="rot", enabled=False)
    assert not valid(graced.client_secret)
    tokens.update(tok.id, account_id=ACCOUNT, name="rot", enabled=True, duration="1ms")
    assert not valid(graced.client_secret)  # expired: created more than 1 ms ago
    refreshed = tokens.refresh(tok.id, account_id=ACCOUNT)
    assert refreshed.expires_at is not None


def test_policy_decides_which_tokens_the_application_admits(server, sdk):
    access = sdk.zero_trust.access
    one = access.service_tokens.create(account_id=ACCOUNT, name="one")
    two = access.service_tokens.create(account_id=ACCOUNT, name="two")
    rule = {"service_token": {"token_id": one.id}}
    policy = access.policies.create(account_id=ACCOUNT, name="svc", decision="non_identity", include=[rule])
    app = access.applications.create(
        account_id=ACCOUNT, type="self_hosted", domain="relay.lab.test", policies=[policy.id]
    )
    assert app.policies[0].id == policy.id and app.policies[0].precedence == 1

    def admits(tok):
        def decide():
            found = application_for_host(server.state, "RELAY.lab.test.")
            return app_admits_token(server.state, found, server.state.access["service_tokens"][tok.id])

        return server.call(decide)

    assert admits(one) and not admits(two)
    anyone = [{"any_valid_service_token": {}}]
    access.policies.update(policy.id, account_id=ACCOUNT, name="svc", decision="non_identity", include=anyone)
    assert admits(one) and admits(two)
    access.policies.update(
        policy.id, account_id=ACCOUNT, name="svc", decision="non_identity", include=anyone, exclude=[rule]
    )
    assert not admits(one) and admits(two)
    access.policies.update(policy.id, account_id=ACCOUNT, name="svc", decision="deny", include=anyone)
    assert not admits(two)
    assert server.call(application_for_host, server.state, "other.lab.test") is None


def test_refusals_carry_access_codes(server, http, ids):
    def refused(method, template, body=None, **extra):
        status, answer = call(server, http, method, template, body, **(ids | extra))
        assert status >= 400
        return status, answer["errors"][0]["code"], answer["errors"][0]["message"]

    missing = "00000000-0000-4000-8000-000000000000"
    assert refused("GET", APP, app_id=missing) == (404, 11021, "access.api.error.unknown_application")
    assert refused("GET", POLICY, policy_id=missing) == (404, 12135, "access.api.error.not_found")
    assert refused("POST", ROTATE, service_token_id=missing) == (404, 12135, "access.api.error.not_found")
    invalid = "access.api.error.invalid_request: "
    assert refused("POST", APPS, {"domain": "x.lab.test"})[1:] == (
        12130,
        invalid + "app type is missing or invalid",
    )
    assert refused("POST", APPS, {"type": "self_hosted", "domain": "relay.example.com"})[2] == (
        invalid + "domain does not belong to zone"
    )
    assert "not emulated" in refused("POST", APPS, {"type": "saas", "domain": "x.lab.test"})[2]
    inline = {"type": "self_hosted", "domain": "x.lab.test", "policies": [POLICY_OK]}
    assert "inline application policies" in refused("POST", APPS, inline)[2]
    dangling = POLICY_OK | {"include": [{"service_token": {"token_id": missing}}]}
    assert refused("POST", POLICIES, dangling)[1] == 12130
    assert refused("POST", TOKENS, {"name": "d", "duration": "one year"})[1] == 12130
    linked = {"type": "self_hosted", "domain": "contract.lab.test", "policies": [ids["policy_id"]]}
    assert call(server, http, "PUT", APP, linked, **ids)[0] == 200
    assert refused("DELETE", POLICY)[:2] == (400, 12130)  # still linked
    page = http.get(f"{server.api}/accounts/{ACCOUNT}/access/apps?per_page=7", timeout=10)
    assert (page.status_code, page.json()["errors"][0]["code"]) == (400, 12091)


def test_put_replaces_the_application_and_lists_page(server, http, sdk, ids):
    apps = sdk.zero_trust.access.applications
    body = {
        "type": "self_hosted",
        "domain": "contract.lab.test",
        "app_launcher_visible": False,
        "tags": ["x"],
    }
    call(server, http, "PUT", APP, body, **ids)
    _, answer = call(server, http, "PUT", APP, {"type": "self_hosted", "domain": "contract.lab.test"}, **ids)
    assert answer["result"]["app_launcher_visible"] is True and answer["result"]["tags"] == []
    for n in range(3):
        apps.create(account_id=ACCOUNT, type="self_hosted", domain=f"p{n}.lab.test")
    domains = [a.domain for a in apps.list(account_id=ACCOUNT, per_page=1)]  # the SDK pages through all
    assert domains == ["contract.lab.test", "p0.lab.test", "p1.lab.test", "p2.lab.test"]


def test_access_objects_survive_a_restart(tmp_path):
    first = access_emulator(tmp_path / "kept.json").start()
    try:
        with cloudflare.Cloudflare(api_token=ADMIN, base_url=first.api, max_retries=0) as sdk:
            access = sdk.zero_trust.access
            tok = access.service_tokens.create(account_id=ACCOUNT, name="kept")
            rule = [{"service_token": {"token_id": tok.id}}]
            policy = access.policies.create(
                account_id=ACCOUNT, name="k", decision="non_identity", include=rule
            )
            access.applications.create(
                account_id=ACCOUNT, type="self_hosted", domain="kept.lab.test", policies=[policy.id]
            )
    finally:
        first.stop()
    again = access_emulator(tmp_path / "kept.json").start()
    try:
        app = again.call(application_for_host, again.state, "kept.lab.test")
        found = again.call(service_token_for, again.state, tok.client_id, tok.client_secret)
        assert app is not None and found is not None
        assert again.call(app_admits_token, again.state, app, found)
    finally:
        again.stop()
