#!/usr/bin/python
"""Ansible module: a remotely-managed Cloudflare Tunnel, by name."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloudflare_tunnel
short_description: Create, adopt, rename, rotate or delete a remotely-managed Cloudflare Tunnel
description:
  - Manages one remotely-managed (C(config_src=cloudflare)) Cloudflare Tunnel, identified by its O(name).
  - An existing non-deleted tunnel with that name is adopted, never duplicated; two tunnels with the same
    name are an error the module will not guess its way out of.
  - Its ingress rules are managed by M(llm_relay.homelab.cloudflare_tunnel_ingress); its DNS record by
    M(llm_relay.homelab.cloudflare_dns_record)
    (O(llm_relay.homelab.cloudflare_dns_record#module:tunnel_id) = RV(tunnel_id)).
  - The connector token (what C(cloudflared tunnel run --token) / C(TUNNEL_TOKEN) consumes) is returned
    only when O(return_token=true). Register such a task with C(no_log) set to C(true).
version_added: "1.0.0"
author:
  - llm-relay maintainers (@llm-relay)
extends_documentation_fragment:
  - llm_relay.homelab.cloudflare_auth
options:
  name:
    description:
      - Tunnel name, unique among the account's non-deleted tunnels.
    type: str
    required: true
  state:
    description:
      - V(present) creates the tunnel when missing (or adopts the existing one).
      - V(absent) deletes it with C(cascade=true), which also cleans up its connections.
    type: str
    choices: [present, absent]
    default: present
  rename_from:
    description:
      - When no tunnel is named O(name) but one is named O(rename_from), that tunnel is renamed to O(name)
        (the documented C(name) field of C(PATCH /accounts/{account_id}/cfd_tunnel/{tunnel_id})) instead of
        a new one being created. Its id, secret, connections and ingress stay as they are.
      - This is how a tunnel that replaced another one (a second tunnel made for a rotation, then the old
        one deleted) takes over the old one's name, so later runs find it under the usual name.
      - When tunnels with both names exist the module fails naming both (it will not guess which to keep).
      - Not allowed with O(state=absent).
    type: str
    version_added: "1.2.0"
  rotate_secret:
    description:
      - Set a new random tunnel secret (32 bytes). Tokens built on the old secret stop working for new
        connector connections; connectors already connected stay up until they restart, so deploy the
        new RV(token) to every connector and restart them one at a time.
      - Cloudflare documents no rotation call for remotely-managed tunnels (the dashboard has "Rotate
        token"). The connector token is base64 JSON whose C(s) field is the tunnel secret, so the module
        PATCHes a fresh C(tunnel_secret) and reads the token again. This follows cloudflared's token format
        rather than a documented API call.
      - Always reports V(changed) when the tunnel exists or is created.
    type: bool
    default: false
  return_token:
    description:
      - Also return the connector RV(token). Set C(no_log) to C(true) on the task.
    type: bool
    default: false
seealso:
  - module: llm_relay.homelab.cloudflare_tunnel_ingress
  - module: llm_relay.homelab.cloudflare_dns_record
  - name: Cloudflare Tunnel API
    description: Create a remotely-managed tunnel with the API.
    link: https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/get-started/create-remote-tunnel-api/
attributes:
  check_mode:
    support: full
    description: Reads only; reports what would be created, rotated or deleted.
  diff_mode:
    support: full
    description: Before/after of the tunnel's existence and secret rotation.
"""

EXAMPLES = r"""
- name: Relay tunnel exists (token kept out of logs)
  llm_relay.homelab.cloudflare_tunnel:
    name: llm-relay
    account_id: "{{ cloudflare_account_id }}"
    api_token: "{{ cloudflare_api_token }}"
    return_token: true
  register: relay_tunnel
  no_log: true

- name: Rotate the connector secret (deploy relay_tunnel_rotated.token afterwards)
  llm_relay.homelab.cloudflare_tunnel:
    name: llm-relay
    rotate_secret: true
    return_token: true
  register: relay_tunnel_rotated
  no_log: true

- name: Tunnel is gone, connections cleaned up
  llm_relay.homelab.cloudflare_tunnel:
    name: llm-relay
    state: absent

- name: The tunnel that replaced llm-relay takes its name
  llm_relay.homelab.cloudflare_tunnel:
    name: llm-relay
    rename_from: llm-relay-next
"""

RETURN = r"""
tunnel_id:
  description: Tunnel UUID; null when absent or when it would be created in check mode.
  returned: always
  type: str
  sample: 4f0d8a4b-1c2e-4f3a-9b8c-7d6e5f4a3b2c
account_tag:
  description: Account id the tunnel belongs to.
  returned: when the tunnel exists
  type: str
  sample: 0123456789abcdef0123456789abcdef
name:
  description: Tunnel name.
  returned: always
  type: str
  sample: llm-relay
cname_target:
  description: Target of the proxied CNAME that routes a hostname to this tunnel.
  returned: when the tunnel exists
  type: str
  sample: 4f0d8a4b-1c2e-4f3a-9b8c-7d6e5f4a3b2c.cfargotunnel.com
status:
  description: Tunnel status as Cloudflare reports it (V(inactive), V(healthy), V(degraded), V(down)).
  returned: when the tunnel exists
  type: str
  sample: inactive
connections:
  description: Active connector connections (Cloudflare's connection objects).
  returned: when the tunnel exists
  type: list
  elements: dict
  sample: []
renamed_from:
  description: The name the tunnel had before this run renamed it (O(rename_from)); null when not renamed.
  returned: always
  type: str
  sample: llm-relay-next
  version_added: "1.2.0"
secret_rotated:
  description: Whether a new tunnel secret was set (or would be, in check mode).
  returned: always
  type: bool
  sample: false
token:
  description: Connector token (secret). Only with O(return_token=true) and a tunnel that exists.
  returned: when return_token is true and the tunnel exists
  type: str
  sample: eyJhIjoi...
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llm_relay.homelab.plugins.module_utils.cloudflare import (
    CloudflareAPIError,
    cloudflare_argument_spec,
    new_tunnel_secret,
    run_module,
)

DUPLICATE_TUNNEL_NAME = 1013


def _public(tunnel):
    if not tunnel:
        return {"tunnel_id": None}
    tunnel_id = tunnel["id"]
    return {
        "tunnel_id": tunnel_id,
        "account_tag": tunnel.get("account_tag"),
        "cname_target": f"{tunnel_id}.cfargotunnel.com",
        "status": tunnel.get("status"),
        "connections": tunnel.get("connections") or [],
    }


def _find_one(client, name):
    tunnels = client.find_tunnels(name)
    if len(tunnels) > 1:
        raise CloudflareAPIError(
            f"name={name!r} matches {len(tunnels)} non-deleted tunnels "
            f"({', '.join(t['id'] for t in tunnels)}); "
            "delete the extra ones, the module will not guess"
        )
    return tunnels[0] if tunnels else None


def _create(client, name):
    body = {"name": name, "config_src": "cloudflare", "tunnel_secret": new_tunnel_secret()}
    try:
        return client.request("post", client.tunnels_path(), body=body)
    except CloudflareAPIError as exc:
        # A retried POST whose first attempt did land, or a concurrent run: adopt rather than fail.
        if exc.code == DUPLICATE_TUNNEL_NAME:
            existing = _find_one(client, name)
            if existing:
                return existing
        raise


def _require_remote(tunnel):
    if tunnel and tunnel.get("config_src") not in (None, "cloudflare"):
        raise CloudflareAPIError(
            "tunnel {!r} ({}) is locally-managed (config_src={}); this module manages remotely-managed "
            "tunnels only".format(tunnel.get("name"), tunnel["id"], tunnel.get("config_src"))
        )


def _renamed(module, client, name, tunnel):
    """The tunnel named rename_from, renamed to name, when no tunnel has that name yet."""
    old_name = module.params["rename_from"]
    source = _find_one(client, old_name) if old_name and old_name != name else None
    if source and tunnel:
        raise CloudflareAPIError(
            f"tunnels named both name={name!r} ({tunnel['id']}) and rename_from={old_name!r} "
            f"({source['id']}) exist; delete the one that should go, the module will not guess"
        )
    _require_remote(source)
    if not source or module.check_mode:
        return source
    return client.request("patch", client.tunnels_path(source["id"]), body={"name": name})


def run(module, client):
    name = module.params["name"]
    state = module.params["state"]
    rotate = module.params["rotate_secret"]
    result = {"changed": False, "name": name, "secret_rotated": False, "renamed_from": None}

    tunnel = _find_one(client, name)
    before = {"name": name, "state": "present" if tunnel else "absent"}
    if tunnel:
        before["tunnel_id"] = tunnel["id"]
    if state == "present":
        source = _renamed(module, client, name, tunnel)
        if source:
            tunnel = source
            result.update(changed=True, renamed_from=module.params["rename_from"])
            before = {"name": module.params["rename_from"], "state": "present", "tunnel_id": source["id"]}

    if state == "absent":
        if tunnel:
            result["changed"] = True
            if not module.check_mode:
                client.request("delete", client.tunnels_path(tunnel["id"]), params={"cascade": "true"})
        result["tunnel_id"] = None
        result["diff"] = {"before": before, "after": {"name": name, "state": "absent"}}
        return result

    _require_remote(tunnel)

    if not tunnel:
        result["changed"] = True
        if not module.check_mode:
            tunnel = _create(client, name)
    if rotate:
        result["changed"] = True
        result["secret_rotated"] = True
        if tunnel and not module.check_mode:
            tunnel = client.request(
                "patch", client.tunnels_path(tunnel["id"]), body={"tunnel_secret": new_tunnel_secret()}
            )

    after = {"name": name, "state": "present"}
    if tunnel:
        after["tunnel_id"] = tunnel["id"]
    if rotate:
        after["tunnel_secret"] = "(rotated)"  # noqa: S105 - a marker for the diff, not a secret
    result["diff"] = {"before": before, "after": after}
    result.update(_public(tunnel))
    if tunnel and module.params["return_token"]:
        result["token"] = client.tunnel_token(tunnel["id"])
    return result


def main():
    module = AnsibleModule(
        argument_spec=cloudflare_argument_spec(
            name={"type": "str", "required": True},
            rename_from={"type": "str"},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
            rotate_secret={"type": "bool", "default": False, "no_log": False},
            return_token={"type": "bool", "default": False, "no_log": False},
        ),
        supports_check_mode=True,
    )
    if module.params["rename_from"] and module.params["state"] == "absent":
        module.fail_json(msg="rename_from is only for state=present (it renames instead of creating)")
    run_module(
        module, run, f"cloudflare_tunnel name={module.params['name']}", {1013: "name", 7003: "account_id"}
    )


if __name__ == "__main__":
    main()
