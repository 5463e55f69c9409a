#!/usr/bin/python
"""Ansible module: the whole remote configuration (ingress rules) of a Cloudflare Tunnel."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloudflare_tunnel_ingress
short_description: Declare the ingress rules of a remotely-managed Cloudflare Tunnel
description:
  - Sets the tunnel's whole remote configuration (C(PUT .../cfd_tunnel/{id}/configurations)), that is
    the ordered ingress O(rules) and the tunnel-wide O(origin_request) defaults. Rules not listed are removed.
  - A catch-all rule (O(catch_all), C(http_status:404) by default) is appended unless the last rule given
    already is one (no O(rules[].hostname) or C(*), and no O(rules[].path)).
  - The current configuration is read first and written only when it differs, so V(changed) means the
    connectors receive a new configuration version. The diff lists rules one per line, so a changed line
    names its rule.
  - Rejects, before any API call, what cloudflared would refuse to load, namely a
    catch-all rule that is not last, a hostname with a port, a wildcard anywhere but the first character,
    a path that is not a valid regular expression, a service that is not one of the forms below.
  - The C(warp-routing) setting is not managed; its current value is kept.
version_added: "1.0.0"
author:
  - llm-relay maintainers (@llm-relay)
extends_documentation_fragment:
  - llm_relay.homelab.cloudflare_auth
options:
  tunnel_id:
    description:
      - UUID of the tunnel (RV(llm_relay.homelab.cloudflare_tunnel#module:tunnel_id)).
        Exactly one of O(tunnel_id) and O(tunnel_name).
      - In check mode an empty value (the tunnel would be created by an earlier task) reports the
        configuration that would be written.
    type: str
  tunnel_name:
    description:
      - Name of the tunnel, looked up among the account's non-deleted tunnels.
    type: str
  rules:
    description:
      - Ordered ingress rules; the first rule matching a request's hostname and path wins.
    type: list
    elements: dict
    default: []
    suboptions:
      hostname:
        description:
          - Public hostname, for example C(relay.example.com), or a wildcard C(*.example.com).
          - Omit it (and O(rules[].path)) only in the last rule, to make it the catch-all.
        type: str
      path:
        description:
          - Regular expression matched against the request path (Go RE2 syntax, checked here with Python's
            C(re), which accepts nearly the same language).
        type: str
      service:
        description:
          - Where matching requests go. One of C(http://host[:port]), C(https://host[:port]) (also
            C(ws://), C(wss://)), C(tcp://), C(ssh://), C(rdp://), C(smb://host:port) (any other scheme
            is proxied as TCP, as cloudflared does), C(unix:/path/to.sock), C(unix+tls:/path/to.sock),
            C(http_status:NNN), C(hello_world), C(bastion), C(socks-proxy).
          - URLs take no path (cloudflared forwards the request's own path), not even a trailing C(/).
        type: str
        required: true
      origin_request:
        description:
          - Origin settings of this rule; each one set here overrides the tunnel-wide O(origin_request).
          - Options left unset are not sent, so the tunnel-wide value or cloudflared's own default applies.
        type: dict
        # One list of keys for both levels (YAML anchor), as cloudflared takes the same originRequest keys.
        suboptions: &origin_request_options
          connect_timeout:
            description: Seconds to establish a TCP connection to the origin (cloudflared default 30).
            type: int
          tls_timeout:
            description: Seconds to complete the TLS handshake with an https origin.
            type: int
          tcp_keep_alive:
            description: Seconds between TCP keepalive packets to the origin.
            type: int
          keep_alive_connections:
            description: Maximum idle keepalive connections to the origin.
            type: int
          keep_alive_timeout:
            description: Seconds after which an idle keepalive connection is closed.
            type: int
          no_happy_eyeballs:
            description: Disable the happy eyeballs IPv4/IPv6 fallback.
            type: bool
          http_host_header:
            description: Host header sent to the origin.
            type: str
          origin_server_name:
            description: Hostname expected in the origin's certificate.
            type: str
          ca_pool:
            description: Path, on the connector host, of a CA bundle for the origin's certificate.
            type: str
          no_tls_verify:
            description: Accept any certificate from the origin. Only for origins on the connector's host.
            type: bool
          disable_chunked_encoding:
            description: Disable chunked transfer encoding (useful for WSGI servers).
            type: bool
          http2_origin:
            description: Talk HTTP/2 to an https origin.
            type: bool
          proxy_type:
            description: Proxy started by cloudflared for C(bastion)/TCP services; V("") or V(socks).
            type: str
            choices: ["", socks]
          access:
            description: Require a valid Cloudflare Access JWT on each request.
            type: dict
            suboptions:
              required:
                description: Deny requests without a valid Access token.
                type: bool
                default: false
              team_name:
                description: Zero Trust team name; needed when O(origin_request.access.aud_tag) is set.
                type: str
              aud_tag:
                description: Access application audience tags allowed.
                type: list
                elements: str
  origin_request:
    description:
      - Tunnel-wide defaults for the connection from cloudflared to the origin (C(originRequest)).
      - Options left unset are not sent, so cloudflared's own defaults apply.
    type: dict
    suboptions: *origin_request_options
  catch_all:
    description:
      - Service of the catch-all rule appended when the last of O(rules) is not one.
    type: str
    default: http_status:404
seealso:
  - module: llm_relay.homelab.cloudflare_tunnel
  - name: Ingress rules
    description: cloudflared's ingress rule semantics.
    link: https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/configure-tunnels/local-management/configuration-file/
attributes:
  check_mode:
    support: full
    description: Reads the current configuration and reports the diff; never PUTs.
  diff_mode:
    support: full
    description: Before/after of the tunnel's ingress rules.
"""

EXAMPLES = r"""
- name: relay.example.com goes to the relay, everything else gets 404
  llm_relay.homelab.cloudflare_tunnel_ingress:
    tunnel_id: "{{ relay_tunnel.tunnel_id }}"
    rules:
      - hostname: relay.example.com
        service: http://127.0.0.1:8080
    origin_request:
      connect_timeout: 10
      keep_alive_connections: 50

- name: Two hostnames, an API path with its own Host header, explicit catch-all
  llm_relay.homelab.cloudflare_tunnel_ingress:
    tunnel_name: llm-relay
    rules:
      - hostname: relay.example.com
        path: ^/v1/
        service: http://127.0.0.1:8080
        origin_request:
          http_host_header: relay.internal
      - hostname: "*.example.com"
        service: https://127.0.0.1:8443
        origin_request:
          origin_server_name: relay.internal
      - service: http_status:503
"""

RETURN = r"""
tunnel_id:
  description: UUID of the tunnel configured.
  returned: always
  type: str
  sample: 4f0d8a4b-1c2e-4f3a-9b8c-7d6e5f4a3b2c
config:
  description: The configuration as sent to the API (camelCase keys, catch-all included).
  returned: always
  type: dict
  sample:
    ingress:
      - hostname: relay.example.com
        service: http://127.0.0.1:8080
      - service: http_status:404
    originRequest:
      connectTimeout: 10
version:
  description: Configuration version after the run (Cloudflare increments it on every PUT).
  returned: when the tunnel exists
  type: int
  sample: 3
changes:
  description: Human-readable rule changes (added, removed, modified, reordered, origin defaults).
  returned: always
  type: list
  elements: str
  sample: ["modified rule relay.example.com: service http://127.0.0.1:8080 -> http://127.0.0.1:8081"]
"""

import json
import re
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llm_relay.homelab.plugins.module_utils.cloudflare import (
    CloudflareAPIError,
    cloudflare_argument_spec,
    run_module,
)

# snake_case option -> cloudflared's camelCase originRequest key.
ORIGIN_KEYS = {
    "connect_timeout": "connectTimeout",
    "tls_timeout": "tlsTimeout",
    "tcp_keep_alive": "tcpKeepAlive",
    "keep_alive_connections": "keepAliveConnections",
    "keep_alive_timeout": "keepAliveTimeout",
    "no_happy_eyeballs": "noHappyEyeballs",
    "http_host_header": "httpHostHeader",
    "origin_server_name": "originServerName",
    "ca_pool": "caPool",
    "no_tls_verify": "noTLSVerify",
    "disable_chunked_encoding": "disableChunkedEncoding",
    "http2_origin": "http2Origin",
    "proxy_type": "proxyType",
}
ACCESS_KEYS = {"required": "required", "team_name": "teamName", "aud_tag": "audTag"}
NAMED_SERVICES = ("hello_world", "hello-world", "bastion", "socks-proxy")


class IngressError(ValueError):
    """Configuration cloudflared would refuse to load; the message names the rule and the option."""


def origin_request_spec():
    spec = {
        name: {"type": "int"}
        for name in ("connect_timeout", "tls_timeout", "tcp_keep_alive", "keep_alive_timeout")
    }
    spec["keep_alive_connections"] = {"type": "int"}
    for name in ("no_happy_eyeballs", "no_tls_verify", "disable_chunked_encoding", "http2_origin"):
        spec[name] = {"type": "bool"}
    for name in ("http_host_header", "origin_server_name", "ca_pool"):
        spec[name] = {"type": "str"}
    spec["proxy_type"] = {"type": "str", "choices": ["", "socks"]}
    spec["access"] = {
        "type": "dict",
        "options": {
            "required": {"type": "bool", "default": False},
            "team_name": {"type": "str"},
            "aud_tag": {"type": "list", "elements": "str", "no_log": False},
        },
    }
    return spec


def origin_request_to_api(options, where):
    """snake_case options -> API originRequest dict without unset keys (None when nothing is set)."""
    if not options:
        return None
    out = {}
    for name, key in ORIGIN_KEYS.items():
        if options.get(name) is not None:
            out[key] = options[name]
    access = options.get("access")
    if access:
        if access.get("required") and access.get("aud_tag") and not access.get("team_name"):
            raise IngressError(f"{where}.access: team_name cannot be blank when aud_tag is set")
        out["access"] = {ACCESS_KEYS[k]: v for k, v in access.items() if v is not None}
    return out or None


def validate_service(service, where):
    if service.startswith(("unix:", "unix+tls:")) or service in NAMED_SERVICES:
        return
    if service.startswith("http_status:"):
        code = service[len("http_status:") :]
        if not code.isdigit() or not 100 <= int(code) <= 999:
            raise IngressError(f"{where}.service {service!r}: invalid HTTP status code")
        return
    try:
        parts = urlsplit(service)
        host = parts.hostname
    except ValueError as exc:
        raise IngressError(f"{where}.service {service!r}: {exc}") from exc
    if not parts.scheme or not host:
        raise IngressError(
            f"{where}.service {service!r} is an invalid address, please make sure it has a scheme and "
            "a hostname (or use unix:, http_status:NNN, hello_world)"
        )
    if parts.path or parts.query or parts.fragment:
        extra = service[len(parts.scheme) + 3 + len(parts.netloc) :]
        raise IngressError(
            f"{where}.service {service!r}: ingress rules don't support proxying to a different path on "
            f"the origin service; the request's own path is forwarded (remove {extra!r})"
        )


def is_catch_all(rule):
    return (rule.get("hostname") or "") in ("", "*") and not rule.get("path")


def validate_hostname(hostname, where):
    if ":" in hostname:
        raise IngressError(f"{where}.hostname {hostname!r}: hostname cannot contain a port")
    if hostname.rfind("*") > 0:
        raise IngressError(
            f"{where}.hostname {hostname!r}: hostname patterns can have at most one wildcard character "
            '("*") and it can only be used for subdomains, e.g. "*.example.com"'
        )


def build_config(rules, origin_request, catch_all):
    """The API ``config`` for the given module options, validated as cloudflared validates it."""
    ingress = []
    for index, rule in enumerate(rules):
        where = f"rules[{index}]"
        if not rule.get("service"):
            raise IngressError(f"{where}.service is required")
        hostname = rule.get("hostname") or ""
        path = rule.get("path") or ""
        validate_hostname(hostname, where)
        validate_service(rule["service"], where)
        if path:
            try:
                re.compile(path)
            except re.error as exc:
                raise IngressError(f"{where}.path {path!r} is not a valid regular expression: {exc}") from exc
        if is_catch_all(rule) and index != len(rules) - 1:
            raise IngressError(
                f"{where} matches every hostname{f' (hostname {hostname!r})' if hostname else ''}, so the "
                "rules after it would never be used; only the last rule can be the catch-all"
            )
        api_rule = {}
        if hostname:
            api_rule["hostname"] = hostname
        if path:
            api_rule["path"] = path
        api_rule["service"] = rule["service"]
        origin = origin_request_to_api(rule.get("origin_request"), where + ".origin_request")
        if origin:
            api_rule["originRequest"] = origin
        ingress.append(api_rule)
    if not rules or not is_catch_all(rules[-1]):
        validate_service(catch_all, "catch_all")
        ingress.append({"service": catch_all})
    config = {"ingress": ingress}
    defaults = origin_request_to_api(origin_request, "origin_request")
    if defaults:
        config["originRequest"] = defaults
    return config


def _prune(value):
    """Drop None, empty strings/dicts recursively: the API may echo absent keys as empty values."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def comparable(config):
    """The managed part of a configuration (ingress + originRequest), normalised for comparison."""
    config = config or {}
    out = {"ingress": [_prune(rule) for rule in config.get("ingress") or []]}
    origin = _prune(config.get("originRequest") or {})
    if origin:
        out["originRequest"] = origin
    return out


def _rule_label(rule):
    if not rule.get("hostname") and not rule.get("path"):
        return "catch-all"
    label = rule.get("hostname") or "*"
    if rule.get("path"):
        label += " path=" + rule["path"]
    return label


def render(config):
    """One line per rule: a unified diff of two renderings names every rule that changed."""
    lines = []
    for index, rule in enumerate(config.get("ingress", [])):
        line = f"ingress[{index}] {_rule_label(rule)} -> {rule.get('service')}"
        if rule.get("originRequest"):
            line += " originRequest=" + json.dumps(rule["originRequest"], sort_keys=True)
        lines.append(line)
    if config.get("originRequest"):
        lines.append("originRequest " + json.dumps(config["originRequest"], sort_keys=True))
    return "".join(line + "\n" for line in lines)


def describe_changes(before, after):
    old = {_rule_label(r): r for r in before.get("ingress", [])}
    new = {_rule_label(r): r for r in after.get("ingress", [])}
    changes = [f"added rule {label} -> {rule['service']}" for label, rule in new.items() if label not in old]
    changes += [f"removed rule {label}" for label in old if label not in new]
    for label, rule in new.items():
        prev = old.get(label)
        if prev is None or prev == rule:
            continue
        for key in sorted(set(prev) | set(rule)):
            if prev.get(key) != rule.get(key):
                changes.append(f"modified rule {label}: {key} {prev.get(key)} -> {rule.get(key)}")
    common_old = [label for label in old if label in new]
    common_new = [label for label in new if label in old]
    if common_old != common_new:
        changes.append("reordered rules: " + ", ".join(common_new))
    if before.get("originRequest") != after.get("originRequest"):
        changes.append(
            "originRequest {} -> {}".format(before.get("originRequest"), after.get("originRequest"))
        )
    return changes


def resolve_tunnel(module, client):
    tunnel_id = module.params["tunnel_id"]
    name = module.params["tunnel_name"]
    if tunnel_id:
        return tunnel_id
    if name:
        tunnels = client.find_tunnels(name)
        if len(tunnels) > 1:
            raise CloudflareAPIError(f"tunnel_name={name!r} matches {len(tunnels)} tunnels; use tunnel_id")
        if tunnels:
            return tunnels[0]["id"]
        if not module.check_mode:
            raise CloudflareAPIError(
                f"tunnel_name={name!r}: no such tunnel (create it with cloudflare_tunnel)"
            )
    elif not module.check_mode:
        module.fail_json(msg="one of tunnel_id or tunnel_name is required and must not be empty")
    return None


def run(module, client):
    try:
        desired = build_config(
            module.params["rules"], module.params["origin_request"], module.params["catch_all"]
        )
    except IngressError as exc:
        module.fail_json(msg=f"cloudflare_tunnel_ingress: {exc}")
    tunnel_id = resolve_tunnel(module, client)
    result = {"tunnel_id": tunnel_id, "config": desired, "changed": False}
    if tunnel_id is None:
        # Check mode, tunnel not created yet: everything would be written.
        module.warn("tunnel does not exist yet (check mode): reporting the configuration it would get")
        current, version = {}, None
    else:
        current_doc = client.request("get", client.tunnels_path(tunnel_id, "configurations")) or {}
        current = current_doc.get("config") or {}
        version = current_doc.get("version")
    before, after = comparable(current), comparable(desired)
    result["changes"] = describe_changes(before, after)
    result["version"] = version
    if before == after:
        return result
    result["changed"] = True
    result["diff"] = {
        "before": render(before),
        "after": render(after),
        "before_header": "tunnel %s configuration" % (tunnel_id or "(new)"),
        "after_header": "tunnel %s configuration" % (tunnel_id or "(new)"),
    }
    if module.check_mode:
        return result
    body = dict(desired)
    if "warp-routing" in current:
        body["warp-routing"] = current["warp-routing"]
    written = (
        client.request("put", client.tunnels_path(tunnel_id, "configurations"), body={"config": body}) or {}
    )
    result["version"] = written.get("version", version)
    return result


def main():
    origin_spec = origin_request_spec()
    module = AnsibleModule(
        argument_spec=cloudflare_argument_spec(
            tunnel_id={"type": "str"},
            tunnel_name={"type": "str"},
            rules={
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "hostname": {"type": "str"},
                    "path": {"type": "str"},
                    "service": {"type": "str", "required": True},
                    "origin_request": {"type": "dict", "options": origin_spec},
                },
            },
            origin_request={"type": "dict", "options": origin_spec},
            catch_all={"type": "str", "default": "http_status:404"},
        ),
        mutually_exclusive=[("tunnel_id", "tunnel_name")],
        supports_check_mode=True,
    )
    tunnel = module.params["tunnel_id"] or module.params["tunnel_name"]
    run_module(module, run, f"cloudflare_tunnel_ingress tunnel={tunnel}", {7003: "tunnel_id", 1001: "rules"})


if __name__ == "__main__":
    main()
