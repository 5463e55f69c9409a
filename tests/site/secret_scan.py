"""Every secret a lab deployment holds, and which of them a playbook's output shows (by name, never by value).

The playbook suites run site.yml and rotate-credentials.yml at -vvv (module arguments, results, the
commands Ansible runs) and on failure paths, then look for each of these in the whole output:
  - the client tokens, client envelope keys and Fernet keys of the controller's store (current and previous),
    and the Cloudflare Access service token's secret stored beside them,
  - every provider key the fake upstream knows (a deployment holds one or two of them),
  - the tunnel's connector token, and the tunnel secret inside it,
  - the Proxmox VE API token secret and password, the Cloudflare API token of the lab inventory.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from deploy_state import harness


def tunnel_secrets(token: str) -> dict[str, str]:
    """The connector token and the tunnel secret it carries (base64 JSON {"a", "t", "s"})."""
    return {"tunnel token": token, "tunnel secret": json.loads(base64.b64decode(token))["s"]}


def store_secrets(secrets_dir: Path) -> dict[str, str]:
    """Client tokens and Fernet keys of one deployment's controller-side store (relay_secrets)."""
    store = json.loads((secrets_dir / "secrets.json").read_text(encoding="utf-8"))
    found = {}
    for name, entry in store["client_tokens"].items():
        for which in ("current", "previous"):
            if entry.get(which):
                found[f"client token {name} ({which})"] = entry[which]
        for which in ("key", "previous_key"):  # the client's own envelope key, when it has one
            if entry.get(which):
                found[f"client {name} {which.replace('_', ' ')}"] = entry[which]
    for index, key in enumerate(store["fernet_keys"]):
        found[f"Fernet key #{index}"] = key
    access = secrets_dir / "access-service-token.json"  # with cloudflare_access_enabled
    if access.exists():
        found["Access service token secret"] = json.loads(access.read_text(encoding="utf-8"))["client_secret"]
    return found


def lab_secrets(lab) -> dict[str, str]:
    """The credentials the lab inventory hands to every playbook."""
    found = {f"provider key #{i}": key for i, key in enumerate(lab.upstream.api_keys)}
    found["PVE token secret"] = lab.pve_token_secret
    found["PVE password"] = lab.pve_password
    found["Cloudflare API token"] = lab.cloudflare.api_token
    return found


def deployment_secrets(lab, dep: harness.Deployment, tunnel_token: str | None) -> dict[str, str]:
    found = {**lab_secrets(lab), **store_secrets(dep.secrets_dir)}
    if tunnel_token:
        found.update(tunnel_secrets(tunnel_token))
    return found


def leaked(output: str, secrets: dict[str, str]) -> list[str]:
    """Names of the secrets that appear in `output` (the values never reach an assertion message)."""
    assert all(len(value) >= 12 for value in secrets.values()), "a short value would match by chance"
    return sorted(name for name, value in secrets.items() if value in output)
