"""playbooks/pve-token.yml against the PVE emulator: an admin login creates the role with exactly the
example inventory's privileges, the user, its privilege-separated token and the ACLs through the real
access API, and writes the token's secret, vault-encrypted, into a 0600 file; re-runs change nothing."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import stat

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret
from ansible_cli import run_ansible
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException
from pve_support import documented_privileges

pytestmark = pytest.mark.lab
VAULT_PASSWORD = "pve-token-test-vault-pass"


@pytest.fixture
def names(px):
    suffix = secrets.token_hex(3)
    made = {"user": f"relay-{suffix}@pve", "token": "ansible", "role": f"LabRelay{suffix}"}
    yield made
    for call in (
        lambda: px.access.users(made["user"]).delete(),
        lambda: px.access.roles(made["role"]).delete(),
    ):
        with contextlib.suppress(ResourceException):  # absent when the test failed before creating it
            call()


@pytest.fixture
def files(tmp_path):
    password = tmp_path / "vault-pass"
    password.write_text(VAULT_PASSWORD + "\n")
    password.chmod(0o600)
    return {"password": password, "vault": tmp_path / "group_vars" / "all" / "vault_proxmox.yml"}


def playbook(lab, names, files, **extra):
    files["vault"].parent.mkdir(parents=True, exist_ok=True)
    variables = {
        "proxmox_api_user": names["user"],
        "proxmox_api_token_id": names["token"],
        "proxmox_api_role": names["role"],
        "proxmox_api_role_privileges": documented_privileges(),
        "pve_admin_password": lab.pve_password,
        "pve_token_vault_file": str(files["vault"]),
        "pve_token_vault_password_file": str(files["password"]),
        **extra,
    }
    return run_ansible(
        "ansible-playbook", "playbooks/pve-token.yml", "-e", json.dumps(variables), timeout=180
    )


def recap(out) -> dict[str, int]:
    line = re.search(r"localhost\s+:\s+(.*)", out.stdout).group(1)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def vault_secret(files) -> str:
    """The value of `vault_proxmox_api_token_secret: !vault |` in the file, decrypted."""
    text = files["vault"].read_text()
    block = text.split("vault_proxmox_api_token_secret: !vault |", 1)[1]
    ciphertext = "\n".join(line.strip() for line in block.strip().splitlines())
    vault = VaultLib(secrets=[("default", VaultSecret(VAULT_PASSWORD.encode()))])
    return vault.decrypt(ciphertext).decode()


def token_api(lab, names, secret) -> ProxmoxAPI:
    return ProxmoxAPI(
        lab.pve_host,
        port=lab.pve_port,
        user=names["user"],
        token_name=names["token"],
        token_value=secret,
        backend="https",
        verify_ssl=str(lab.ca_path),
        timeout=30,
    )


def test_the_playbook_creates_a_least_privilege_token_once(px, lab, names, files):
    first = playbook(lab, names, files)
    assert first.returncode == 0, first.stdout + first.stderr
    assert stat.S_IMODE(files["vault"].stat().st_mode) == 0o600
    text = files["vault"].read_text()
    assert "$ANSIBLE_VAULT;1.1;AES256" in text
    secret = vault_secret(files)
    assert secret not in first.stdout + first.stderr and secret not in text
    # The token works and holds exactly the documented privileges, on / and below.
    api = token_api(lab, names, secret)
    assert api.access.permissions.get(path="/vms/123") == {
        "/vms/123": dict.fromkeys(documented_privileges(), 1)
    }
    assert px.access.users(names["user"]).token(names["token"]).get()["privsep"] == 1
    # Re-run: nothing to do.
    again = playbook(lab, names, files)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout
    # A role that drifted is set back; the token keeps its secret.
    px.access.roles(names["role"]).put(privs="VM.Audit")
    fixed = playbook(lab, names, files)
    assert fixed.returncode == 0 and recap(fixed)["changed"] == 1, fixed.stdout
    assert sorted(px.access.roles(names["role"]).get()) == sorted(documented_privileges())
    assert vault_secret(files) == secret


def test_a_token_whose_secret_is_lost_needs_recreate(px, lab, names, files):
    assert playbook(lab, names, files).returncode == 0
    old = vault_secret(files)
    files["vault"].unlink()
    refused = playbook(lab, names, files)
    assert (
        refused.returncode != 0 and "Proxmox shows a token's secret only when it creates it" in refused.stdout
    )
    recreated = playbook(lab, names, files, pve_token_recreate=True)
    assert recreated.returncode == 0, recreated.stdout
    new = vault_secret(files)
    assert new != old
    assert token_api(lab, names, new).access.permissions.get(path="/")["/"]
    with pytest.raises(Exception, match="401"):
        token_api(lab, names, old).version.get()


def test_a_wrong_admin_password_fails_clearly(lab, names, files):
    out = playbook(lab, names, files, pve_admin_password="wrong-password")
    assert out.returncode != 0 and "Proxmox refused the login of root@pam" in out.stdout
    assert "wrong-password" not in out.stdout + out.stderr
