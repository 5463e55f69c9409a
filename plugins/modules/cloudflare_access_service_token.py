#!/usr/bin/python
"""Ansible module: a Cloudflare Access service token, by name."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloudflare_access_service_token
short_description: Create, rotate or delete a Cloudflare Access service token
description:
  - Manages one Cloudflare Access (Zero Trust) service token of an account, identified by its O(name).
    An existing token with that name is adopted, never duplicated; two tokens with the same name are an
    error the module will not guess its way out of.
  - A service token is a Client ID and a Client Secret that machines send as the C(CF-Access-Client-Id)
    and C(CF-Access-Client-Secret) headers; an Access policy with decision C(non_identity) (Service Auth)
    that includes the token lets them through (M(llm_relay.homelab.cloudflare_access_policy)).
  - B(Cloudflare returns the Client Secret only when the token is created or rotated.) The module returns
    it as RV(client_secret) in exactly those runs and never again. Register the task with C(no_log) set to
    C(true) and store the secret at once (as M(llm_relay.homelab.relay_secrets) stores the secrets this
    project generates); a lost secret can only be replaced with O(rotate_secret=true).
version_added: "1.3.0"
author:
  - llm-relay maintainers (@llm-relay)
extends_documentation_fragment:
  - llm_relay.homelab.cloudflare_auth
options:
  name:
    description:
      - Service token name, unique among the account's service tokens.
    type: str
    required: true
  state:
    description:
      - V(present) creates the token when missing; V(absent) deletes it (clients using it are refused from
        then on).
    type: str
    choices: [present, absent]
    default: present
  duration:
    description:
      - How long the token is valid, as Cloudflare takes it (C(8760h), C(2h45m), or V(forever)).
      - Unset leaves an existing token's duration alone; a new token then gets Cloudflare's default
        (C(8760h), one year).
    type: str
  rotate_secret:
    description:
      - Generate a new Client Secret (C(POST .../access/service_tokens/{id}/rotate)). The Client ID stays.
        Always reports V(changed) when the token exists or is created.
    type: bool
    default: false
  previous_secret_grace:
    description:
      - With O(rotate_secret=true), seconds during which the previous Client Secret is still accepted
        (Cloudflare's C(previous_client_secret_expires_at)), so clients can switch without a failed
        request. V(0) expires it at once.
    type: int
    default: 0
seealso:
  - module: llm_relay.homelab.cloudflare_access_policy
  - module: llm_relay.homelab.cloudflare_access_application
  - name: Cloudflare Access service tokens
    description: Creating, renewing and revoking service tokens.
    link: https://developers.cloudflare.com/cloudflare-one/identity/service-tokens/
attributes:
  check_mode:
    support: full
    description: Reads only; reports what would be created, changed, rotated or deleted.
  diff_mode:
    support: full
    description: Before/after of the token's existence, duration and secret rotation (never the secret).
"""

EXAMPLES = r"""
- name: Relay service token exists (its secret is returned once, when created)
  llm_relay.homelab.cloudflare_access_service_token:
    name: llm-relay-client
    account_id: "{{ cloudflare_account_id }}"
    api_token: "{{ cloudflare_api_token }}"
  register: relay_service_token
  no_log: true

- name: Store the secret the moment Cloudflare hands it out
  ansible.builtin.copy:
    dest: "{{ playbook_dir }}/.secrets/access-service-token.json"
    content: "{{ {'client_id': relay_service_token.client_id,
                  'client_secret': relay_service_token.client_secret} | to_json }}"
    mode: "0600"
  when: relay_service_token.client_secret is not none
  no_log: true

- name: Rotate it; the old secret keeps working for 10 minutes
  llm_relay.homelab.cloudflare_access_service_token:
    name: llm-relay-client
    rotate_secret: true
    previous_secret_grace: 600
  register: relay_service_token
  no_log: true

- name: Service token is gone
  llm_relay.homelab.cloudflare_access_service_token:
    name: llm-relay-client
    state: absent
"""

RETURN = r"""
service_token_id:
  description: Service token id (UUID); null when absent or when it would be created in check mode.
  returned: always
  type: str
  sample: 3f7a3c1e-8f5b-4d55-9a0e-0c1d2e3f4a5b
client_id:
  description: The Client ID (the C(CF-Access-Client-Id) header). Not a secret.
  returned: when the token exists
  type: str
  sample: 88bf3b6d86161464f6509f7219099e57.access
client_secret:
  description:
    - The Client Secret (the C(CF-Access-Client-Secret) header). A secret; set C(no_log) on the task.
    - Only in the run that created or rotated the token (Cloudflare never shows it again); null otherwise.
  returned: always
  type: str
  sample: null
duration:
  description: How long the token is valid.
  returned: when the token exists
  type: str
  sample: 8760h
expires_at:
  description: When the token expires (RFC 3339).
  returned: when the token exists
  type: str
  sample: "2027-12-07T03:29:21Z"
secret_rotated:
  description: Whether a new Client Secret was generated by rotation (or would be, in check mode).
  returned: always
  type: bool
  sample: false
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llm_relay.homelab.plugins.module_utils.cloudflare import (
    ACCESS_HINTS,
    AccessPaths,
    cloudflare_argument_spec,
    run_module,
)


def _public(token):
    if not token:
        return {"service_token_id": None}
    return {
        "service_token_id": token["id"],
        "client_id": token.get("client_id"),
        "duration": token.get("duration"),
        "expires_at": token.get("expires_at"),
    }


def _grace_until(seconds):
    # timezone.utc, not datetime.UTC (3.11+): the module may run on an older interpreter of a managed host.
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)  # noqa: UP017
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def run(module, client):
    params = module.params
    name = params["name"]
    access = AccessPaths(client)
    token = access.find("service_tokens", f"name={name!r}", lambda t: t.get("name") == name)
    result = {"changed": False, "name": name, "secret_rotated": False, "client_secret": None}
    before = {"name": name, "state": "present" if token else "absent"}
    if token:
        before["duration"] = token.get("duration")

    if params["state"] == "absent":
        if token:
            result["changed"] = True
            if not module.check_mode:
                client.request("delete", access.path("service_tokens", token["id"]))
        result["service_token_id"] = None
        result["diff"] = {"before": before, "after": {"name": name, "state": "absent"}}
        return result

    after = {"name": name, "state": "present"}
    if not token:
        result["changed"] = True
        body = {"name": name}
        if params["duration"]:
            body["duration"] = params["duration"]
        after["duration"] = params["duration"] or "(Cloudflare's default)"
        if not module.check_mode:
            token = client.request("post", access.path("service_tokens"), body=body)
            result["client_secret"] = token.get("client_secret")
    else:
        after["duration"] = token.get("duration")
        if params["duration"] and params["duration"] != token.get("duration"):
            result["changed"] = True
            after["duration"] = params["duration"]
            if not module.check_mode:
                body = {"name": name, "duration": params["duration"]}
                token = client.request("put", access.path("service_tokens", token["id"]), body=body)

    if params["rotate_secret"]:
        result.update(changed=True, secret_rotated=True)
        after["client_secret"] = "(rotated)"  # noqa: S105 - a marker for the diff, not a secret
        if token and not module.check_mode:
            body = {"previous_client_secret_expires_at": _grace_until(params["previous_secret_grace"])}
            rotated = client.request("post", access.path("service_tokens", token["id"], "rotate"), body=body)
            result["client_secret"] = rotated.get("client_secret")
            token = dict(token, **{k: v for k, v in rotated.items() if k != "client_secret"})

    result["diff"] = {"before": before, "after": after}
    result.update(_public(token))
    return result


def main():
    module = AnsibleModule(
        argument_spec=cloudflare_argument_spec(
            name={"type": "str", "required": True},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
            duration={"type": "str"},
            rotate_secret={"type": "bool", "default": False, "no_log": False},
            previous_secret_grace={"type": "int", "default": 0, "no_log": False},
        ),
        supports_check_mode=True,
    )
    if module.params["previous_secret_grace"] < 0:
        module.fail_json(msg="previous_secret_grace must be 0 or more seconds")
    hints = {**ACCESS_HINTS, 12130: "name, duration or previous_secret_grace", 7003: "account_id"}
    run_module(module, run, f"cloudflare_access_service_token name={module.params['name']}", hints)


if __name__ == "__main__":
    main()
