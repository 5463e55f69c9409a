"""cloudflare_tunnel paths the emulator cannot produce (it refuses duplicate names, as Cloudflare does):
two live tunnels of one name, and a create answered 409/1013 because a lost first attempt did land; and
the exact calls of rename_from (the emulator path runs in tests/site/test_rotation.py).
The real client talks HTTP to a scripted server; only AnsibleModule is replaced by a small stand-in."""

from __future__ import annotations

import json

import pytest
from ansible_collections.llm_relay.homelab.plugins.module_utils import cloudflare as cf_utils
from ansible_collections.llm_relay.homelab.plugins.modules import cloudflare_tunnel
from ansible_collections.llm_relay.homelab.tests.unit.plugins.scripted_api import envelope

ACCOUNT = "0123456789abcdef0123456789abcdef"


class Failed(Exception):
    pass


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self.params = {
            "state": "present",
            "rename_from": None,
            "rotate_secret": False,
            "return_token": False,
            **params,
        }
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)

    def fail_json(self, **kwargs):
        raise Failed(kwargs)


@pytest.fixture
def client(scripted_api):
    return cf_utils.CloudflareClient(
        api_token="t", base_url=scripted_api.base_url, account_id=ACCOUNT, timeout=2
    )


def tunnel(tunnel_id, name="relay"):
    return {
        "id": tunnel_id,
        "name": name,
        "deleted_at": None,
        "config_src": "cloudflare",
        "status": "inactive",
    }


def test_two_live_tunnels_with_the_name_is_a_clear_error(client, scripted_api):
    scripted_api.push(200, envelope([tunnel("a"), tunnel("b")]))
    with pytest.raises(cf_utils.CloudflareAPIError, match=r"matches 2 non-deleted tunnels \(a, b\)"):
        cloudflare_tunnel.run(FakeModule(name="relay"), client)


def test_create_answered_1013_adopts_the_tunnel_that_landed(client, scripted_api):
    scripted_api.push(200, envelope([]))
    scripted_api.push(
        409, envelope(errors=[{"code": 1013, "message": "You already have a tunnel named relay"}])
    )
    scripted_api.push(200, envelope([tunnel("landed")]))
    result = cloudflare_tunnel.run(FakeModule(name="relay"), client)
    assert result["changed"] is True
    assert result["tunnel_id"] == "landed"
    assert result["cname_target"] == "landed.cfargotunnel.com"
    methods = [r["method"] for r in scripted_api.requests]
    assert methods == ["GET", "POST", "GET"]
    body = json.loads(scripted_api.requests[1]["body"])
    assert body["config_src"] == "cloudflare"
    assert len(body["tunnel_secret"]) == 44  # base64 of 32 bytes


def test_check_mode_rotation_and_deletion_call_no_write_endpoint(client, scripted_api):
    scripted_api.push(200, envelope([tunnel("x")]))
    rotated = cloudflare_tunnel.run(FakeModule(check_mode=True, name="relay", rotate_secret=True), client)
    assert (rotated["changed"], rotated["secret_rotated"], rotated["tunnel_id"]) == (True, True, "x")
    scripted_api.push(200, envelope([tunnel("x")]))
    deleted = cloudflare_tunnel.run(FakeModule(check_mode=True, name="relay", state="absent"), client)
    assert deleted["changed"] is True
    assert {r["method"] for r in scripted_api.requests} == {"GET"}


def test_token_is_returned_only_when_asked(client, scripted_api):
    scripted_api.push(200, envelope([tunnel("x")]))
    assert "token" not in cloudflare_tunnel.run(FakeModule(name="relay"), client)
    scripted_api.push(200, envelope([tunnel("x")]))
    scripted_api.push(200, envelope("eyJhIjoiYSJ9"))
    assert (
        cloudflare_tunnel.run(FakeModule(name="relay", return_token=True), client)["token"] == "eyJhIjoiYSJ9"
    )
    assert scripted_api.requests[-1]["path"].endswith("/cfd_tunnel/x/token")


def test_locally_managed_tunnel_is_refused(client, scripted_api):
    scripted_api.push(200, envelope([dict(tunnel("x"), config_src="local")]))
    with pytest.raises(cf_utils.CloudflareAPIError, match="locally-managed"):
        cloudflare_tunnel.run(FakeModule(name="relay"), client)


def test_rename_from_renames_the_only_tunnel_instead_of_creating_one(client, scripted_api):
    scripted_api.push(200, envelope([]))  # nothing named "relay"
    scripted_api.push(200, envelope([tunnel("new", name="relay-next")]))
    scripted_api.push(200, envelope(tunnel("new", name="relay")))
    result = cloudflare_tunnel.run(FakeModule(name="relay", rename_from="relay-next"), client)
    assert (result["changed"], result["tunnel_id"], result["renamed_from"]) == (True, "new", "relay-next")
    assert result["diff"]["before"] == {"name": "relay-next", "state": "present", "tunnel_id": "new"}
    assert [r["method"] for r in scripted_api.requests] == ["GET", "GET", "PATCH"]
    assert scripted_api.requests[2]["path"].endswith("/cfd_tunnel/new")
    assert json.loads(scripted_api.requests[2]["body"]) == {"name": "relay"}


def test_rename_from_is_ignored_when_only_the_name_exists(client, scripted_api):
    scripted_api.push(200, envelope([tunnel("x")]))
    scripted_api.push(200, envelope([]))
    result = cloudflare_tunnel.run(FakeModule(name="relay", rename_from="relay-next"), client)
    assert (result["changed"], result["tunnel_id"], result["renamed_from"]) == (False, "x", None)
    assert {r["method"] for r in scripted_api.requests} == {"GET"}


def test_rename_from_with_both_names_present_is_a_clear_error(client, scripted_api):
    scripted_api.push(200, envelope([tunnel("old")]))
    scripted_api.push(200, envelope([tunnel("new", name="relay-next")]))
    match = r"both name='relay' \(old\) and rename_from='relay-next' \(new\) exist"
    with pytest.raises(cf_utils.CloudflareAPIError, match=match):
        cloudflare_tunnel.run(FakeModule(name="relay", rename_from="relay-next"), client)
    assert {r["method"] for r in scripted_api.requests} == {"GET"}


def test_rename_from_in_check_mode_writes_nothing(client, scripted_api):
    scripted_api.push(200, envelope([]))
    scripted_api.push(200, envelope([tunnel("new", name="relay-next")]))
    module = FakeModule(check_mode=True, name="relay", rename_from="relay-next")
    result = cloudflare_tunnel.run(module, client)
    assert (result["changed"], result["tunnel_id"], result["renamed_from"]) == (True, "new", "relay-next")
    assert {r["method"] for r in scripted_api.requests} == {"GET"}
