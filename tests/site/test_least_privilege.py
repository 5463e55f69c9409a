"""site.yml with a privilege-separated API token holding exactly the example inventory's privileges
(proxmox_api_role_privileges): it converges; without SDN.Use (the privilege PVEVMAdmin lacks) the same run
fails at the first call that needs it, the container create, naming the privilege and the path, and
nothing is created. (Each privilege's own refusal is tested at the API level in
tests/lab_pve/test_pve_permissions.py.) One deployment for token.lab.test, one replica."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import yaml
from deploy_state import harness

assert_ok, deployment = harness.assert_ok, harness.deployment
REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

HOSTNAME, PREFIX = "token.lab.test", "lp-relay-"


def documented_privileges() -> list[str]:
    data = yaml.safe_load((REPO / "inventory/example/group_vars/all/main.yml").read_text())
    return list(data["proxmox_api_role_privileges"])


@pytest.fixture(scope="module")
def account(lab):
    """Role, @pve user, privsep token and ACLs on / for both, made with the lab's root-equivalent token."""
    px = lab.proxmox("token")
    suffix = secrets.token_hex(3)
    userid, role = f"lp-{suffix}@pve", f"LabLeast{suffix}"
    px.access.roles.post(roleid=role, privs=",".join(documented_privileges()))
    px.access.users.post(userid=userid)
    secret = px.access.users(userid).token("site").post()["value"]
    px.access.acl.put(path="/", roles=role, users=userid, tokens=f"{userid}!site")
    creds = {"proxmox_api_user": userid, "proxmox_api_token_id": "site", "proxmox_api_token_secret": secret}
    try:
        yield {"role": role, "creds": creds, "px": px}
    finally:
        px.access.users(userid).delete()
        px.access.roles(role).delete()


@pytest.fixture(scope="module")
def dep(lab, state, tmp_path_factory):
    made = deployment(tmp_path_factory, HOSTNAME, PREFIX, 1)
    yield made
    assert_ok(made.run("playbooks/destroy.yml", "-e", "confirm=yes"))  # with the lab's own login
    snap = state.snapshot(made)
    assert (snap.tunnels, snap.records, snap.containers) == ([], [], [])


def test_without_sdn_use_the_run_fails_at_the_create_naming_privilege_and_path(account, dep, state):
    px, role = account["px"], account["role"]
    px.access.roles(role).put(privs=",".join(p for p in documented_privileges() if p != "SDN.Use"))
    try:
        run = dep.run("site.yml", "-e", json.dumps(account["creds"]))
    finally:
        px.access.roles(role).put(privs=",".join(documented_privileges()))
    assert run.returncode != 0
    assert "Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)" in run.output, run.output[
        -4000:
    ]
    assert account["creds"]["proxmox_api_token_secret"] not in run.output
    snap = state.snapshot(dep)
    assert (snap.containers, snap.tunnels, snap.records) == ([], [], [])


def test_site_converges_with_exactly_the_documented_privileges(account, dep, state, lab):
    run = dep.run("site.yml", "-e", json.dumps(account["creds"]))
    assert_ok(run)
    assert account["creds"]["proxmox_api_token_secret"] not in run.output
    snap = state.snapshot(dep)
    assert len(snap.containers) == 1 and snap.containers[0]["status"] == "running"
    assert len(snap.tunnels) == 1 and len(snap.records) == 1
    again = dep.run("site.yml", "-e", json.dumps(account["creds"]))
    assert_ok(again)
    assert again.changed_hosts == {}, again.output[-4000:]
