"""A task written for community.proxmox's `proxmox` module: same-meaning options run (aliases, the
PROXMOX_API_TIMEOUT variable); options whose type differs fail naming the option and how to write it."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils import basic
from ansible_collections.llm_relay.homelab.plugins.module_utils import proxmox_lxc_compat as compat
from ansible_collections.llm_relay.homelab.plugins.modules import proxmox_lxc

AUTH = {"api_host": "pve1.example.com", "api_user": "root@pam", "api_password": "x"}


def run_main(monkeypatch, capsys, args):
    """proxmox_lxc.main() with `args` as the task's arguments; the API side is replaced by a recorder."""
    seen = {}

    class Client:
        def __init__(self, params):
            seen["client_params"] = dict(params)

    class Run:
        def __init__(self, module, client):
            seen["params"] = dict(module.params)

        def run(self):
            return {"changed": False, "msg": "recorded"}

    monkeypatch.setattr(proxmox_lxc, "ProxmoxClient", Client)
    monkeypatch.setattr(proxmox_lxc, "LxcRun", Run)
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    with pytest.raises(SystemExit):
        proxmox_lxc.main()
    return json.loads(capsys.readouterr().out), seen


def test_memory_swap_pubkey_and_api_timeout_variable_are_taken(monkeypatch, capsys):
    monkeypatch.setenv("PROXMOX_API_TIMEOUT", "42")
    monkeypatch.delenv("PROXMOX_TIMEOUT", raising=False)
    key = "ssh-ed25519 AAAAC3 me@pc"
    task = dict(AUTH, node="pve1", hostname="relay1", memory=1024, swap=256, pubkey=key)
    result, seen = run_main(monkeypatch, capsys, task)
    assert not result.get("failed"), result
    params = seen["params"]
    assert (params["memory_mb"], params["swap_mb"]) == (1024, 256)
    assert params["ssh_public_keys"] == [key]
    assert seen["client_params"]["api_timeout"] == 42


def test_old_timeout_variable_still_works(monkeypatch, capsys):
    monkeypatch.delenv("PROXMOX_API_TIMEOUT", raising=False)
    monkeypatch.setenv("PROXMOX_TIMEOUT", "7")
    _result, seen = run_main(monkeypatch, capsys, dict(AUTH, hostname="relay1"))
    assert seen["client_params"]["api_timeout"] == 7


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("disk", "local-lvm:8", "write disk: {storage: local-lvm, size_gb: 8}"),
        ("netif", {"net0": "name=eth0,ip=dhcp"}, "netif: [{name: eth0, bridge: vmbr0, ip: dhcp}]"),
        ("startup", ["order=1", "up=30"], "write startup: {order: 1, up: 30, down: 60}"),
        ("disk_volume", {"storage": "local-lvm", "size": 8}, "option is disk here"),
        ("storage", "local-lvm", "disk.storage"),
    ],
)
def test_options_of_another_type_fail_saying_how_to_write_them(monkeypatch, capsys, option, value, says):
    result, seen = run_main(monkeypatch, capsys, dict(AUTH, hostname="relay1", **{option: value}))
    assert result["failed"]
    assert result["msg"].startswith(f"{option}: ") and says in result["msg"]
    assert "params" not in seen  # refused before any API client is made


def test_two_foreign_forms_are_reported_together():
    found = compat.community_proxmox_forms({"disk": "local:4", "netif": {"net0": "ip=dhcp"}, "memory": 1})
    assert sorted(found) == ["disk", "netif"]


def test_our_own_forms_are_not_flagged():
    ours = {"disk": {"storage": "local", "size_gb": 4}, "netif": [{"ip": "dhcp"}], "startup": {"order": 1}}
    assert compat.community_proxmox_forms(ours) == {}
