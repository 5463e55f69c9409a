#!/usr/bin/python
# Manage the lifecycle of a Proxmox VE LXC container through proxmoxer: idempotent, check and diff mode.

DOCUMENTATION = r"""
module: proxmox_lxc
short_description: Create, configure, start, stop and remove Proxmox VE LXC containers
description:
  - Manages one LXC container on a Proxmox VE cluster through its HTTPS API (proxmoxer).
  - The container is found by O(vmid) or, when no vmid is given, by O(hostname) across the whole cluster.
  - On an existing container only the options you set are managed; the module reads the configuration,
    normalises both sides and sends only the keys that differ (with the configuration digest, so a
    concurrent change is refused rather than overwritten), deleting options you emptied.
  - Proxmox tasks are polled; a failed task fails the module at once with its exit status and the last
    lines of its log. A failed create leaves no container behind.
  - "Runs on the controller (C(delegate_to: localhost)); the target needs no Python."
version_added: "1.0.0"
author:
  - llm-relay maintainers
extends_documentation_fragment:
  - proxmox_auth
attributes:
  check_mode:
    support: full
    description: Reports exactly what would change and calls no write endpoint.
  diff_mode:
    support: full
    description: Before/after of the normalised configuration, limited to the keys that change.
options:
  state:
    description:
      - V(present) makes sure the container exists with the given configuration, leaving it running or not.
      - V(started) also starts it (and waits for its DHCP address, see O(timeout)).
      - V(stopped) shuts it down cleanly (forced after 30 s).
      - V(restarted) reboots a running container or starts a stopped one; always reports a change.
      - V(absent) stops it and destroys it with its volumes, purging it from backup/HA/replication jobs.
    type: str
    choices: [present, started, stopped, restarted, absent]
    default: started
  vmid:
    description:
      - The container's id. When given it identifies the container.
      - When omitted on create, the cluster's next free id is used (retried if another client takes it first).
      - If the vmid belongs to a container with another O(hostname), the module fails rather than take
        it over.
    type: int
  hostname:
    description:
      - Host name of the container. Without O(vmid) it identifies the container across the cluster;
        two containers with that name are an error.
      - Required to create a container.
    type: str
  node:
    description:
      - Node to create the container on. Required to create.
      - An existing container is managed where it is; if that is another node, a warning says so
        (this module does not migrate).
    type: str
  ostemplate:
    description:
      - Template to create from, as a volume id V(storage:vztmpl/file) or a bare file name found on
        O(template_storage). Required to create; ignored for an existing container.
    type: str
  template_storage:
    description:
      - Storage that holds templates given as bare file names, and where O(template_download) puts them.
    type: str
    default: local
  template_download:
    description:
      - When O(ostemplate) is not on the storage, download it through the node's appliance index (C(aplinfo)).
      - When false, a missing template fails with the list of templates the storage has.
    type: bool
    default: false
  disk:
    description:
      - Root filesystem. Applied at create only; a different storage or size on an existing container gives a
        warning (this module does not move or resize volumes).
      - Defaults to 8 GiB on the node's first storage that holds container volumes (C(local-lvm) preferred).
    type: dict
    suboptions:
      storage:
        description: Storage id for the root volume.
        type: str
      size_gb:
        description: Size in GiB.
        type: int
  netif:
    description:
      - Network interfaces; the list position is the interface index (first entry is C(net0)).
      - Defaults on create to one interface V(eth0) on V(vmbr0) with DHCP.
      - Interfaces beyond the list's length are removed from an existing container; a sub-option you drop
        is removed from the interface. The generated MAC address is kept unless you set O(netif[].hwaddr).
    type: list
    elements: dict
    suboptions:
      name:
        description: Interface name inside the container. Defaults to V(eth<index>).
        type: str
      bridge:
        description: Host bridge to attach to.
        type: str
        default: vmbr0
      ip:
        description: V(dhcp), V(manual) or an IPv4 address with prefix length, for example V(10.87.0.50/24).
        type: str
      gw:
        description: IPv4 gateway (with a static O(netif[].ip)).
        type: str
      ip6:
        description: V(auto), V(dhcp), V(manual) or an IPv6 address with prefix length.
        type: str
      gw6:
        description: IPv6 gateway.
        type: str
      vlan:
        description: VLAN tag (PVE's C(tag)), 1 to 4094.
        type: int
      firewall:
        description: Put the interface behind the PVE firewall.
        type: bool
      mtu:
        description: MTU, 64 to 65535.
        type: int
      rate:
        description: Rate limit in MB/s.
        type: float
      hwaddr:
        description: MAC address. Left to Proxmox (and kept) when not set.
        type: str
  features:
    description:
      - Enabled container features, from V(nesting), V(keyctl), V(fuse), V(mknod), V(force_rw_sys) and
        V(mount=fstype;fstype). An empty list removes all features.
      - Defaults on create to V([nesting]) for an unprivileged container, which systemd in Debian 12 needs.
    type: list
    elements: str
  ssh_public_keys:
    description:
      - Public keys (OpenSSH format) for root, installed at create. Proxmox cannot report them back, so they
        are not compared on an existing container.
    type: list
    elements: str
  password:
    description:
      - Root password set at create. Never logged. Like O(ssh_public_keys), not compared afterwards.
    type: str
  cores:
    description: Number of CPU cores. Default on create V(1).
    type: int
  memory_mb:
    description: Memory in MiB. Default on create V(512).
    type: int
  swap_mb:
    description: Swap in MiB. Default on create V(512).
    type: int
  unprivileged:
    description:
      - Run the container unprivileged. Set at create only (default V(true)); a different value on an
        existing container gives a warning.
    type: bool
  onboot:
    description: Start the container when its node boots.
    type: bool
  startup:
    description: Start/shutdown order and delays. An empty dict removes the setting.
    type: dict
    suboptions:
      order:
        description: Start order (shutdown runs in reverse).
        type: int
      up:
        description: Seconds to wait after starting this container before starting the next.
        type: int
      down:
        description: Seconds to wait for this container to shut down.
        type: int
  tags:
    description:
      - Tags. Compared as a set, so order and separators never cause a change. An empty list removes them.
    type: list
    elements: str
  description:
    description: Notes shown in the web interface. An empty string removes them.
    type: str
  nameserver:
    description: DNS servers. Without O(nameserver) and O(searchdomain) the host's settings are used.
    type: list
    elements: str
  searchdomain:
    description: DNS search domains.
    type: list
    elements: str
  timezone:
    description: Time zone, V(host) or a zone such as V(Europe/Paris). An empty string removes the setting.
    type: str
  pool:
    description: Resource pool to add the container to at create. A different pool later gives a warning.
    type: str
  restart_on_change:
    description:
      - When Proxmox keeps changes pending until the next start (for example features of a running container),
        reboot the container so they apply. Otherwise they are only reported in RV(pending).
    type: bool
    default: false
  timeout:
    description:
      - Seconds to wait for each Proxmox task (create, start, stop, delete, download) and, after a start,
        for the DHCP addresses of the container's interfaces.
      - Also how long to wait for the config lock of an existing container (held by a backup, snapshot,
        migration or another create) to be released before changing it; the module fails naming the lock
        if it is still held then.
    type: int
    default: 120
notes:
  - The hostname identifies the container; renaming is not done by this module.
  - Volumes are neither moved nor resized; password and SSH keys apply at create only.
seealso:
  - name: Proxmox VE API viewer
    description: The API this module calls.
    link: https://pve.proxmox.com/pve-docs/api-viewer/
"""

EXAMPLES = r"""
- name: Minimal container (Debian 12, 8 GiB, eth0 on vmbr0 with DHCP, 1 core, 512 MiB), started
  proxmox_lxc:
    api_host: pve1.example.com
    api_user: root@pam
    api_token_id: ansible
    api_token_secret: "{{ vault_pve_token_secret }}"
    ca_path: /etc/ssl/pve-root-ca.pem
    node: pve1
    hostname: relay1
    ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst
  delegate_to: localhost
  register: ct

- name: Use its address
  ansible.builtin.debug:
    msg: "relay1 is {{ ct.vmid }} at {{ ct.ip_addresses | first }}"

- name: Fully specified container, template fetched when missing
  proxmox_lxc:
    api_host: pve1.example.com
    api_user: root@pam
    api_password: "{{ vault_pve_password }}"
    node: pve1
    vmid: 120
    hostname: relay2
    ostemplate: debian-12-standard_12.7-1_amd64.tar.zst
    template_download: true
    disk: {storage: local-lvm, size_gb: 16}
    netif:
      - {name: eth0, bridge: vmbr0, ip: 192.168.1.20/24, gw: 192.168.1.1, firewall: true}
    features: [nesting, keyctl]
    ssh_public_keys: ["{{ lookup('file', '~/.ssh/id_ed25519.pub') }}"]
    cores: 2
    memory_mb: 1024
    swap_mb: 0
    onboot: true
    startup: {order: 2, up: 15}
    tags: [relay, llm]
    nameserver: [192.168.1.1]
    timezone: host
  delegate_to: localhost

- name: Grow memory and apply pending changes by rebooting
  proxmox_lxc:
    api_host: pve1.example.com
    api_user: root@pam
    api_token_id: ansible
    api_token_secret: "{{ vault_pve_token_secret }}"
    hostname: relay2
    memory_mb: 2048
    features: [nesting, keyctl, fuse]
    restart_on_change: true
  delegate_to: localhost

- name: Stop it
  proxmox_lxc:
    api_host: pve1.example.com
    api_user: root@pam
    api_token_id: ansible
    api_token_secret: "{{ vault_pve_token_secret }}"
    vmid: 120
    state: stopped
  delegate_to: localhost

- name: Remove it with its volumes
  proxmox_lxc:
    api_host: pve1.example.com
    api_user: root@pam
    api_token_id: ansible
    api_token_secret: "{{ vault_pve_token_secret }}"
    hostname: relay2
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
vmid:
  description: Id of the container (null in check mode when it would be created without a given vmid).
  returned: always
  type: int
  sample: 120
node:
  description: Node the container is on.
  returned: always
  type: str
  sample: pve1
hostname:
  description: Host name of the container.
  returned: always
  type: str
  sample: relay2
status:
  description: Run state after the module ran, V(running), V(stopped) or V(absent).
  returned: always
  type: str
  sample: running
config:
  description:
    - The container's configuration, normalised into this module's option names (empty when absent).
  returned: always
  type: dict
  sample:
    hostname: relay2
    cores: 2
    memory_mb: 1024
    swap_mb: 0
    unprivileged: true
    onboot: true
    startup: {order: 2, up: 15}
    tags: [llm, relay]
    features: [keyctl, nesting]
    disk: {storage: local-lvm, size_gb: 16, volume: "local-lvm:vm-120-disk-0"}
    netif:
      - {name: eth0, bridge: vmbr0, hwaddr: "BC:24:11:2F:3A:4B", ip: 192.168.1.20/24, gw: 192.168.1.1,
         firewall: true}
    nameserver: [192.168.1.1]
    searchdomain: []
    timezone: host
    description: ""
    ostype: debian
    arch: amd64
ip_addresses:
  description:
    - Addresses of the running container from Proxmox's interface list, IPv4 first, loopback and
      link-local left out. After a start the module waits up to O(timeout) for each DHCP interface to get one.
  returned: always
  type: list
  elements: str
  sample: [192.168.1.20]
pending:
  description: Option names whose change Proxmox applies only at the next start of the container.
  returned: always
  type: list
  elements: str
  sample: [features]
changed:
  description: Whether anything changed (or would, in check mode).
  returned: always
  type: bool
diff:
  description: Before/after of the normalised configuration, limited to the keys that change (plus C(status)).
  returned: always
  type: dict
  sample: {before: {memory_mb: 1024, tags: [relay]}, after: {memory_mb: 2048, tags: [llm, relay]}}
msg:
  description:
    - What was done, in a sentence; on failure it starts with the option at fault, such as C(netif[0].ip).
  returned: always
  type: str
  sample: "updated 120 (memory_mb, tags)"
api_status:
  description: HTTP status of the API's refusal.
  returned: when the API refused a call
  type: int
  sample: 400
api_errors:
  description: PVE's per-parameter error messages, keyed by PVE parameter name.
  returned: when the API refused a call
  type: dict
  sample: {net0: "invalid format - format error"}
upid:
  description: Id of the Proxmox task that failed.
  returned: when a Proxmox task failed
  type: str
  sample: "UPID:pve1:00001234:00005678:6B000000:vzcreate:120:root@pam!ansible:"
exitstatus:
  description: The failed task's exit status (V(timeout) when it outlived O(timeout)).
  returned: when a Proxmox task failed
  type: str
  sample: "unable to create CT 120 - no space left on device"
task_log:
  description: The last lines of the failed task's log.
  returned: when a Proxmox task failed
  type: list
  elements: str
lock:
  description: The config lock that was still held when the module gave up waiting (see O(timeout)).
  returned: when the container stayed locked
  type: str
  sample: backup
task_wait_s:
  description: Seconds the module spent waiting on the failed task before it noticed the failure.
  returned: when a Proxmox task failed
  type: float
  sample: 0.25
cleanup:
  description: What was done about the container a failed create left behind.
  returned: when a create task failed
  type: str
  sample: removed the half-made container
"""

import ipaddress
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.proxmox import (
    LXC_FEATURES,
    NETIF_UNMANAGED,
    PROXMOX_AUTH_MUTUALLY_EXCLUSIVE,
    PROXMOX_AUTH_REQUIRED_ONE_OF,
    PROXMOX_AUTH_REQUIRED_TOGETHER,
    ApiError,
    ProxmoxClient,
    ProxmoxError,
    TaskFailed,
    normalise_features,
    parse_bool,
    parse_features,
    parse_list,
    parse_netif,
    parse_rootfs,
    parse_startup,
    parse_tags,
    proxmox_auth_argument_spec,
    render_features,
    render_netif,
    render_rootfs_new,
    render_startup,
    render_tags,
)

CREATE_DEFAULTS = {"cores": 1, "memory_mb": 512, "swap_mb": 512, "unprivileged": True, "size_gb": 8}
DEFAULT_NETIF = [{"name": "eth0", "bridge": "vmbr0", "ip": "dhcp"}]
# Keys PVE only takes at create (or that this module does not move): a difference is a warning.
CREATE_ONLY = ("unprivileged", "disk", "pool")
# Options that map 1:1 onto a PVE config key.
SIMPLE_KEYS = {
    "cores": "cores",
    "memory_mb": "memory",
    "swap_mb": "swap",
    "onboot": "onboot",
    "description": "description",
    "timezone": "timezone",
    "hostname": "hostname",
}
# PVE parameter names in API errors → this module's option names.
API_PARAM_NAMES = {
    "memory": "memory_mb",
    "swap": "swap_mb",
    "rootfs": "disk",
    "storage": "disk.storage",
    "ssh-public-keys": "ssh_public_keys",
}
SHUTDOWN_GRACE = 30


class Failure(Exception):
    """Stops the run with fail_json(msg, **extra)."""

    def __init__(self, msg, **extra):
        super().__init__(msg)
        self.msg = msg
        self.extra = extra


# --------------------------------------------------------------------------------------------------
# Normalised configuration: PVE's config dict ↔ this module's option names


def normalise_config(raw):
    """PVE's GET config answer → the normalised form used for comparing, diffs and the `config` result."""
    cfg = {
        "hostname": raw.get("hostname"),
        "cores": int(raw["cores"]) if raw.get("cores") not in (None, "") else None,
        "memory_mb": int(raw.get("memory", 512)),
        "swap_mb": int(raw.get("swap", 512)),
        "onboot": parse_bool(raw.get("onboot", 0)),
        "unprivileged": parse_bool(raw.get("unprivileged", 0)),
        "startup": parse_startup(raw.get("startup")),
        "tags": parse_tags(raw.get("tags")),
        "description": str(raw.get("description") or "").rstrip("\n"),
        "nameserver": parse_list(raw.get("nameserver")),
        "searchdomain": parse_list(raw.get("searchdomain")),
        "timezone": raw.get("timezone") or "",
        "features": parse_features(raw.get("features")),
        "disk": parse_rootfs(raw["rootfs"]) if raw.get("rootfs") else {},
        "netif": [],
        "ostype": raw.get("ostype"),
        "arch": raw.get("arch", "amd64"),
    }
    indexes = sorted(int(k[3:]) for k in raw if re.fullmatch(r"net\d+", k))
    if indexes:
        cfg["netif"] = [None] * (indexes[-1] + 1)
        for i in indexes:
            cfg["netif"][i] = parse_netif(raw[f"net{i}"])
    return cfg


def public_config(cfg):
    """The normalised config as returned to the user (no internal '_extra' bookkeeping)."""
    out = dict(cfg)
    out["netif"] = [
        {k: v for k, v in n.items() if k != "_extra"} if n else None for n in cfg.get("netif", [])
    ]
    return out


def validate_netif(netif):
    """Check the structured interfaces before any API call; return them with defaults filled in."""
    out = []
    for i, entry in enumerate(netif):
        item = {k: v for k, v in entry.items() if v is not None}
        item.setdefault("name", f"eth{i}")
        item.setdefault("bridge", "vmbr0")
        where = f"netif[{i}]"
        for key in ("name", "bridge"):
            if not re.fullmatch(r"[-_.\w]+", item[key]):
                raise Failure(f"{where}.{key}: {item[key]!r} is not a valid interface/bridge name")
        _check_ip(where, item, "ip", 4, ("dhcp", "manual"))
        _check_ip(where, item, "ip6", 6, ("auto", "dhcp", "manual"))
        for key, version in (("gw", 4), ("gw6", 6)):
            if key in item:
                try:
                    if ipaddress.ip_address(item[key]).version != version:
                        raise ValueError
                except ValueError:
                    raise Failure(f"{where}.{key}: {item[key]!r} is not an IPv{version} address") from None
        if "vlan" in item and not 1 <= item["vlan"] <= 4094:
            raise Failure(f"{where}.vlan: {item['vlan']} is not between 1 and 4094")
        if "mtu" in item and not 64 <= item["mtu"] <= 65535:
            raise Failure(f"{where}.mtu: {item['mtu']} is not between 64 and 65535")
        if "rate" in item:
            if item["rate"] < 0:
                raise Failure(f"{where}.rate: must not be negative")
            item["rate"] = int(item["rate"]) if item["rate"] == int(item["rate"]) else item["rate"]
        if "hwaddr" in item:
            if not re.fullmatch(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", item["hwaddr"]):
                raise Failure(f"{where}.hwaddr: {item['hwaddr']!r} is not a MAC address XX:XX:XX:XX:XX:XX")
            item["hwaddr"] = item["hwaddr"].upper()
        if item.get("firewall") is False:
            del item["firewall"]
        out.append(item)
    names = [n["name"] for n in out]
    if len(set(names)) != len(names):
        raise Failure(f"netif: interface names must be unique, got {names}")
    return out


def _check_ip(where, item, key, version, keywords):
    value = item.get(key)
    if value is None or value in keywords:
        return
    try:
        if "/" not in value or ipaddress.ip_interface(value).version != version:
            raise ValueError
    except ValueError:
        raise Failure(
            f"{where}.{key}: {value!r} is not {', '.join(keywords)} or an IPv{version} address/prefix"
        ) from None


def desired_config(params, creating):
    """The options the user set, normalised like normalise_config; on create, defaults fill the gaps."""
    want = {}
    for key in (
        "hostname",
        "cores",
        "memory_mb",
        "swap_mb",
        "onboot",
        "unprivileged",
        "description",
        "timezone",
    ):
        if params.get(key) is not None:
            want[key] = params[key]
    if "description" in want:
        want["description"] = want["description"].rstrip("\n")
    if params.get("startup") is not None:
        want["startup"] = {k: v for k, v in params["startup"].items() if v is not None}
    for key, parser in (("tags", parse_tags), ("nameserver", parse_list), ("searchdomain", parse_list)):
        if params.get(key) is not None:
            want[key] = parser(params[key])
    if params.get("features") is not None:
        unknown = [f for f in params["features"] if f.partition("=")[0] not in (*LXC_FEATURES, "mount")]
        if unknown:
            raise Failure(
                f"features: unknown {unknown}; known: {', '.join((*LXC_FEATURES, 'mount=fstype;...'))}"
            )
        want["features"] = normalise_features(params["features"])
    if params.get("netif") is not None:
        want["netif"] = validate_netif(params["netif"])
    if params.get("disk") is not None:
        want["disk"] = {k: v for k, v in params["disk"].items() if v is not None}
    if params.get("pool") is not None:
        want["pool"] = params["pool"]
    if creating:
        for key in ("cores", "memory_mb", "swap_mb", "unprivileged"):
            want.setdefault(key, CREATE_DEFAULTS[key])
        want.setdefault("netif", [dict(n) for n in DEFAULT_NETIF])
        want.setdefault("features", ["nesting"] if want["unprivileged"] else [])
        want.setdefault("disk", {})
        want["disk"].setdefault("size_gb", CREATE_DEFAULTS["size_gb"])
    return want


def _comparable_netif(current, wanted):
    """The current interface as the user would write it: unmanaged sub-keys and a generated MAC left out."""
    if current is None:
        return None
    out = {k: v for k, v in current.items() if k != "_extra"}
    if "hwaddr" not in wanted:
        out.pop("hwaddr", None)
    return out


def compare(current, want):
    """→ (changes, create_only), each {key: (before, after)}, over the keys the user manages."""
    changes, create_only = {}, {}
    for key, after in want.items():
        if key == "netif":
            before = [
                _comparable_netif(current["netif"][i] if i < len(current["netif"]) else None, w)
                for i, w in enumerate(after)
            ]
            before += [_comparable_netif(n, {}) for n in current["netif"][len(after) :] if n is not None]
            if before != after:
                changes[key] = (before, after)
        elif key == "disk":
            before = {k: current["disk"].get(k) for k in after}
            if before != after:
                create_only[key] = (before, after)
        elif key in CREATE_ONLY:
            if current.get(key) != after:
                create_only[key] = (current.get(key), after)
        elif current.get(key) != after:
            changes[key] = (current.get(key), after)
    return changes, create_only


def update_params(current, changes):
    """Changed keys → (PUT parameters in PVE's names, list of PVE keys to delete)."""
    put, delete = {}, []
    for key, (_before, after) in changes.items():
        if key in SIMPLE_KEYS:
            api_key = SIMPLE_KEYS[key]
            if after in ("", None):
                delete.append(api_key)
            else:
                put[api_key] = int(after) if isinstance(after, bool) else after
        elif key == "netif":
            for i, wanted in enumerate(after):
                existing = current["netif"][i] if i < len(current["netif"]) else None
                merged = dict(wanted)
                if existing:
                    # Keep what the user does not manage: the generated MAC, sub-keys we have no option for.
                    if "hwaddr" not in merged and existing.get("hwaddr"):
                        merged["hwaddr"] = existing["hwaddr"]
                    extra = {k: v for k, v in (existing.get("_extra") or {}).items() if k in NETIF_UNMANAGED}
                    if extra:
                        merged["_extra"] = extra
                if existing is None or _comparable_netif(existing, wanted) != wanted:
                    put[f"net{i}"] = render_netif(merged)
            delete += [f"net{i}" for i in range(len(after), len(current["netif"])) if current["netif"][i]]
        elif key == "tags":
            _put_or_delete(put, delete, "tags", render_tags(after))
        elif key == "features":
            _put_or_delete(put, delete, "features", render_features(after))
        elif key == "startup":
            _put_or_delete(put, delete, "startup", render_startup(after))
        elif key in ("nameserver", "searchdomain"):
            _put_or_delete(put, delete, key, " ".join(after))
    return put, delete


def _put_or_delete(put, delete, key, value):
    if value:
        put[key] = value
    else:
        delete.append(key)


def create_params(want, vmid, node, ostemplate, params):
    """POST /nodes/{node}/lxc parameters for a new container."""
    data = {
        "vmid": vmid,
        "ostemplate": ostemplate,
        "hostname": want["hostname"],
        "cores": want["cores"],
        "memory": want["memory_mb"],
        "swap": want["swap_mb"],
        "unprivileged": int(want["unprivileged"]),
        "rootfs": render_rootfs_new(want["disk"]["storage"], want["disk"]["size_gb"]),
    }
    for i, netif in enumerate(want["netif"]):
        data[f"net{i}"] = render_netif(netif)
    optional = {
        "onboot": int(want["onboot"]) if "onboot" in want else None,
        "startup": render_startup(want.get("startup")) or None,
        "tags": render_tags(want.get("tags") or []) or None,
        "features": render_features(want["features"]) or None,
        "description": want.get("description") or None,
        "nameserver": " ".join(want.get("nameserver") or []) or None,
        "searchdomain": " ".join(want.get("searchdomain") or []) or None,
        "timezone": want.get("timezone") or None,
        "pool": want.get("pool"),
        "password": params.get("password"),
        "ssh-public-keys": "\n".join(params["ssh_public_keys"]) if params.get("ssh_public_keys") else None,
    }
    data.update({k: v for k, v in optional.items() if v is not None})
    return data


def predicted_config(current, want):
    """What the normalised config will be after an update (check mode's `config`)."""
    out = dict(current)
    for key, value in want.items():
        if key not in CREATE_ONLY:
            out[key] = value
    return out


def api_param_name(api_key):
    match = re.fullmatch(r"net(\d+)", api_key)
    if match:
        return f"netif[{match.group(1)}]"
    return API_PARAM_NAMES.get(api_key, api_key)


def api_failure(exc, action):
    """An ApiError as a Failure that names the module option(s) PVE complained about."""
    params = [api_param_name(k) for k in sorted(exc.errors)] if exc.errors else []
    prefix = f"{', '.join(params)}: " if params else ""
    return Failure(f"{prefix}{action} refused: {exc.msg}", api_status=exc.status, api_errors=exc.errors)


# --------------------------------------------------------------------------------------------------
# The run


class LxcRun:
    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.params = module.params
        self.check = module.check_mode
        self.timeout = self.params["timeout"]
        self.changed = False
        self.actions = []
        self.pending = []
        self.diff_before, self.diff_after = {}, {}

    # -- lookups -----------------------------------------------------------------------------------
    def find(self):
        """The container's /cluster/resources entry (by vmid, else hostname) or None."""
        vmid, hostname = self.params["vmid"], self.params["hostname"]
        resources = self.client.get("cluster/resources", type="vm") or []
        if vmid is not None:
            for res in resources:
                if int(res.get("vmid", -1)) == vmid:
                    if res.get("type") != "lxc":
                        raise Failure(
                            f"vmid: {vmid} is a {res.get('type')} guest on {res.get('node')}, not a container"
                        )
                    if hostname and res.get("name") not in (None, hostname):
                        raise Failure(
                            f"vmid: VM {vmid} already exists as container {res.get('name')!r}"
                            f" on {res.get('node')};"
                            f" refusing to take it over as {hostname!r} (choose another vmid, or omit it)"
                        )
                    return res
            return None
        matches = [r for r in resources if r.get("type") == "lxc" and r.get("name") == hostname]
        if len(matches) > 1:
            found = ", ".join(f"{r['vmid']} on {r.get('node')}" for r in matches)
            raise Failure(f"hostname: {len(matches)} containers are named {hostname!r} ({found}); set vmid")
        return matches[0] if matches else None

    def read_config(self, node, vmid):
        raw = self.client.get(f"nodes/{node}/lxc/{vmid}/config")
        return raw, normalise_config(raw)

    def wait_unlocked(self, node, vmid, lock):
        """Wait until the container's config lock is released: PVE refuses config changes on a locked
        container and fails its power and destroy tasks, and the locks users meet (a nightly backup, a
        snapshot, a migration, a create still running) end by themselves."""
        if self.check:
            self.module.warn(f"container {vmid} is locked ({lock}); a real run waits up to {self.timeout}s")
            return
        started = time.monotonic()
        try:
            while lock:
                if time.monotonic() - started > self.timeout:
                    raise Failure(
                        f"vmid: container {vmid} on {node} is still locked ({lock}) after {self.timeout}s:"
                        " a backup, snapshot, migration or create holds it; run again when it ends (or, if"
                        f" the lock is stale, `pct unlock {vmid}` on {node})",
                        lock=lock,
                    )
                time.sleep(1)
                try:
                    lock = self.client.get(f"nodes/{node}/lxc/{vmid}/config").get("lock")
                except ApiError:
                    if self.find() is not None:
                        raise
                    lock = None  # the lock was its removal: the caller finds it gone
        finally:
            self.client.wait_seconds += time.monotonic() - started
        self.actions.append(f"waited {time.monotonic() - started:.0f}s for the lock of {vmid} to be released")

    def task(self, upid, what):
        for warning in self.client.wait_task(upid, self.timeout, what):
            self.module.warn(warning)

    # -- create ------------------------------------------------------------------------------------
    def resolve_node(self):
        node = self.params["node"]
        if not node:
            raise Failure("node: required to create a container (none with this vmid/hostname exists)")
        nodes = [n.get("node") for n in self.client.get("nodes") or []]
        if node not in nodes:
            raise Failure(f"node: {node!r} is not a node of this cluster (nodes: {', '.join(sorted(nodes))})")
        return node

    def resolve_template(self, node):
        """The template's volume id on its storage, downloading it through aplinfo when allowed."""
        ostemplate = self.params["ostemplate"]
        if not ostemplate:
            raise Failure("ostemplate: required to create a container")
        if ":" in ostemplate:
            storage, _, path = ostemplate.partition(":")
            name = path.rpartition("/")[2]
        else:
            storage, name = self.params["template_storage"], ostemplate
        volid = f"{storage}:vztmpl/{name}"
        try:
            content = self.client.get(f"nodes/{node}/storage/{storage}/content", content="vztmpl") or []
        except ApiError as exc:
            raise Failure(
                f"ostemplate: cannot list templates on storage {storage!r} of {node}: {exc.msg}"
            ) from None
        have = sorted(c.get("volid") for c in content if c.get("volid"))
        if volid in have:
            return volid
        if not self.params["template_download"]:
            listing = ", ".join(have) or "no templates"
            raise Failure(
                f"ostemplate: {volid} is not on storage {storage!r} of {node} (it has: {listing});"
                " set template_download: true to fetch it from the appliance index"
            )
        index = self.client.get(f"nodes/{node}/aplinfo") or []
        if not any(a.get("template") == name for a in index):
            offer = ", ".join(sorted(a.get("template") for a in index if "debian" in str(a.get("template"))))
            raise Failure(
                f"ostemplate: {name!r} is not in {node}'s appliance index (Debian ones: {offer or 'none'})"
            )
        self.actions.append(f"downloaded {name}")
        if not self.check:
            upid = self.client.call("POST", f"nodes/{node}/aplinfo", storage=storage, template=name)
            self.task(upid, f"download of {name}")
        return volid

    def default_storage(self, node):
        """First enabled storage of the node that holds container volumes (local-lvm/local-zfs preferred)."""
        try:
            stores = self.client.get(f"nodes/{node}/storage", content="rootdir", enabled=1) or []
        except ApiError:
            return "local"
        names = [s.get("storage") for s in stores if s.get("active", 1)]
        for preferred in ("local-lvm", "local-zfs"):
            if preferred in names:
                return preferred
        if not names:
            raise Failure(
                f"disk.storage: node {node} has no enabled storage for container volumes; set disk.storage"
            )
        return names[0]

    def create(self):
        params = self.params
        if not params["hostname"]:
            raise Failure("hostname: required to create a container")
        want = desired_config(params, creating=True)
        node = self.resolve_node()
        ostemplate = self.resolve_template(node)
        if not want["disk"].get("storage"):
            want["disk"]["storage"] = self.default_storage(node)
        self.changed = True
        self.diff_after = {k: v for k, v in want.items() if k != "pool"}
        if self.check:
            self.actions.append("would create")
            return node, params["vmid"], want
        vmid = params["vmid"]
        for attempt in range(5):
            if params["vmid"] is None:
                vmid = int(self.client.get("cluster/nextid"))
            data = create_params(want, vmid, node, ostemplate, params)
            try:
                upid = self.client.call("POST", f"nodes/{node}/lxc", **data)
                break
            except ApiError as exc:
                taken = "already exists" in str(exc.errors.get("vmid", ""))
                if taken and params["vmid"] is None and attempt < 4:
                    continue  # another client took the id nextid gave us: ask again
                raise api_failure(exc, "create") from None
        try:
            self.task(upid, f"create of {vmid}")
        except TaskFailed as exc:
            cleanup = self.remove_failed(node, vmid)
            raise Failure(exc.msg, vmid=vmid, node=node, cleanup=cleanup, **task_details(exc)) from None
        self.actions.append(f"created {vmid} on {node}")
        return node, vmid, None

    def remove_failed(self, node, vmid):
        """A failed create must leave nothing: destroy whatever the task left behind."""
        try:
            self.client.get(f"nodes/{node}/lxc/{vmid}/status/current")
        except ApiError:
            return "nothing left to remove"
        try:
            upid = self.client.call(
                "DELETE", f"nodes/{node}/lxc/{vmid}", purge=1, force=1, **{"destroy-unreferenced-disks": 1}
            )
            self.client.wait_task(upid, self.timeout, f"removal of failed {vmid}")
            return "removed the half-made container"
        except ProxmoxError as exc:
            return f"could not remove the half-made container {vmid}: {exc.msg}"

    # -- update ------------------------------------------------------------------------------------
    def update(self, res, raw, current):
        node, vmid = res["node"], int(res["vmid"])
        want = desired_config(self.params, creating=False)
        want.pop("hostname", None)  # identity, never "changed"
        if "pool" in want:
            current = dict(current, pool=res.get("pool"))
        changes, create_only = compare(current, want)
        for key, (before, after) in create_only.items():
            self.module.warn(
                f"{key}: the container has {before!r}, you asked for {after!r}; {key} is set only when a"
                " container"
                " is created (this module does not change it on an existing one)"
            )
        if not changes:
            return current
        self.changed = True
        self.diff_before.update({k: b for k, (b, _a) in changes.items()})
        self.diff_after.update({k: a for k, (_b, a) in changes.items()})
        self.actions.append(f"{'would update' if self.check else 'updated'} {vmid} ({', '.join(changes)})")
        if self.check:
            return predicted_config(current, want)
        put, delete = update_params(current, changes)
        if delete:
            put["delete"] = ",".join(delete)
        try:
            self.client.call("PUT", f"nodes/{node}/lxc/{vmid}/config", digest=raw.get("digest"), **put)
        except ApiError as exc:
            raise api_failure(exc, "update") from None
        return None

    def read_pending(self, node, vmid):
        try:
            items = self.client.get(f"nodes/{node}/lxc/{vmid}/pending") or []
            keys = [i.get("key", "") for i in items if "pending" in i or i.get("delete")]
        except ApiError as exc:
            if exc.status not in (404, 501):
                raise
            # Servers without /pending: the config with pending values against the running one.
            with_pending = self.client.get(f"nodes/{node}/lxc/{vmid}/config")
            running = self.client.get(f"nodes/{node}/lxc/{vmid}/config", current=1)
            keys = [
                k
                for k in set(with_pending) | set(running)
                if k != "digest" and with_pending.get(k) != running.get(k)
            ]
        names = []
        for key in sorted(keys):
            if key:
                name = api_param_name(key)
                name = {v: k for k, v in SIMPLE_KEYS.items()}.get(key, name)
                if name not in names:
                    names.append(name)
        return names

    # -- run state ---------------------------------------------------------------------------------
    def power(self, node, vmid, action, what):
        self.changed = True
        self.actions.append(("would " if self.check else "") + what)
        if self.check:
            return
        path = f"nodes/{node}/lxc/{vmid}/status/{action}"
        extra = {"forceStop": 1, "timeout": SHUTDOWN_GRACE} if action == "shutdown" else {}
        try:
            upid = self.client.call("POST", path, **extra)
        except ApiError as exc:
            raise api_failure(exc, action) from None
        self.task(upid, f"{action} of {vmid}")

    def wait_for_addresses(self, node, vmid, netifs):
        """Addresses from /interfaces; waits up to timeout until each interface with an ip has an IPv4."""
        expected = {n["name"] for n in netifs if n and n.get("ip") and n.get("ip") != "manual"}
        started = time.monotonic()
        try:
            while True:
                addresses, v4_on = interface_addresses(
                    self.client.get(f"nodes/{node}/lxc/{vmid}/interfaces") or []
                )
                missing = expected - v4_on
                if not missing or self.check:
                    return addresses
                if time.monotonic() - started > self.timeout:
                    self.module.warn(f"no IPv4 address on {', '.join(sorted(missing))} after {self.timeout}s")
                    return addresses
                time.sleep(0.5)
        finally:
            self.client.wait_seconds += time.monotonic() - started

    def run(self):
        params = self.params
        state = params["state"]
        res = self.find()
        if state == "absent":
            return self.absent(res)
        if res is None:
            node, vmid, predicted = self.create()
            status = "stopped"
        else:
            node, vmid = res["node"], int(res["vmid"])
            if params["node"] and params["node"] != node:
                self.module.warn(
                    f"node: container {vmid} is on {node}, not {params['node']}; it is managed there"
                )
            raw, current = self.read_config(node, vmid)
            if raw.get("lock"):
                self.wait_unlocked(node, vmid, raw["lock"])
                if not self.check:  # what held the lock may have changed the container: read it again
                    res = self.find()
                    if res is None:
                        raise Failure(
                            f"vmid: container {vmid} was removed while its lock was awaited; run again"
                        )
                    raw, current = self.read_config(node, vmid)
            predicted = self.update(res, raw, current)
            status = res.get("status", "stopped")
        was = status
        if state == "started" and status != "running":
            self.power(node, vmid, "start", f"started {vmid or params['hostname']}")
            status = "running"
        elif state == "stopped" and status == "running":
            self.power(node, vmid, "shutdown", f"stopped {vmid}")
            status = "stopped"
        elif state == "restarted":
            action = "reboot" if status == "running" else "start"
            self.power(node, vmid, action, f"restarted {vmid}")
            status = "running"
        if status == "running" and was == "running" and vmid is not None and not self.check:
            self.pending = self.read_pending(node, vmid)
            if self.pending and params["restart_on_change"] and state != "restarted":
                self.power(node, vmid, "reboot", f"rebooted {vmid} to apply {', '.join(self.pending)}")
                self.pending = self.read_pending(node, vmid)
        if was != status:
            self.diff_before["status"] = was if res is not None else "absent"
            self.diff_after["status"] = status
        if self.check and predicted is not None:
            config = predicted
        else:
            config = self.read_config(node, vmid)[1] if vmid is not None else {}
        addresses = []
        if status == "running" and vmid is not None and state in ("started", "restarted", "present"):
            wait_on = config.get("netif", []) if state != "present" else []
            addresses = self.wait_for_addresses(node, vmid, wait_on) if not self.check or res else []
        return self.result(
            vmid, node, config.get("hostname") or params["hostname"], status, config, addresses
        )

    def absent(self, res):
        if res is None:
            self.actions.append(
                f"no container {self.params['vmid'] or self.params['hostname']}: nothing to remove"
            )
            return self.result(
                self.params["vmid"], self.params["node"], self.params["hostname"], "absent", {}, []
            )
        node, vmid = res["node"], int(res["vmid"])
        raw, current = self.read_config(node, vmid)
        if raw.get("lock"):
            self.wait_unlocked(node, vmid, raw["lock"])
            if not self.check:
                res = self.find()
                if res is None:  # what held the lock was its removal
                    return self.absent(None)
                raw, current = self.read_config(node, vmid)
        self.changed = True
        self.diff_before = dict(public_config(current), status=res.get("status"))
        self.diff_after = {"status": "absent"}
        self.actions.append(f"{'would remove' if self.check else 'removed'} {vmid} from {node}")
        if not self.check:
            if res.get("status") == "running":
                upid = self.client.call("POST", f"nodes/{node}/lxc/{vmid}/status/stop")
                self.task(upid, f"stop of {vmid}")
            try:
                upid = self.client.call(
                    "DELETE", f"nodes/{node}/lxc/{vmid}", purge=1, **{"destroy-unreferenced-disks": 1}
                )
            except ApiError as exc:
                raise api_failure(exc, "delete") from None
            self.task(upid, f"removal of {vmid}")
        return self.result(vmid, node, current.get("hostname"), "absent", {}, [])

    def result(self, vmid, node, hostname, status, config, addresses):
        msg = "; ".join(self.actions) if self.actions else f"{vmid or hostname} is as wanted"
        if self.pending:
            msg += f"; pending until next start: {', '.join(self.pending)} (restart_on_change applies them)"
        return dict(
            changed=self.changed,
            vmid=vmid,
            node=node,
            hostname=hostname,
            status=status,
            config=public_config(config) if config else {},
            ip_addresses=addresses,
            pending=self.pending,
            diff=dict(before=self.diff_before, after=_public_diff(self.diff_after)),
            msg=msg,
        )


def _public_diff(values):
    if "netif" in values:
        values = dict(values, netif=public_config({"netif": values["netif"]})["netif"])
    return values


def task_details(exc):
    """What a failed task adds to the failure result: its id, exit status and last log lines."""
    return {
        "upid": exc.upid,
        "exitstatus": exc.exitstatus,
        "task_log": exc.log_lines,
        "task_wait_s": exc.waited,
    }


def interface_addresses(interfaces):
    """→ (addresses IPv4 first without loopback/link-local, names of interfaces that have an IPv4)."""
    v4, v6, v4_on = [], [], set()
    for iface in interfaces:
        name = iface.get("name")
        if name == "lo":
            continue
        found = [a.get("ip-address") for a in iface.get("ip-addresses") or [] if a.get("ip-address")]
        for key in ("inet", "inet6"):
            if iface.get(key):
                found.append(str(iface[key]).split("/")[0])
        for text in found:
            try:
                addr = ipaddress.ip_address(text.split("/")[0])
            except ValueError:
                continue
            if addr.is_loopback or addr.is_link_local:
                continue
            target = v4 if addr.version == 4 else v6
            if str(addr) not in target:
                target.append(str(addr))
            if addr.version == 4:
                v4_on.add(name)
    return v4 + v6, v4_on


def argument_spec():
    spec = proxmox_auth_argument_spec()
    spec.update(
        state=dict(
            type="str", default="started", choices=["present", "started", "stopped", "restarted", "absent"]
        ),
        vmid=dict(type="int"),
        hostname=dict(type="str"),
        node=dict(type="str"),
        ostemplate=dict(type="str"),
        template_storage=dict(type="str", default="local"),
        template_download=dict(type="bool", default=False),
        disk=dict(type="dict", options=dict(storage=dict(type="str"), size_gb=dict(type="int"))),
        netif=dict(
            type="list",
            elements="dict",
            options=dict(
                name=dict(type="str"),
                bridge=dict(type="str", default="vmbr0"),
                ip=dict(type="str"),
                gw=dict(type="str"),
                ip6=dict(type="str"),
                gw6=dict(type="str"),
                vlan=dict(type="int"),
                firewall=dict(type="bool"),
                mtu=dict(type="int"),
                rate=dict(type="float"),
                hwaddr=dict(type="str"),
            ),
        ),
        features=dict(type="list", elements="str"),
        ssh_public_keys=dict(type="list", elements="str", no_log=False),
        password=dict(type="str", no_log=True),
        cores=dict(type="int"),
        memory_mb=dict(type="int"),
        swap_mb=dict(type="int"),
        unprivileged=dict(type="bool"),
        onboot=dict(type="bool"),
        startup=dict(
            type="dict", options=dict(order=dict(type="int"), up=dict(type="int"), down=dict(type="int"))
        ),
        tags=dict(type="list", elements="str"),
        description=dict(type="str"),
        nameserver=dict(type="list", elements="str"),
        searchdomain=dict(type="list", elements="str"),
        timezone=dict(type="str"),
        pool=dict(type="str"),
        restart_on_change=dict(type="bool", default=False),
        timeout=dict(type="int", default=120),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[("vmid", "hostname"), *PROXMOX_AUTH_REQUIRED_ONE_OF],
        required_together=PROXMOX_AUTH_REQUIRED_TOGETHER,
        mutually_exclusive=PROXMOX_AUTH_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    try:
        client = ProxmoxClient(module.params)
        result = LxcRun(module, client).run()
    except Failure as exc:
        module.fail_json(msg=exc.msg, **exc.extra)
    except TaskFailed as exc:
        module.fail_json(msg=exc.msg, **task_details(exc))
    except ProxmoxError as exc:
        module.fail_json(msg=exc.msg, api_status=exc.status, api_errors=exc.errors)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
