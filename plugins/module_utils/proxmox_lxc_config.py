# The container-config model of proxmox_lxc: PVE's config dict <-> the module's option names, the
# desired config from the options, the comparison, and the parameters of the create and update calls.
# No API access: proxmox_lxc_run.py drives the client (proxmox.py) with what this computes.

from __future__ import annotations

import ipaddress
import re

from ansible_collections.llm_relay.homelab.plugins.module_utils.proxmox_propstr import (
    LXC_FEATURES,
    NETIF_UNMANAGED,
    normalise_features,
    parse_bool,
    parse_features,
    parse_list,
    parse_netif,
    parse_rootfs,
    parse_startup,
    parse_tags,
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


class Failure(Exception):
    """Stops the run with fail_json(msg, **extra)."""

    def __init__(self, msg, **extra):
        super().__init__(msg)
        self.msg = msg
        self.extra = extra


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
