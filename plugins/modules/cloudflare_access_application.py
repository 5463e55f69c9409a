#!/usr/bin/python
"""Ansible module: a self-hosted Cloudflare Access application for one public hostname."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloudflare_access_application
short_description: Put a public hostname behind Cloudflare Access (self-hosted application)
description:
  - Manages the self-hosted Cloudflare Access (Zero Trust) application of an account whose C(domain) is
    O(domain). An existing application for that domain is adopted and brought to the given settings;
    two applications for the same domain are an error the module will not guess its way out of.
  - With the application in place, Cloudflare's edge lets a request reach the hostname only when one of
    the application's O(policies) admits it; everything else is refused before it reaches the tunnel.
  - Settings the module does not manage (identity providers, CORS, custom pages, ...) are kept as they
    are when the application is updated.
version_added: "1.3.0"
author:
  - llm-relay maintainers (@llm-relay)
extends_documentation_fragment:
  - llm_relay.homelab.cloudflare_auth
options:
  domain:
    description:
      - The hostname (optionally with a path, C(relay.example.com/api)) the application protects. It must
        belong to a zone of the account, or Cloudflare refuses it (error 12130, C(domain does not belong
        to zone)).
    type: str
    required: true
  name:
    description:
      - Application name shown in the Zero Trust dashboard. Defaults to O(domain).
    type: str
  state:
    description:
      - V(present) creates or updates the application; V(absent) deletes it (the hostname is open again,
        with only what the origin itself enforces).
    type: str
    choices: [present, absent]
    default: present
  policies:
    description:
      - Reusable Access policies (M(llm_relay.homelab.cloudflare_access_policy)) linked to the
        application, by name or id, in order of precedence (the first is evaluated first).
      - An application without policies admits nobody.
      - A name that matches no policy fails, except in check mode, where the policy may be created by an
        earlier task of the same run (the application is then reported as to be changed).
    type: list
    elements: str
    default: []
  session_duration:
    description:
      - How long the Access session (the C(CF_Authorization) token) lasts, as Cloudflare takes it
        (C(24h), C(30m), ...).
    type: str
    default: 24h
  service_auth_401_redirect:
    description:
      - Answer a request refused by a Service Auth (C(non_identity)) policy with HTTP 401 instead of a
        redirect to the login page; what API clients such as the relay's want.
    type: bool
    default: true
  app_launcher_visible:
    description:
      - Show the application in the user's App Launcher. An API behind service tokens has no use there.
    type: bool
    default: false
seealso:
  - module: llm_relay.homelab.cloudflare_access_policy
  - module: llm_relay.homelab.cloudflare_access_service_token
  - name: Self-hosted public applications
    description: Cloudflare Access applications for hostnames on Cloudflare.
    link: https://developers.cloudflare.com/cloudflare-one/applications/configure-apps/self-hosted-public-app/
attributes:
  check_mode:
    support: full
    description: Reads only; reports what would be created, updated or deleted.
  diff_mode:
    support: full
    description: Before/after of the managed settings and the linked policies.
"""

EXAMPLES = r"""
- name: relay.example.com is reachable only with the relay's service token
  llm_relay.homelab.cloudflare_access_application:
    domain: relay.example.com
    name: llm-relay
    policies:
      - llm-relay service auth
    account_id: "{{ cloudflare_account_id }}"
    api_token: "{{ cloudflare_api_token }}"
  register: relay_access_app

- name: The hostname is no longer behind Access
  llm_relay.homelab.cloudflare_access_application:
    domain: relay.example.com
    state: absent
"""

RETURN = r"""
app_id:
  description: Application id (UUID); null when absent or when it would be created in check mode.
  returned: always
  type: str
  sample: 7bdcc6f3-23bb-4935-bea8-3b364836d095
aud:
  description: The application's audience tag (the C(aud) claim of the C(Cf-Access-Jwt-Assertion) JWT).
  returned: when the application exists
  type: str
  sample: cb05a40299754a361317e84835bbc94f54c6a3dded5d0848d5f09e9c38684f52
application:
  description: The managed settings after the run (as they would be, in check mode).
  returned: when state is present
  type: dict
  contains:
    domain:
      description: Protected hostname.
      type: str
    name:
      description: Application name.
      type: str
    session_duration:
      description: Session duration.
      type: str
    service_auth_401_redirect:
      description: Whether Service Auth refusals are answered 401.
      type: bool
    app_launcher_visible:
      description: Whether the App Launcher shows it.
      type: bool
    policies:
      description: Ids of the linked reusable policies, in order of precedence.
      type: list
      elements: str
  sample:
    domain: relay.example.com
    name: llm-relay
    session_duration: 24h
    service_auth_401_redirect: true
    app_launcher_visible: false
    policies: [f174e90a-fafe-4643-bbbc-4a0ed4fc8415]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llm_relay.homelab.plugins.module_utils.cloudflare import (
    ACCESS_HINTS,
    AccessPaths,
    cloudflare_argument_spec,
    run_module,
)

MANAGED = ("domain", "name", "session_duration", "service_auth_401_redirect", "app_launcher_visible")
# Settings of a self-hosted application a PUT would reset when left out: sent back as they are.
KEPT = (
    "allow_authenticate_via_warp", "allowed_idps", "auto_redirect_to_identity", "cors_headers",
    "custom_deny_message", "custom_deny_url", "custom_non_identity_deny_url", "custom_pages",
    "enable_binding_cookie", "http_only_cookie_attribute", "logo_url", "options_preflight_bypass",
    "path_cookie_attribute", "same_site_cookie_attribute", "self_hosted_domains", "skip_interstitial", "tags",
)  # fmt: skip


def _policy_ids(module, access):
    """Ids for O(policies) in order; None when a policy named in check mode does not exist yet."""
    return access.ids_for(module, "policies", "policies", "reusable policies", "reusable Access policy")


def _view(app):
    view = {k: app.get(k) for k in MANAGED}
    view["domain"] = (view["domain"] or "").lower().rstrip(".")
    links = sorted(app.get("policies") or [], key=lambda p: p.get("precedence") or 0)
    view["policies"] = [p.get("id") for p in links]
    return view


def _body(want, current):
    body = {k: current[k] for k in KEPT if current and current.get(k) is not None}
    body.update({k: want[k] for k in MANAGED}, type="self_hosted")
    body["policies"] = [{"id": pid, "precedence": i} for i, pid in enumerate(want["policies"], start=1)]
    return body


def run(module, client):
    params = module.params
    domain = params["domain"].strip().lower().rstrip(".")
    access = AccessPaths(client)
    current = access.find(
        "apps",
        f"domain={domain!r}",
        lambda a: (a.get("domain") or "").lower().rstrip(".") == domain and a.get("type") == "self_hosted",
    )
    result = {"changed": False, "app_id": current["id"] if current else None}
    if current:
        result["aud"] = current.get("aud")

    if params["state"] == "absent":
        if current:
            result["changed"] = True
            result["diff"] = {"before": _view(current), "after": {}}
            if not module.check_mode:
                client.request("delete", access.path("apps", current["id"]))
        result.update(app_id=None, aud=None)
        return result

    policy_ids = _policy_ids(module, access)
    want = {
        "domain": domain,
        "name": params["name"] or domain,
        "session_duration": params["session_duration"],
        "service_auth_401_redirect": params["service_auth_401_redirect"],
        "app_launcher_visible": params["app_launcher_visible"],
        "policies": policy_ids or [],
    }
    if not want["policies"] and policy_ids is not None:
        module.warn("policies is empty: the application admits nobody")
    before = _view(current) if current else {}
    result["application"] = want
    if policy_ids is not None and current and before == want:
        return result

    result["changed"] = True
    result["diff"] = {"before": before, "after": want}
    if module.check_mode or policy_ids is None:
        return result
    body = _body(want, current)
    if current:
        saved = client.request("put", access.path("apps", current["id"]), body=body)
    else:
        saved = client.request("post", access.path("apps"), body=body)
    result.update(app_id=saved["id"], aud=saved.get("aud"), application=_view(saved))
    return result


def main():
    module = AnsibleModule(
        argument_spec=cloudflare_argument_spec(
            domain={"type": "str", "required": True},
            name={"type": "str"},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
            policies={"type": "list", "elements": "str", "default": []},
            session_duration={"type": "str", "default": "24h"},
            service_auth_401_redirect={"type": "bool", "default": True},
            app_launcher_visible={"type": "bool", "default": False},
        ),
        supports_check_mode=True,
    )
    hints = {**ACCESS_HINTS, 12130: "domain, policies or session_duration"}
    run_module(module, run, f"cloudflare_access_application domain={module.params['domain']}", hints)


if __name__ == "__main__":
    main()
