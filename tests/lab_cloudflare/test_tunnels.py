"""Tunnels: create/list/get/PATCH/DELETE, token and connections, through the SDK and requests."""

from __future__ import annotations

import base64
import json
import secrets

import cloudflare
import pytest

from lab.cloudflare import decode_token

from .harness import ACCOUNT
from .openapi import validate_request, validate_response

TUNNELS = "/accounts/{account_id}/cfd_tunnel"
ONE = TUNNELS + "/{tunnel_id}"


def new_secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def create(http, **body):
    resp = http.post(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel", json=body, timeout=10)
    return resp


def connect(emulator, tunnel_id, client_id="c0ffee00-0000-4000-8000-000000000001"):
    info = {
        "client_id": client_id,
        "client_version": "2024.8.2",
        "arch": "linux_amd64",
        "origin_ip": "10.87.0.5",
    }
    return emulator.call(emulator.state.connection_opened, tunnel_id, info)


def test_create_defaults_to_local_config_and_validates(sdk, http):
    body = {"name": "relay-default"}
    validate_request(TUNNELS, "post", body)
    resp = create(http, **body)
    assert resp.status_code == 200
    validate_response(TUNNELS, "post", 200, resp.json())
    tunnel = resp.json()["result"]
    assert tunnel["config_src"] == "local" and tunnel["remote_config"] is False
    assert (tunnel["status"], tunnel["tun_type"], tunnel["account_tag"]) == (
        "inactive",
        "cfd_tunnel",
        ACCOUNT,
    )
    assert tunnel["deleted_at"] is None and tunnel["connections"] == []
    assert "secret" not in tunnel and "tunnel_secret" not in tunnel
    remote = sdk.zero_trust.tunnels.cloudflared.create(
        account_id=ACCOUNT, name="relay-remote", config_src="cloudflare", tunnel_secret=new_secret()
    )
    assert remote.config_src == "cloudflare" and remote.remote_config is True
    # The create answer carries the connector token (the SDK keeps it as an extra field); reads do not.
    token_now = sdk.zero_trust.tunnels.cloudflared.token.get(tunnel_id=remote.id, account_id=ACCOUNT)
    assert remote.model_extra["token"] == token_now
    assert decode_token(tunnel["token"])["t"] == tunnel["id"]
    assert (
        "token"
        not in http.get(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{remote.id}", timeout=10).json()["result"]
    )


def test_duplicate_live_name_is_409_1013(sdk):
    sdk.zero_trust.tunnels.cloudflared.create(account_id=ACCOUNT, name="twin", config_src="cloudflare")
    with pytest.raises(cloudflare.ConflictError) as caught:
        sdk.zero_trust.tunnels.cloudflared.create(account_id=ACCOUNT, name="twin", config_src="cloudflare")
    assert caught.value.status_code == 409
    assert caught.value.body["errors"] == [{"code": 1013, "message": "tunnel with name already exists"}]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": 7},
        {"name": "x", "config_src": "remote"},
        {"name": "x", "tunnel_secret": base64.b64encode(b"short").decode()},
        {"name": "x", "tunnel_secret": "not base64!"},
    ],
)
def test_bad_create_bodies_are_refused(http, emulator, body):
    resp = create(http, **body)
    assert resp.status_code == 400
    validate_response(TUNNELS, "post", 400, resp.json())
    assert emulator.state.tunnels == {}


def test_non_json_body_is_refused(http):
    resp = http.post(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel", data="name=x", timeout=10)
    assert resp.status_code == 400 and resp.json()["errors"][0]["code"] == 9207


def test_list_filters_name_uuid_is_deleted(sdk, http):
    tunnels = sdk.zero_trust.tunnels.cloudflared
    alpha = tunnels.create(account_id=ACCOUNT, name="alpha", config_src="cloudflare")
    beta = tunnels.create(account_id=ACCOUNT, name="beta", config_src="cloudflare")
    tunnels.delete(beta.id, account_id=ACCOUNT)
    assert [t.id for t in tunnels.list(account_id=ACCOUNT, name="alpha")] == [alpha.id]
    assert [t.id for t in tunnels.list(account_id=ACCOUNT, uuid=beta.id)] == [beta.id]
    assert [t.name for t in tunnels.list(account_id=ACCOUNT, is_deleted=False)] == ["alpha"]
    assert [t.name for t in tunnels.list(account_id=ACCOUNT, is_deleted=True)] == ["beta"]
    # Without is_deleted the live API lists deleted tunnels too.
    assert {t.name for t in tunnels.list(account_id=ACCOUNT)} == {"alpha", "beta"}
    resp = http.get(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel", params={"include_prefix": "al"}, timeout=10)
    validate_response(TUNNELS, "get", 200, resp.json())
    assert [t["name"] for t in resp.json()["result"]] == ["alpha"]
    assert (
        http.get(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel?is_deleted=maybe", timeout=10).status_code == 400
    )


def test_deleted_name_is_reusable_and_get_shows_deleted_at(sdk, http):
    tunnels = sdk.zero_trust.tunnels.cloudflared
    first = tunnels.create(account_id=ACCOUNT, name="phoenix", config_src="cloudflare")
    deleted = tunnels.delete(first.id, account_id=ACCOUNT)
    assert deleted.deleted_at is not None
    second = tunnels.create(account_id=ACCOUNT, name="phoenix", config_src="cloudflare")
    assert second.id != first.id
    resp = http.get(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{first.id}", timeout=10)
    validate_response(ONE, "get", 200, resp.json())
    assert resp.json()["result"]["deleted_at"] is not None
    # A deleted tunnel cannot be deleted, edited or configured again.
    assert http.delete(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{first.id}", timeout=10).status_code == 404


def test_get_unknown_and_malformed_ids(http):
    unknown = http.get(
        f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{'0' * 8}-0000-4000-8000-{'0' * 12}", timeout=10
    )
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == 1003
    validate_response(ONE, "get", 404, unknown.json())
    malformed = http.get(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/not-a-uuid", timeout=10)
    assert malformed.status_code == 400 and malformed.json()["errors"][0]["code"] == 7003


def test_token_is_base64_json_with_current_secret(sdk, emulator):
    secret = new_secret()
    tunnel = sdk.zero_trust.tunnels.cloudflared.create(
        account_id=ACCOUNT, name="tok", config_src="cloudflare", tunnel_secret=secret
    )
    token = sdk.zero_trust.tunnels.cloudflared.token.get(tunnel.id, account_id=ACCOUNT)
    assert isinstance(token, str)
    assert json.loads(base64.b64decode(token)) == {"a": ACCOUNT, "t": tunnel.id, "s": secret}
    assert decode_token(token) == {"a": ACCOUNT, "t": tunnel.id, "s": secret}
    found = emulator.call(emulator.state.tunnel_for_token, token)
    assert found["id"] == tunnel.id and found["name"] == "tok" and found["account_tag"] == ACCOUNT
    assert emulator.call(emulator.state.tunnel_for_token, "garbage") is None


def test_patch_renames_and_rotates_secret(sdk, http, emulator):
    events = []
    emulator.call(emulator.state.add_listener, lambda event, tid: events.append((event, tid)))
    tunnels = sdk.zero_trust.tunnels.cloudflared
    tunnel = tunnels.create(account_id=ACCOUNT, name="old-name", config_src="cloudflare")
    tunnels.create(account_id=ACCOUNT, name="taken", config_src="cloudflare")
    old_token = tunnels.token.get(tunnel.id, account_id=ACCOUNT)
    body = {"name": "new-name", "tunnel_secret": new_secret()}
    validate_request(ONE, "patch", body)
    resp = http.patch(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{tunnel.id}", json=body, timeout=10)
    assert resp.status_code == 200 and resp.json()["result"]["name"] == "new-name"
    validate_response(ONE, "patch", 200, resp.json())
    assert events == [("secret_rotated", tunnel.id)]
    assert emulator.call(emulator.state.tunnel_for_token, old_token) is None
    new_token = tunnels.token.get(tunnel.id, account_id=ACCOUNT)
    assert emulator.call(emulator.state.tunnel_for_token, new_token)["name"] == "new-name"
    clash = http.patch(
        f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{tunnel.id}", json={"name": "taken"}, timeout=10
    )
    assert clash.status_code == 409 and clash.json()["errors"][0]["code"] == 1013


def test_delete_refused_with_active_connections_unless_cascade(sdk, http, emulator):
    events = []
    emulator.call(emulator.state.add_listener, lambda event, tid: events.append(event))
    tunnel = sdk.zero_trust.tunnels.cloudflared.create(
        account_id=ACCOUNT, name="busy", config_src="cloudflare"
    )
    connect(emulator, tunnel.id)
    refused = http.delete(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{tunnel.id}", timeout=10)
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == 1022
    assert emulator.state.live_tunnel(tunnel.id) is not None
    cascade = http.delete(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{tunnel.id}?cascade=true", timeout=10)
    assert cascade.status_code == 200 and cascade.json()["result"]["deleted_at"]
    assert events == ["connections_deleted", "tunnel_deleted"]
    assert not emulator.state.connections.get(tunnel.id)


def test_connections_shape_cleanup_then_delete(sdk, http, emulator):
    tunnels = sdk.zero_trust.tunnels.cloudflared
    tunnel = tunnels.create(account_id=ACCOUNT, name="conns", config_src="cloudflare")
    first = connect(emulator, tunnel.id)
    connect(emulator, tunnel.id)
    connect(emulator, tunnel.id, client_id="c0ffee00-0000-4000-8000-000000000002")
    resp = http.get(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{tunnel.id}/connections", timeout=10)
    validate_response(ONE + "/connections", "get", 200, resp.json())
    clients = resp.json()["result"]
    assert sorted(len(c["conns"]) for c in clients) == [1, 2]
    conn = next(c for c in clients if len(c["conns"]) == 2)["conns"][0]
    assert conn["id"] == first and conn["colo_name"] == "LAB" and conn["client_version"] == "2024.8.2"
    assert conn["origin_ip"] == "10.87.0.5" and conn["is_pending_reconnect"] is False
    assert [c.version for c in tunnels.connections.get(tunnel.id, account_id=ACCOUNT)] == ["2024.8.2"] * 2
    shown = tunnels.get(tunnel.id, account_id=ACCOUNT)
    assert shown.status == "healthy" and len(shown.connections) == 3 and shown.conns_active_at
    # One connector's connections, then the rest: the tunnel goes down and can be deleted.
    tunnels.connections.delete(
        tunnel.id, account_id=ACCOUNT, client_id="c0ffee00-0000-4000-8000-000000000002"
    )
    assert len(emulator.state.connections[tunnel.id]) == 2
    resp = http.delete(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel/{tunnel.id}/connections", timeout=10)
    validate_response(ONE + "/connections", "delete", 200, resp.json())
    down = tunnels.get(tunnel.id, account_id=ACCOUNT)
    assert down.status == "down" and down.connections == [] and down.conns_inactive_at
    assert tunnels.delete(tunnel.id, account_id=ACCOUNT).deleted_at is not None


def test_connection_closed_marks_inactive(sdk, emulator):
    tunnel = sdk.zero_trust.tunnels.cloudflared.create(
        account_id=ACCOUNT, name="flap", config_src="cloudflare"
    )
    conn = connect(emulator, tunnel.id)
    emulator.call(emulator.state.connection_closed, tunnel.id, conn)
    assert sdk.zero_trust.tunnels.cloudflared.get(tunnel.id, account_id=ACCOUNT).status == "down"
