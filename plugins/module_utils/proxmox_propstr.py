# PVE property strings ("name=eth0,bridge=vmbr0,ip=dhcp", "local:9100/vm-9100-disk-0.raw,size=8G", ...):
# parsing and rendering, generic and for the LXC keys (net[n], rootfs, features, startup, tags).
# Pure functions, no API access: the client lives in proxmox.py.

from __future__ import annotations

import re

# --------------------------------------------------------------------------------------------------
# Property strings: "name=eth0,bridge=vmbr0,ip=dhcp", "local:9100/vm-9100-disk-0.raw,size=8G",
# "nesting=1,keyctl=1", "order=1,up=30".  PVE splits on commas; a value may be double-quoted
# when it holds a comma. A part without "=" is the value of the format's default key.

_TRUE = {"1", "on", "yes", "true"}
_FALSE = {"0", "off", "no", "false"}


def _split_parts(text):
    parts, buf, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            buf.append(ch)
        elif ch == "," and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted:
        raise ValueError(f"unterminated quote in {text!r}")
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


def _unquote(value):
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def parse_propstr(text, default_key=None):
    """Parse a PVE property string into an ordered dict of str values."""
    out = {}
    if text is None:
        return out
    for part in _split_parts(str(text)):
        key, sep, value = part.partition("=")
        if not sep:
            if default_key is None:
                raise ValueError(f"{part!r} in {text!r} has no key and this format has no default key")
            key, value = default_key, part
        key = key.strip()
        if key in out:
            raise ValueError(f"duplicate key {key!r} in {text!r}")
        out[key] = _unquote(value.strip())
    return out


def _render_value(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    text = str(value)
    if "," in text or '"' in text:
        return '"' + text.replace('"', '\\"') + '"'
    return text


def render_propstr(values, default_key=None, order=()):
    """Render a dict as a PVE property string: default key first (bare), then `order`, then the rest sorted.

    None values are left out; booleans become 1/0.
    """
    items = {k: v for k, v in values.items() if v is not None}
    parts = []
    if default_key is not None and default_key in items:
        parts.append(_render_value(items.pop(default_key)))
    for key in list(order) + sorted(k for k in items if k not in order):
        if key in items:
            parts.append(f"{key}={_render_value(items[key])}")
    return ",".join(parts)


def parse_bool(value):
    """PVE booleans come as 1/0, on/off, yes/no, true/false (and as JSON ints)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean")


_SIZE_UNITS = {"": 1.0, "K": 1 / (1024 * 1024), "M": 1 / 1024, "G": 1.0, "T": 1024.0}


def parse_size_gib(value):
    """'8G', '8', '512M', '1T' → size in GiB (int when whole, else float rounded to 3 places)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(value), re.IGNORECASE)
    if not match:
        raise ValueError(f"{value!r} is not a disk size")
    gib = float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    return int(gib) if gib == int(gib) else round(gib, 3)


def parse_tags(value):
    """PVE tag lists take ';', ',' and spaces as separators and are stored sorted → sorted unique list."""
    if value is None:
        return []
    items = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    tags = set()
    for item in items:
        tags.update(t for t in re.split(r"[;,\s]+", item) if t)
    return sorted(tags)


def render_tags(tags):
    return ";".join(parse_tags(tags))


def parse_list(value):
    """Space/comma separated lists (nameserver, searchdomain) → list, order kept, duplicates dropped."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        for part in re.split(r"[,\s]+", str(item)):
            if part and part not in out:
                out.append(part)
    return out


# --------------------------------------------------------------------------------------------------
# LXC property strings in their structured (module option) form

# Our option name -> PVE net[n] sub-key (only `vlan` is renamed: PVE calls it `tag`).
NETIF_KEYS = {
    "name": "name",
    "bridge": "bridge",
    "hwaddr": "hwaddr",
    "ip": "ip",
    "gw": "gw",
    "ip6": "ip6",
    "gw6": "gw6",
    "vlan": "tag",
    "firewall": "firewall",
    "mtu": "mtu",
    "rate": "rate",
}
_NETIF_API_ORDER = ("name", "bridge", "hwaddr", "ip", "gw", "ip6", "gw6", "tag", "firewall", "mtu", "rate")
# Sub-keys PVE keeps that our options do not manage; carried over untouched on update.
NETIF_UNMANAGED = ("type", "trunks", "link_down", "host-managed")
LXC_FEATURES = ("force_rw_sys", "fuse", "keyctl", "mknod", "nesting")


def _number(value):
    number = float(value)
    return int(number) if number == int(number) else number


def parse_netif(text):
    """'name=eth0,bridge=vmbr0,hwaddr=..,ip=dhcp,type=veth' → {'name': 'eth0', 'bridge': 'vmbr0', ...}.

    Booleans that are off and the default type=veth are dropped so equal configs compare equal.
    Unmanaged sub-keys are returned under '_extra'.
    """
    raw = parse_propstr(text)
    out, extra = {}, {}
    api_to_opt = {v: k for k, v in NETIF_KEYS.items()}
    for key, value in raw.items():
        if key in api_to_opt:
            opt = api_to_opt[key]
            if opt == "firewall":
                if parse_bool(value):
                    out[opt] = True
            elif opt in ("vlan", "mtu"):
                out[opt] = int(value)
            elif opt == "rate":
                out[opt] = _number(value)
            elif opt == "hwaddr":
                out[opt] = value.upper()
            else:
                out[opt] = value
        elif key == "type" and value == "veth":
            continue
        else:
            extra[key] = value
    if extra:
        out["_extra"] = extra
    return out


def render_netif(netif):
    """Structured netif (with optional '_extra') → PVE net[n] property string."""
    values = {}
    for opt, key in NETIF_KEYS.items():
        value = netif.get(opt)
        if value is None or (opt == "firewall" and not value):
            continue
        values[key] = value
    values.update(netif.get("_extra") or {})
    return render_propstr(values, order=_NETIF_API_ORDER)


def parse_rootfs(text):
    """'local:9100/vm-9100-disk-0.raw,size=8G' (or 'local-lvm:8') → {'storage', 'size_gb', 'volume'}."""
    raw = parse_propstr(text, default_key="volume")
    volume = raw.get("volume", "")
    storage, _sep, rest = volume.partition(":")
    out = {"storage": storage or None, "volume": volume}
    if raw.get("size"):
        out["size_gb"] = parse_size_gib(raw["size"])
    elif re.fullmatch(r"\d+(\.\d+)?", rest or ""):
        out["size_gb"] = _number(rest)  # STORAGE:SIZE_IN_GiB allocation syntax
    return out


def render_rootfs_new(storage, size_gb):
    """The allocation syntax PVE takes on create: a new volume of size_gb GiB on storage."""
    return f"{storage}:{size_gb}"


def parse_features(text):
    """'nesting=1,keyctl=1,mount=nfs;cifs' → ['keyctl', 'mount=cifs;nfs', 'nesting'] (enabled, sorted)."""
    out = []
    for key, value in parse_propstr(text).items():
        if key == "mount":
            fstypes = sorted(t for t in re.split(r"[;\s]+", value) if t)
            if fstypes:
                out.append("mount=" + ";".join(fstypes))
        elif parse_bool(value):
            out.append(key)
    return sorted(out)


def normalise_features(items):
    """Module option form (list of names, 'mount=a;b') → the same sorted form parse_features gives."""
    return parse_features(",".join(item if "=" in item else f"{item}=1" for item in items or []))


def render_features(items):
    values = {}
    for item in normalise_features(items):
        key, _sep, value = item.partition("=")
        values[key] = value if key == "mount" else True
    return render_propstr(values)


def parse_startup(text):
    """'order=1,up=30,down=60' (or a bare '1') → {'order': 1, 'up': 30, 'down': 60}."""
    return {k: int(v) for k, v in parse_propstr(text, default_key="order").items()}


def render_startup(values):
    return render_propstr(
        {k: v for k, v in (values or {}).items() if v is not None}, order=("order", "up", "down")
    )
