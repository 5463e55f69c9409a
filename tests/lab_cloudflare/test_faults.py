"""Lab control: the next N calls of a route answer 429 (Retry-After), 5xx, or hang past a timeout."""

from __future__ import annotations

import time

import cloudflare
import pytest
import requests

from .harness import ACCOUNT, ADMIN
from .openapi import validate_response


def fault(emulator, **rule):
    resp = requests.post(f"{emulator.url}/_lab/faults", json=rule, timeout=10)
    assert resp.status_code == 201, resp.text


def test_429_with_retry_after_then_recovers(http, emulator):
    fault(emulator, path="/accounts/*/cfd_tunnel", method="GET", mode="429", count=2, retry_after=3)
    url = f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel"
    for _ in range(2):
        resp = http.get(url, timeout=10)
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "3"
        # The live rate limiter answers code 971, below the schema's `minimum: 1000` for error codes.
        assert resp.json() == {
            "success": False,
            "errors": [{"code": 971, "message": "Please wait and consider throttling your request speed"}],
            "messages": [],
            "result": None,
        }
    assert http.get(url, timeout=10).status_code == 200
    # POST was not targeted by the rule.
    assert requests.get(f"{emulator.url}/_lab/faults", timeout=10).json() == {"faults": []}


def test_sdk_retries_a_429_and_succeeds(emulator):
    fault(emulator, path="/accounts/*/cfd_tunnel", method="POST", mode="429", retry_after=0)
    client = cloudflare.Cloudflare(api_token=ADMIN, base_url=emulator.api, max_retries=2)
    created = client.zero_trust.tunnels.cloudflared.create(
        account_id=ACCOUNT, name="retry", config_src="cloudflare"
    )
    assert created.name == "retry"
    calls = requests.get(f"{emulator.url}/_lab/requests", timeout=10).json()["requests"]
    assert [(c["method"], c["status"]) for c in calls] == [("POST", 429), ("POST", 200)]
    assert all(c["path"] == f"/accounts/{ACCOUNT}/cfd_tunnel" for c in calls)
    assert calls[-1]["token"] == "admin"


def test_5xx_keeps_the_envelope(http, emulator):
    fault(emulator, path="/zones*", mode="5xx", status=502)
    resp = http.get(f"{http.api}/zones", timeout=10)
    assert resp.status_code == 502
    validate_response("/zones", "get", 502, resp.json())
    assert http.get(f"{http.api}/zones", timeout=10).status_code == 200


def test_hang_outlasts_the_client_timeout(http, emulator):
    fault(emulator, path="/zones", mode="hang", hang_seconds=3)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        http.get(f"{http.api}/zones", timeout=0.5)
    assert time.monotonic() - started < 2.5
    assert http.get(f"{http.api}/zones", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "rule",
    [
        {"mode": "429"},
        {"path": "zones", "mode": "429"},
        {"path": "/zones", "mode": "boom"},
        {"path": "/zones", "mode": "5xx", "status": 404},
        {"path": "/zones", "mode": "429", "count": -1},
        {"path": "/zones", "mode": "429", "surprise": 1},
    ],
)
def test_malformed_fault_rules_are_refused(emulator, rule):
    resp = requests.post(f"{emulator.url}/_lab/faults", json=rule, timeout=10)
    assert resp.status_code == 400 and "error" in resp.json()


def test_clear_faults_and_call_log(http, emulator):
    fault(emulator, path="/zones", mode="429", count=5)
    assert requests.delete(f"{emulator.url}/_lab/faults", timeout=10).json() == {"faults": []}
    assert http.get(f"{http.api}/zones", timeout=10).status_code == 200
    assert requests.delete(f"{emulator.url}/_lab/requests", timeout=10).status_code == 200
    assert requests.get(f"{emulator.url}/_lab/requests", timeout=10).json() == {"requests": []}
