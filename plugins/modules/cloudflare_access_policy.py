#!/usr/bin/python
"""Ansible module: a reusable Cloudflare Access policy, by name."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloudflare_access_policy
short_description: Manage a reusable Cloudflare Access policy, such as one admitting service tokens
description:
  - Manages one reusable Cloudflare Access (Zero Trust) policy of an account
    (C(/accounts/{account_id}/access/policies)), identified by its O(name). An existing policy with that
    name is adopted and brought to the given settings; two with the same name are an error.
  - Reusable policies are what the API reference recommends over policies that exist only inside one
    application; M(llm_relay.homelab.cloudflare_access_application) links them to an application
    (O(llm_relay.homelab.cloudflare_access_application#module:policies)).
  - The usual use here is Service Auth, O(decision=non_identity) with O(service_tokens), so that only
    requests carrying one of those service tokens reach the application.
version_added: "1.3.0"
author:
  - llm-relay maintainers (@llm-relay)
extends_documentation_fragment:
  - llm_relay.homelab.cloudflare_auth
options:
  name:
    description:
      - Policy name, unique among the account's reusable policies.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the policy; V(absent) deletes it.
      - Cloudflare may refuse to delete a policy still linked to an application; remove the application
        (or the link) first.
    type: str
    choices: [present, absent]
    default: present
  decision:
    description:
      - What Access does when a request matches. V(non_identity) is Service Auth (service tokens, no
        login); V(allow), V(deny), V(bypass) are the other actions.
    type: str
    choices: [non_identity, allow, deny, bypass]
    default: non_identity
  service_tokens:
    description:
      - "Service tokens the policy includes, by name or id
        (RV(llm_relay.homelab.cloudflare_access_service_token#module:service_token_id)). Each becomes an
        include rule C({service_token: {token_id: ...}}), before the rules of O(include)."
      - A name that matches no token fails, except in check mode, where the token may be created by an
        earlier task of the same run (the policy is then reported as to be changed).
    type: list
    elements: str
    default: []
  include:
    description:
      - "Further include rules, each a rule object as the API takes it (for example
        C({any_valid_service_token: {}}) or C({ip: {ip: 192.0.2.0/24}})). A request matches when it meets
        any include rule."
      - O(service_tokens) and O(include) together must name at least one rule.
    type: list
    elements: dict
    default: []
  exclude:
    description: Rule objects a matching request must not meet.
    type: list
    elements: dict
    default: []
  require:
    description: Rule objects a matching request must all meet.
    type: list
    elements: dict
    default: []
  session_duration:
    description:
      - How long a session this policy grants lasts (C(24h), C(30m), ...). Unset leaves it as it is
        (Cloudflare's default, C(24h), for a new policy).
    type: str
seealso:
  - module: llm_relay.homelab.cloudflare_access_service_token
  - module: llm_relay.homelab.cloudflare_access_application
  - name: Cloudflare Access policies
    description: Actions (Service Auth is C(non_identity)) and selectors.
    link: https://developers.cloudflare.com/cloudflare-one/policies/access/
attributes:
  check_mode:
    support: full
    description: Reads only; reports what would be created, updated or deleted.
  diff_mode:
    support: full
    description: Before/after of the policy's decision, rules and session duration.
"""

EXAMPLES = r"""
- name: Only the relay's service token passes
  llm_relay.homelab.cloudflare_access_policy:
    name: llm-relay service auth
    decision: non_identity
    service_tokens:
      - llm-relay-client
    account_id: "{{ cloudflare_account_id }}"
    api_token: "{{ cloudflare_api_token }}"
  register: relay_access_policy

- name: Any valid service token of the account passes
  llm_relay.homelab.cloudflare_access_policy:
    name: any service token
    include:
      - any_valid_service_token: {}

- name: Policy is gone (after the application that linked it)
  llm_relay.homelab.cloudflare_access_policy:
    name: llm-relay service auth
    state: absent
"""

RETURN = r"""
policy_id:
  description: Policy id (UUID); null when absent or when it would be created in check mode.
  returned: always
  type: str
  sample: f174e90a-fafe-4643-bbbc-4a0ed4fc8415
policy:
  description: The policy's managed fields after the run (as they would be, in check mode).
  returned: when state is present
  type: dict
  contains:
    name:
      description: Policy name.
      type: str
    decision:
      description: The action.
      type: str
    include:
      description: Include rules.
      type: list
      elements: dict
    exclude:
      description: Exclude rules.
      type: list
      elements: dict
    require:
      description: Require rules.
      type: list
      elements: dict
    session_duration:
      description: Session duration.
      type: str
  sample:
    name: llm-relay service auth
    decision: non_identity
    include: [{service_token: {token_id: 3f7a3c1e-8f5b-4d55-9a0e-0c1d2e3f4a5b}}]
    exclude: []
    require: []
    session_duration: 24h
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llm_relay.homelab.plugins.module_utils.cloudflare import (
    ACCESS_HINTS,
    AccessPaths,
    cloudflare_argument_spec,
    run_module,
)

RULE_LISTS = ("include", "exclude", "require")


def _token_rules(module, access):
    """Include rules for O(service_tokens); None when a token named in check mode does not exist yet."""
    ids = access.ids_for(module, "service_tokens", "service_tokens", "service tokens", "service token")
    return None if ids is None else [{"service_token": {"token_id": token_id}} for token_id in ids]


def _view(policy):
    keys = ("name", "decision", *RULE_LISTS, "session_duration")
    return {k: policy.get(k) if k not in RULE_LISTS else policy.get(k) or [] for k in keys}


def run(module, client):
    params = module.params
    name = params["name"]
    access = AccessPaths(client)
    current = access.find("policies", f"name={name!r}", lambda p: p.get("name") == name)
    result = {"changed": False, "policy_id": current["id"] if current else None}

    if params["state"] == "absent":
        if current:
            result["changed"] = True
            result["diff"] = {"before": _view(current), "after": {}}
            if not module.check_mode:
                client.request("delete", access.path("policies", current["id"]))
        result["policy_id"] = None
        return result

    token_rules = _token_rules(module, access)
    want = {
        "name": name,
        "decision": params["decision"],
        "include": (token_rules or []) + params["include"],
        "exclude": params["exclude"],
        "require": params["require"],
        "session_duration": params["session_duration"]
        or (current.get("session_duration") if current else None)
        or "24h",
    }
    if not want["include"] and token_rules is not None:
        module.fail_json(
            msg="service_tokens and include name no rule: a policy needs at least one include rule"
        )
    before = _view(current) if current else {}
    result["policy"] = want
    if token_rules is not None and current and before == want:
        result["policy"] = before
        return result

    result["changed"] = True
    result["diff"] = {"before": before, "after": want}
    if module.check_mode or token_rules is None:
        return result
    if current:
        saved = client.request("put", access.path("policies", current["id"]), body=want)
    else:
        saved = client.request("post", access.path("policies"), body=want)
    result.update(policy_id=saved["id"], policy=_view(saved))
    return result


def main():
    module = AnsibleModule(
        argument_spec=cloudflare_argument_spec(
            name={"type": "str", "required": True},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
            decision={
                "type": "str",
                "choices": ["non_identity", "allow", "deny", "bypass"],
                "default": "non_identity",
            },
            service_tokens={"type": "list", "elements": "str", "default": [], "no_log": False},
            include={"type": "list", "elements": "dict", "default": []},
            exclude={"type": "list", "elements": "dict", "default": []},
            require={"type": "list", "elements": "dict", "default": []},
            session_duration={"type": "str"},
        ),
        supports_check_mode=True,
    )
    hints = {**ACCESS_HINTS, 12130: "decision, service_tokens, include, exclude or require"}
    run_module(module, run, f"cloudflare_access_policy name={module.params['name']}", hints)


if __name__ == "__main__":
    main()
