"""State survives a daemon restart (JSON file in the state dir); live connections do not."""

from __future__ import annotations

import stat

from lab.cloudflare import create_app, state_of
from lab.cloudflare.store import zone_id_for

from .harness import ACCOUNT, CONFIG, ZONE


def test_state_survives_restart_and_connections_do_not(sdk, http, emulator, tmp_path):
    tunnels = sdk.zero_trust.tunnels.cloudflared
    tunnel = tunnels.create(account_id=ACCOUNT, name="durable", config_src="cloudflare")
    token = tunnels.token.get(tunnel.id, account_id=ACCOUNT)
    config = {
        "ingress": [
            {"hostname": "relay.lab.test", "service": "http://127.0.0.1:8080"},
            {"service": "http_status:404"},
        ]
    }
    tunnels.configurations.update(tunnel.id, account_id=ACCOUNT, config=config)
    zone_id = zone_id_for(ZONE)
    http.post(
        f"{http.api}/zones/{zone_id}/dns_records",
        json={"type": "CNAME", "name": "relay", "content": f"{tunnel.id}.cfargotunnel.com", "proxied": True},
        timeout=10,
    )
    emulator.call(
        emulator.state.connection_opened,
        tunnel.id,
        {"client_id": "connector-not-persisted", "client_version": "x"},
    )
    path = tmp_path / "state.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds tunnel secrets
    # A name no hex id can contain: the check must not depend on random ids.
    assert "connector-not-persisted" not in path.read_text()

    restarted = state_of(create_app(CONFIG, path))
    assert restarted.tunnel_for_token(token)["name"] == "durable"
    assert restarted.tunnel_config(tunnel.id) == (config, 1)
    assert restarted.route_hostname("relay.lab.test") == tunnel.id
    view = restarted.tunnel_view(restarted.tunnels[tunnel.id])
    assert view["connections"] == [] and view["status"] == "down" and view["conns_inactive_at"]


def test_listener_errors_do_not_break_the_api(sdk, emulator):
    def broken(event, tunnel_id):
        raise RuntimeError("listener bug")

    emulator.call(emulator.state.add_listener, broken)
    tunnel = sdk.zero_trust.tunnels.cloudflared.create(account_id=ACCOUNT, name="l", config_src="cloudflare")
    assert sdk.zero_trust.tunnels.cloudflared.delete(tunnel.id, account_id=ACCOUNT).deleted_at


def test_corrupt_state_file_is_set_aside(tmp_path, caplog):
    path = tmp_path / "state.json"
    path.write_text('{"tunnels": {')
    state = state_of(create_app(CONFIG, path))
    assert state.tunnels == {}
    assert [p.name.split(".corrupt-")[0] for p in tmp_path.glob("state.json.corrupt-*")] == ["state.json"]
    assert "not valid JSON" in caplog.text


def test_long_deleted_tunnels_are_purged_on_load(sdk, emulator, tmp_path):
    tunnels = sdk.zero_trust.tunnels.cloudflared
    old = tunnels.create(account_id=ACCOUNT, name="old", config_src="cloudflare")
    recent = tunnels.create(account_id=ACCOUNT, name="recent", config_src="cloudflare")
    for tunnel in (old, recent):
        tunnels.delete(tunnel.id, account_id=ACCOUNT)

    def backdate():
        emulator.state.tunnels[old.id]["deleted_at"] = "2020-01-01T00:00:00.000000Z"
        emulator.state.save()

    emulator.call(backdate)
    restarted = state_of(create_app(CONFIG, tmp_path / "state.json"))
    assert set(restarted.tunnels) == {recent.id}
