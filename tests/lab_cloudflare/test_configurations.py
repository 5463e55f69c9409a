"""Remote tunnel configuration: versions, cloudflared-style ingress validation, the edge's view."""

from __future__ import annotations

import pytest

from .harness import ACCOUNT
from .openapi import validate_request, validate_response

CONFIGS = "/accounts/{account_id}/cfd_tunnel/{tunnel_id}/configurations"
GOOD = {
    "ingress": [
        {
            "hostname": "relay.lab.test",
            "service": "http://127.0.0.1:8080",
            "originRequest": {"connectTimeout": 10},
        },
        {"hostname": "*.apps.lab.test", "path": "^/api/.*$", "service": "https://10.87.0.5:8443"},
        {"service": "http_status:404"},
    ],
    "originRequest": {"noTLSVerify": False},
    "warp-routing": {"enabled": False},
}


@pytest.fixture
def tunnel(sdk):
    return sdk.zero_trust.tunnels.cloudflared.create(account_id=ACCOUNT, name="cfg", config_src="cloudflare")


def put(http, tunnel_id, config):
    return http.put(
        f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{tunnel_id}/configurations", json=config, timeout=10
    )


def test_get_before_any_put(http, tunnel):
    resp = http.get(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{tunnel.id}/configurations", timeout=10)
    validate_response(CONFIGS, "get", 200, resp.json())
    result = resp.json()["result"]
    assert (result["tunnel_id"], result["version"], result["config"], result["source"]) == (
        tunnel.id,
        0,
        None,
        "cloudflare",
    )


def test_put_increments_version_and_notifies(sdk, http, emulator, tunnel):
    events = []
    emulator.call(emulator.state.add_listener, lambda event, tid: events.append((event, tid)))
    body = {"config": GOOD}
    validate_request(CONFIGS, "put", body)
    first = put(http, tunnel.id, body)
    assert first.status_code == 200, first.text
    validate_response(CONFIGS, "put", 200, first.json())
    assert first.json()["result"]["version"] == 1 and first.json()["result"]["config"] == GOOD
    second = sdk.zero_trust.tunnels.cloudflared.configurations.update(
        tunnel.id, account_id=ACCOUNT, config={"ingress": [{"service": "hello_world"}]}
    )
    assert second.version == 2
    got = sdk.zero_trust.tunnels.cloudflared.configurations.get(tunnel.id, account_id=ACCOUNT)
    assert got.version == 2 and got.config.ingress[0].service == "hello_world"
    assert events == [("config_updated", tunnel.id)] * 2
    config, version = emulator.call(emulator.state.tunnel_config, tunnel.id)
    assert (config, version) == ({"ingress": [{"service": "hello_world"}]}, 2)


@pytest.mark.parametrize(
    ("ingress", "message"),
    [
        (
            [{"hostname": "relay.lab.test", "service": "http://127.0.0.1:8080"}],
            "The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)",
        ),
        (
            [
                {"hostname": "a.lab.test", "path": "/x", "service": "http://x"},
                {"path": "/y", "service": "http_status:404"},
            ],
            "The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)",
        ),
        ([{"service": "http_status:404"}, {"service": "http_status:404"}], "Rule #1 is matching all URLs"),
        (
            [{"hostname": "a.lab.test", "service": "localhost:8080"}, {"service": "http_status:404"}],
            "is an invalid address",
        ),
        (
            [{"hostname": "a.lab.test", "service": "//host"}, {"service": "http_status:404"}],
            "is an invalid address",
        ),
        (
            [{"hostname": "a.lab.test", "service": "http://h/sub"}, {"service": "http_status:404"}],
            "different path",
        ),
        ([{"hostname": "a.lab.test"}, {"service": "http_status:404"}], "has no service"),
        ([{"service": "http_status:1000"}], "invalid HTTP status code: 1000"),
        ([{"service": "http_status:99"}], "invalid HTTP status code: 99"),
        (
            [{"service": "http_status:abc"}],
            'invalid HTTP status code: strconv.Atoi: parsing "abc": invalid syntax',
        ),
        (
            [{"hostname": "a.lab.test:443", "service": "http://h"}, {"service": "http_status:404"}],
            "cannot contain a port",
        ),
        (
            [{"hostname": "*.*.lab.test", "service": "http://h"}, {"service": "http_status:404"}],
            "at most one wildcard",
        ),
        (
            [{"hostname": "a*.lab.test", "service": "http://h"}, {"service": "http_status:404"}],
            "at most one wildcard",
        ),
        (
            [{"hostname": "bad_host!.lab.test", "service": "http://h"}, {"service": "http_status:404"}],
            "invalid hostname",
        ),
        ([{"hostname": "a.lab.test", "service": "http://h:99999"}, {"service": "http_status:404"}], "port"),
        ([], "non-empty list"),
    ],
)
def test_malformed_ingress_is_refused_with_cloudflared_message(http, emulator, tunnel, ingress, message):
    resp = put(http, tunnel.id, {"config": {"ingress": ingress}})
    assert resp.status_code == 400
    body = resp.json()
    validate_response(CONFIGS, "put", 400, body)
    assert body["errors"][0]["code"] == 1055 and message in body["errors"][0]["message"]
    assert emulator.call(emulator.state.tunnel_config, tunnel.id) == ({}, 0)


@pytest.mark.parametrize(
    "service",
    # cloudflared ingress/ingress.go only asks a URL for a scheme and a hostname, and a status in 100-999.
    [
        "unix:/run/relay.sock",
        "tcp://127.0.0.1:22",
        "ssh://h:22",
        "hello_world",
        "ftp://host",
        "http_status:999",
    ],
)
def test_other_service_forms_are_accepted(http, tunnel, service):
    resp = put(
        http,
        tunnel.id,
        {
            "config": {
                "ingress": [{"hostname": "x.lab.test", "service": service}, {"service": "http_status:503"}]
            }
        },
    )
    assert resp.status_code == 200, resp.text


def test_missing_config_and_bad_shapes(http, tunnel):
    assert put(http, tunnel.id, {}).status_code == 400
    assert put(http, tunnel.id, {"config": []}).status_code == 400
    assert (
        put(
            http,
            tunnel.id,
            {"config": {"ingress": [{"service": "http_status:404"}], "warp-routing": {"enabled": "yes"}}},
        ).status_code
        == 400
    )


def test_config_of_unknown_tunnel_raises_for_the_edge(emulator):
    with pytest.raises(KeyError):
        emulator.call(emulator.state.tunnel_config, "00000000-0000-4000-8000-000000000000")
