#!/usr/bin/python
"""Ansible module relay_secrets: the controller-side store of the secrets this project generates."""

from __future__ import annotations

DOCUMENTATION = r"""
module: relay_secrets
short_description: Generate, keep and rotate the relay's client tokens and Fernet keys on the controller
version_added: "0.1.0"
description:
  - Keeps the secrets the project itself generates (client tokens and Fernet envelope keys) in one
    JSON file on the controller, mode C(0600) in a C(0700) directory, outside git.
  - Secrets users supply (Proxmox and Cloudflare API tokens, provider keys) do not belong here; they come
    from ansible-vault or the environment.
  - Rotation happens in two phases so that no client request fails. C(phase=begin) creates new secrets
    while the old ones stay valid (the old client token is kept under the name C(<name>.previous), the new
    Fernet key goes first and the old ones still decrypt); clients switch to the new artifact; then
    C(phase=finish) drops the old ones.
  - Each client also gets its own envelope key, generated with its token and rotated with it (the old key
    stays with C(<name>.previous)). Envelope v2 seals a client's traffic under it, so no other client's key
    opens it. A store written before envelope v2 gets the missing keys on the next run.
  - Runs on the controller (C(delegate_to=localhost) or a C(localhost) play).
options:
  path:
    description:
      - Directory of the store; the file is C(<path>/secrets.json). Created C(0700) when missing.
      - An existing directory or store with other modes (one copied in, or made by hand) is set to
        C(0700)/C(0600), reported as a change.
    type: path
    required: true
  client_names:
    description:
      - Names of the clients that get a token (C(lrt_) followed by 43 URL-safe characters).
      - Names not listed here are removed from the store.
      - 1-55 characters C([A-Za-z0-9._@-]), starting with a letter or digit (the relay's token names,
        with room for the C(.previous) suffix a rotated token gets); any other name fails before anything
        is written.
    type: list
    elements: str
    default: [default]
  rotate:
    description: Which secrets C(phase) applies to. An empty list only ensures that every secret exists.
    type: list
    elements: str
    choices: [client_tokens, fernet]
    default: []
  phase:
    description:
      - C(begin) adds new secrets next to the old ones; C(finish) removes the old ones.
      - C(begin) always rotates (like a password change, it is not idempotent); C(finish) is a no-op when
        there is nothing old left.
    type: str
    choices: [begin, finish]
    default: begin
notes:
  - Supports check mode (nothing is written; the returned secrets are then the ones that would be kept,
    and new ones are not generated).
  - Every returned value is a secret; register it with C(no_log) in tasks that print.
author:
  - llm-relay maintainers (@llm-relay)
"""

EXAMPLES = r"""
- name: Client token and Fernet key exist (generated on first run)
  llm_relay.homelab.relay_secrets:
    path: "{{ playbook_dir }}/.secrets/relay.example.com"
  register: relay_store
  no_log: true

- name: Rotation, phase 1 - new client tokens and Fernet key next to the old ones
  llm_relay.homelab.relay_secrets:
    path: "{{ playbook_dir }}/.secrets/relay.example.com"
    rotate: [client_tokens, fernet]
    phase: begin
  register: relay_store
  no_log: true

- name: Rotation, phase 2 - old ones are gone
  llm_relay.homelab.relay_secrets:
    path: "{{ playbook_dir }}/.secrets/relay.example.com"
    rotate: [client_tokens, fernet]
    phase: finish
  register: relay_store
  no_log: true
"""

RETURN = r"""
client_tokens:
  description: Every token the relay must accept, as the relay role's C(relay_client_tokens) expects.
  returned: always
  type: list
  elements: dict
  sample: [{name: default, token: lrt_..., key: ...}, {name: default.previous, token: lrt_..., key: ...}]
client_token:
  description: The current token of the first client name (what the client artifact carries).
  returned: always
  type: str
client_key:
  description: The current envelope key of the first client name (what the client artifact carries).
  returned: always
  type: str
fernet_keys:
  description: Fernet keys, newest first (the relay role's C(relay_fernet_keys)).
  returned: always
  type: list
  elements: str
fernet_key:
  description: The newest Fernet key (what the client artifact carries).
  returned: always
  type: str
path:
  description: The store file.
  returned: always
  type: str
"""

import base64
import json
import os
import re
import secrets
import stat

from ansible.module_utils.basic import AnsibleModule

STORE_FILE = "secrets.json"
TOKEN_PREFIX = "lrt_"  # noqa: S105 - the public prefix of client tokens, not a secret
PREVIOUS_SUFFIX = ".previous"
# The relay's client token names (relay/docs/config.md), leaving room for PREVIOUS_SUFFIX: a rotated
# client's old token is served under <name>.previous and must be a valid name too.
MAX_NAME = 64 - len(PREVIOUS_SUFFIX)
CLIENT_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._@-]{{0,{MAX_NAME - 1}}}")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_fernet_key() -> str:
    # Same encoding as cryptography's Fernet.generate_key(), without importing cryptography here.
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {"client_tokens": {}, "fernet_keys": []}
    data.setdefault("client_tokens", {})
    data.setdefault("fernet_keys", [])
    return data


def save(path: str, data: dict) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)  # atomic: an interrupted run never leaves a half-written store


def loose_modes(store: str) -> list[tuple[str, int]]:
    """(path, wanted mode) for the store's directory and file where they exist with other permissions: a
    store made by hand or copied in keeps 0755/0644, and the secrets would be readable by others."""
    loose = []
    for path, wanted in ((os.path.dirname(store), 0o700), (store, 0o600)):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            continue
        if mode != wanted:
            loose.append((path, wanted))
    return loose


def apply(data: dict, names: list[str], rotate: list[str], phase: str, generate: bool) -> dict:
    """The new store content; `generate=False` (check mode) keeps placeholders out of the result."""
    tokens = {n: dict(data["client_tokens"][n]) for n in names if n in data["client_tokens"]}
    keys = list(data["fernet_keys"])
    for name in names:
        if name not in tokens and generate:
            tokens[name] = {"current": new_token(), "previous": None}
        if name in tokens and not tokens[name].get("key") and generate:
            tokens[name]["key"] = new_fernet_key()  # the client's own envelope key (same format)
    if not keys and generate:
        keys = [new_fernet_key()]
    if "client_tokens" in rotate:
        for entry in tokens.values():
            if phase == "begin" and generate:
                entry["previous"], entry["current"] = entry["current"], new_token()
                entry["previous_key"], entry["key"] = entry.get("key"), new_fernet_key()
            elif phase == "finish":
                entry["previous"] = None
                entry.pop("previous_key", None)
    if "fernet" in rotate:
        if phase == "begin" and generate:
            keys = [new_fernet_key(), *keys]
        elif phase == "finish":
            keys = keys[:1]
    return {"client_tokens": tokens, "fernet_keys": keys}


def _entry(name: str, token: str, key: str | None) -> dict:
    """One relay_client_tokens item: the token, and the client's envelope key when it has one."""
    return {"name": name, "token": token, **({"key": key} if key else {})}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "client_names": {"type": "list", "elements": "str", "default": ["default"]},
            "rotate": {
                "type": "list",
                "elements": "str",
                "choices": ["client_tokens", "fernet"],
                "default": [],
            },
            "phase": {"type": "str", "choices": ["begin", "finish"], "default": "begin"},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not p["client_names"]:
        module.fail_json(msg="client_names: at least one client name is required")
    # Checked before the store is read or written: a bad name never gets a token.
    bad = [n for n in p["client_names"] if not CLIENT_NAME.fullmatch(n)]
    if bad:
        module.fail_json(
            msg=f"client_names: {', '.join(map(repr, bad))} not allowed: a name is 1-{MAX_NAME}"
            " characters [A-Za-z0-9._@-], starting with a letter or digit"
        )
    store = os.path.join(p["path"], STORE_FILE)
    try:
        before = load(store)
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"path: cannot read {store}: {exc}")
    after = apply(before, p["client_names"], p["rotate"], p["phase"], generate=not module.check_mode)
    changed = after != {"client_tokens": before["client_tokens"], "fernet_keys": before["fernet_keys"]}
    loose = loose_modes(store)
    if loose and not module.check_mode:
        try:
            for path, wanted in loose:
                os.chmod(path, wanted)
        except OSError as exc:
            module.fail_json(msg=f"path: cannot set the mode of {exc.filename}: {exc.strerror}")
    changed = changed or bool(loose)
    if module.check_mode:
        # Nothing was generated in check mode: say what would have been.
        known = before["client_tokens"]
        missing = any(not known.get(n, {}).get("key") for n in p["client_names"]) or not before["fernet_keys"]
        changed = changed or missing or bool(p["rotate"] and p["phase"] == "begin")
    if changed and not module.check_mode:
        try:
            save(store, after)
        except OSError as exc:
            module.fail_json(msg=f"path: cannot write {store}: {exc.strerror}")
    client_tokens = []
    for name, entry in after["client_tokens"].items():
        client_tokens.append(_entry(name, entry["current"], entry.get("key")))
        if entry.get("previous"):
            client_tokens.append(_entry(name + PREVIOUS_SUFFIX, entry["previous"], entry.get("previous_key")))
    first = after["client_tokens"].get(p["client_names"][0], {})
    module.exit_json(
        changed=changed,
        path=store,
        client_tokens=client_tokens,
        client_token=first.get("current", ""),
        client_key=first.get("key", ""),
        fernet_keys=after["fernet_keys"],
        fernet_key=(after["fernet_keys"] or [""])[0],
    )


if __name__ == "__main__":
    main()
