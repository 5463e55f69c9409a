#!/usr/bin/python
"""Ansible module: one DNS record of a Cloudflare zone, by name (and type)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloudflare_dns_record
short_description: Manage one DNS record of a Cloudflare zone, including a tunnel's proxied CNAME
description:
  - Ensures one record named O(name) of type O(type) in O(zone) has the given content and settings, or
    that no such record exists.
  - O(tunnel_id) is the short way to route a hostname to a Cloudflare Tunnel; it means O(type=CNAME),
    O(content=<tunnel_id>.cfargotunnel.com) and O(proxied=true) unless O(proxied) says otherwise.
  - A record of the same name and type with other content is an error unless O(overwrite=true), so a
    typo cannot silently re-point a hostname.
  - Records of another type are never touched. Cloudflare refuses a CNAME next to an A/AAAA/CNAME of the
    same name (error 81053); the module reports that code and message as they come.
version_added: "1.0.0"
author:
  - llm-relay maintainers (@llm-relay)
extends_documentation_fragment:
  - llm_relay.homelab.cloudflare_auth
options:
  zone:
    description:
      - Zone name (C(example.com)) or zone id (32 hex characters).
    type: str
    required: true
  name:
    description:
      - Record name. A name outside the zone is taken as relative to it (C(relay) means
        C(relay.example.com)), C(@) is the zone apex. With O(zone) given by id, give the full name.
    type: str
    required: true
  type:
    description:
      - Record type. Defaults to V(CNAME) when O(tunnel_id) is set.
      - With O(state=absent) and no O(type), records of every type with that name are removed.
    type: str
    choices: [A, AAAA, CNAME, TXT]
  content:
    description:
      - Record content (address, target hostname or text). Required with O(state=present) unless
        O(tunnel_id) is given (in check mode both may be empty, when an earlier task would create the
        tunnel; the record is then reported as to be created).
      - With O(state=absent), only a record with this content is removed.
    type: str
  tunnel_id:
    description:
      - Route O(name) to this Cloudflare Tunnel (RV(llm_relay.homelab.cloudflare_tunnel#module:tunnel_id)).
    type: str
  proxied:
    description:
      - Whether Cloudflare proxies the traffic (orange cloud). Defaults to V(true) with O(tunnel_id)
        (a tunnel CNAME only works proxied), V(false) otherwise.
    type: bool
  ttl:
    description:
      - TTL in seconds; V(1) means automatic. Proxied records are always automatic.
      - The API enforces the range (60 to 86400 on most plans) and its error is reported as is.
    type: int
    default: 1
  comment:
    description:
      - Record comment. Unset leaves the current comment alone; V("") clears it.
    type: str
  overwrite:
    description:
      - Replace the content of an existing record of the same name and type instead of failing.
    type: bool
    default: false
  state:
    description: Whether the record exists.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
    description: Reads only; reports what would be created, updated or deleted.
  diff_mode:
    support: full
    description: Before/after of the record's managed fields.
seealso:
  - module: llm_relay.homelab.cloudflare_tunnel
"""

EXAMPLES = r"""
- name: relay.example.com routes to the relay tunnel
  llm_relay.homelab.cloudflare_dns_record:
    zone: example.com
    name: relay.example.com
    tunnel_id: "{{ relay_tunnel.tunnel_id }}"
    comment: managed by ansible (llm-relay)

- name: A record, not proxied, 5 minutes
  llm_relay.homelab.cloudflare_dns_record:
    zone: example.com
    name: home
    type: A
    content: 198.51.100.7
    ttl: 300

- name: Re-point an existing CNAME on purpose
  llm_relay.homelab.cloudflare_dns_record:
    zone: example.com
    name: relay.example.com
    tunnel_id: "{{ new_tunnel.tunnel_id }}"
    overwrite: true

- name: The tunnel's hostname is gone
  llm_relay.homelab.cloudflare_dns_record:
    zone: example.com
    name: relay.example.com
    type: CNAME
    state: absent
"""

RETURN = r"""
zone_id:
  description: Id of the zone.
  returned: always
  type: str
  sample: 023e105f4ecef8ad9ca31a8372d0c353
record:
  description: The record after the run (as it would be, in check mode); empty when absent.
  returned: always
  type: dict
  contains:
    id:
      description: Record id (null when it would be created in check mode).
      type: str
    name:
      description: Fully qualified name.
      type: str
    type:
      description: Record type.
      type: str
    content:
      description: Record content.
      type: str
    proxied:
      description: Whether Cloudflare proxies it.
      type: bool
    ttl:
      description: TTL, 1 = automatic.
      type: int
    comment:
      description: Comment, if any.
      type: str
  sample:
    id: 372e67954025e0ba6aaa6d586b9e0b59
    name: relay.example.com
    type: CNAME
    content: 4f0d8a4b-1c2e-4f3a-9b8c-7d6e5f4a3b2c.cfargotunnel.com
    proxied: true
    ttl: 1
    comment: managed by ansible
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llm_relay.homelab.plugins.module_utils.cloudflare import (
    CloudflareAPIError,
    cloudflare_argument_spec,
    run_module,
)

FIELDS = ("name", "type", "content", "proxied", "ttl", "comment")


def fqdn(name, zone_name):
    name = name.rstrip(".").lower()
    if zone_name is None:
        return name
    if name == "@":
        return zone_name
    if name == zone_name or name.endswith("." + zone_name):
        return name
    return f"{name}.{zone_name}"


def view(record):
    if not record:
        return {}
    out = {"id": record.get("id")}
    out.update({k: record.get(k) for k in FIELDS})
    return out


def desired_record(params, name):
    record_type = params["type"] or ("CNAME" if params["tunnel_id"] else None)
    content = params["content"]
    proxied = params["proxied"]
    if params["tunnel_id"]:
        content = params["tunnel_id"].lower() + ".cfargotunnel.com"
        proxied = True if proxied is None else proxied
    want = {"name": name, "type": record_type, "content": content, "proxied": bool(proxied)}
    # Cloudflare stores proxied records with the automatic TTL whatever is sent.
    want["ttl"] = 1 if want["proxied"] else params["ttl"]
    if params["comment"] is not None:
        want["comment"] = params["comment"]
    return want


def same_content(record_type, a, b):
    if record_type == "CNAME":
        return (a or "").rstrip(".").lower() == (b or "").rstrip(".").lower()
    if record_type == "TXT":
        return (a or "").strip('"') == (b or "").strip('"')
    return (a or "").lower() == (b or "").lower()


def differences(current, want):
    diffs = {}
    for key, value in want.items():
        if key == "content":
            if not same_content(want["type"], current.get("content"), value):
                diffs[key] = value
        elif key == "comment":
            if (current.get("comment") or "") != value:
                diffs[key] = value
        elif key != "name" and current.get(key) != value:
            diffs[key] = value
    return diffs


def present(module, client, zone_id, name, records):
    params = module.params
    want = desired_record(params, name)
    if not want["content"] and module.check_mode and params["type"] in (None, "CNAME"):
        # Check mode of a first run: the tunnel this record points to is only created for real.
        module.warn("no content or tunnel_id yet (check mode): reporting that a record would be created")
        return {"changed": True, "zone_id": zone_id, "record": dict(want, id=None)}
    if not want["type"] or not want["content"]:
        module.fail_json(msg="state=present needs type and content, or tunnel_id")
    same_type = [r for r in records if r.get("type") == want["type"]]
    match = [r for r in same_type if same_content(want["type"], r.get("content"), want["content"])]
    current = match[0] if match else None
    if current is None and same_type:
        if not params["overwrite"]:
            raise CloudflareAPIError(
                f"name={name} already has a {want['type']} record with content "
                f"{same_type[0].get('content')!r} (wanted {want['content']!r}); "
                "set overwrite=true to replace it"
            )
        if len(same_type) > 1:
            raise CloudflareAPIError(
                f"name={name} has {len(same_type)} {want['type']} records; "
                "overwrite=true cannot choose which one to replace"
            )
        current = same_type[0]
    records_path = f"/zones/{zone_id}/dns_records"
    result = {"changed": False, "zone_id": zone_id}
    if current is None:
        result["changed"] = True
        result["diff"] = {"before": {}, "after": dict(want, state="present")}
        record = dict(want, id=None)
        if not module.check_mode:
            record = client.request("post", records_path, body=want)
        result["record"] = view(record)
        return result
    diffs = differences(current, want)
    result["record"] = view(current)
    if not diffs:
        return result
    result["changed"] = True
    before = view(current)
    after = dict(before, **diffs)
    result["diff"] = {"before": before, "after": after}
    result["record"] = after
    if not module.check_mode:
        # PUT sends the whole record: SDK v5 and the API require ttl on every update.
        body = {k: after.get(k) for k in FIELDS if after.get(k) is not None or k == "comment"}
        if body.get("comment") is None:
            body.pop("comment")
        result["record"] = view(client.request("put", f"{records_path}/{current['id']}", body=body))
    return result


def absent(module, client, zone_id, records):
    params = module.params
    record_type = params["type"] or ("CNAME" if params["tunnel_id"] else None)
    content = params["content"]
    if params["tunnel_id"]:
        content = params["tunnel_id"].lower() + ".cfargotunnel.com"
    doomed = [
        r
        for r in records
        if (record_type is None or r.get("type") == record_type)
        and (content is None or same_content(r.get("type"), r.get("content"), content))
    ]
    result = {"changed": bool(doomed), "zone_id": zone_id, "record": {}}
    if doomed:
        result["diff"] = {"before": {"records": [view(r) for r in doomed]}, "after": {"records": []}}
    if not module.check_mode:
        for record in doomed:
            client.request("delete", f"/zones/{zone_id}/dns_records/{record['id']}")
    return result


def run(module, client):
    zone_id, zone_name = client.resolve_zone(module.params["zone"])
    name = fqdn(module.params["name"], zone_name)
    records = client.list_all(f"/zones/{zone_id}/dns_records", params={"name": name})
    records = [r for r in records if (r.get("name") or "").lower() == name]
    if module.params["state"] == "absent":
        return absent(module, client, zone_id, records)
    return present(module, client, zone_id, name, records)


def main():
    module = AnsibleModule(
        argument_spec=cloudflare_argument_spec(
            zone={"type": "str", "required": True},
            name={"type": "str", "required": True},
            type={"type": "str", "choices": ["A", "AAAA", "CNAME", "TXT"]},
            content={"type": "str"},
            tunnel_id={"type": "str"},
            proxied={"type": "bool"},
            ttl={"type": "int", "default": 1},
            comment={"type": "str"},
            overwrite={"type": "bool", "default": False},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        ),
        mutually_exclusive=[("content", "tunnel_id")],
        supports_check_mode=True,
    )
    if module.params["tunnel_id"] and module.params["type"] not in (None, "CNAME"):
        module.fail_json(msg=f"tunnel_id makes a CNAME record; type={module.params['type']} contradicts it")
    hints = {7003: "zone", 9000: "name", 81053: "name (another record already uses it)"}
    params = module.params
    run_module(module, run, f"cloudflare_dns_record zone={params['zone']} name={params['name']}", hints)


if __name__ == "__main__":
    main()
