"""inventory/example parses, with a vault made from vault.yml.example the way the README says.

A throwaway copy of the inventory gets vault.yml = vault.yml.example encrypted by `ansible-vault encrypt`
with a password file in tmp; `ansible-inventory --list` must parse it and decrypt the vault, and the
connection settings the playbooks build (playbooks/vars/api_auth.yml) must resolve to the vaulted values.
The example uses the variable names the lab inventory emits, so both drive the same playbooks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
EXAMPLE = REPO / "inventory" / "example"
VAULT_EXAMPLE = EXAMPLE / "group_vars" / "all" / "vault.yml.example"

# What playbooks/vars/api_auth.yml and site.yml require from any inventory.
REQUIRED = {
    "proxmox_api_host",
    "proxmox_api_user",
    "proxmox_api_token_id",
    "proxmox_api_token_secret",
    "cloudflare_api_token",
    "cloudflare_account_id",
    "cloudflare_zone",
    "relay_public_hostname",
    "relay_nodes",
    "relay_replicas",
    "relay_ostemplate",
    "relay_container_storage",
    "relay_providers",
}


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    }


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def vaulted(tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the example inventory with an encrypted vault.yml, and its password file."""
    base = tmp_path_factory.mktemp("inventory")
    inventory = base / "prod"
    shutil.copytree(EXAMPLE, inventory)
    password = base / "vault-pass"
    password.write_text("throwaway test vault password\n")
    password.chmod(0o600)
    vault = inventory / "group_vars" / "all" / "vault.yml"
    shutil.copy(VAULT_EXAMPLE, vault)
    run(str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password), str(vault))
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    return inventory, password


def test_example_inventory_lists_with_the_vault_decrypted(vaulted):
    inventory, password = vaulted
    listed = json.loads(
        run(
            str(BIN / "ansible-inventory"),
            "-i",
            str(inventory),
            "--vault-password-file",
            str(password),
            "--list",
        ).stdout
    )
    assert "relays" in listed["all"]["children"]
    hostvars = listed["_meta"]["hostvars"]["localhost"]
    assert set(hostvars) >= REQUIRED
    placeholders = yaml.safe_load(VAULT_EXAMPLE.read_text())
    for name, value in placeholders.items():
        assert hostvars[name] == value, name


def test_api_settings_resolve_to_the_vaulted_secrets(vaulted):
    inventory, password = vaulted
    placeholders = yaml.safe_load(VAULT_EXAMPLE.read_text())
    shown = run(
        str(BIN / "ansible"),
        "localhost",
        "-i",
        str(inventory),
        "--vault-password-file",
        str(password),
        "-e",
        "@" + str(REPO / "playbooks" / "vars" / "api_auth.yml"),
        "-m",
        "ansible.builtin.debug",
        "-a",
        "msg={{ [relay_proxmox_auth.api_token_secret, relay_cloudflare_auth.api_token,"
        " relay_providers[0].api_keys] | to_json }}",
    ).stdout
    resolved = json.loads(json.loads(shown[shown.index("{") :])["msg"])
    assert resolved == [
        placeholders["vault_proxmox_api_token_secret"],
        placeholders["vault_cloudflare_api_token"],
        placeholders["vault_openrouter_api_keys"],
    ]


def test_vault_example_holds_only_placeholders():
    values = yaml.safe_load(VAULT_EXAMPLE.read_text())
    flat = json.dumps(values)
    assert "REPLACE-WITH" in flat
    assert not re.search(r"sk-or-v1-[A-Za-z0-9]{20,}", VAULT_EXAMPLE.read_text())
    for value in values.values():
        for item in value if isinstance(value, list) else [value]:
            assert item.startswith("REPLACE-WITH-"), item


def test_example_uses_the_lab_inventory_variable_names():
    example = set(yaml.safe_load((EXAMPLE / "group_vars" / "all" / "main.yml").read_text()))
    listed = json.loads(
        run(str(BIN / "python"), str(REPO / "inventory" / "lab" / "lab_inventory.py"), "--list").stdout
    )
    lab = set(listed["all"]["vars"])
    # Every setting both need is spelled the same; the lab-only ones (emulator URLs, the edge's env) aside.
    assert example >= REQUIRED
    assert lab >= REQUIRED
    # Cloudflare Access: documented (off) in the example, on in the lab, under the same names.
    assert {"cloudflare_access_enabled", "cloudflare_access_team_domain"} <= example & lab
