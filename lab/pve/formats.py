"""PVE's named string formats (`format: "pve-vmid"` etc.), checked the way PVE::JSONSchema does.

Each checker returns None when the value is valid, else PVE's message for it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

_DNS_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?"
_DNS_NAME = re.compile(rf"^({_DNS_LABEL}\.)*{_DNS_LABEL}$")
_NODE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
_CONFIGID = re.compile(r"^[a-z][a-z0-9_-]+$")
_STORAGE_ID = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$")
_TAG = re.compile(r"^(?i:[a-z0-9_][a-z0-9_\-+.]*)$")
_MAC = re.compile(r"^(?i:[a-f0-9][02468ace](?::[a-f0-9]{2}){5})$")
_DISK_SIZE = re.compile(r"^\d+(\.\d+)?[KMGT]?$")
_STARTUP = re.compile(r"^(order=)?\d+$|^(up|down)=\d+$")
_POOL = re.compile(r"^[A-Za-z0-9_\-]+$")
_REALM = re.compile(r"^[A-Za-z][A-Za-z0-9.\-_]+$")
_TZ = re.compile(r"^[A-Za-z0-9/_+\-]+$")
_VOLID = re.compile(r"^(?i:([a-z][a-z0-9\-_.]*[a-z0-9])):(.+)$")
STORAGE_CONTENT = {"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"}
TASK_STATUS = {"ok", "error", "warning", "unknown"}
_LIST_SPLIT = re.compile(r"[;,\s]+")
_USERID = re.compile(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$")
_TOKENID = re.compile(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+$")
_ROLEID = re.compile(r"^[A-Za-z0-9.\-_]+$")
_EMAIL = re.compile(r"^[\w+\-~]+(\.[\w+\-~]+)*@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*$")


def _split(value: str) -> list[str]:
    return [v for v in _LIST_SPLIT.split(value) if v]


def _ip(version: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            return ipaddress.ip_address(value).version == version
        except ValueError:
            return False

    return check


def _cidr(version: int, value: str) -> bool:
    if "/" not in value:
        return False
    try:
        return ipaddress.ip_interface(value).version == version
    except ValueError:
        return False


def _ip_with_iface(value: str) -> bool:
    addr = value.split("%", 1)[0]
    return _ip(4)(addr) or _ip(6)(addr)


def _mp_string(value: str) -> bool:
    # PVE refuses path components "." and ".." (verify_lxc_mp_string) and NUL bytes.
    return "\0" not in value and not re.search(r"(?:^|/)\.\.?(?:/|$)", value)


def _startup(value: str) -> bool:
    return all(_STARTUP.match(part) for part in value.split(","))


FORMATS: dict[str, tuple[Callable[[str], bool], str]] = {
    "dns-name": (lambda v: bool(_DNS_NAME.match(v)), "value does not look like a valid DNS name"),
    "dns-name-list": (
        lambda v: all(_DNS_NAME.match(x) for x in _split(v)),
        "value does not look like a valid DNS name",
    ),
    "ipv4": (_ip(4), "value does not look like a valid IPv4 address"),
    "ipv6": (_ip(6), "value does not look like a valid IPv6 address"),
    "lxc-ip-with-ll-iface-list": (
        lambda v: all(_ip_with_iface(x) for x in _split(v)),
        "value does not look like a valid IP address",
    ),
    "mac-addr": (lambda v: bool(_MAC.match(v)), "value does not look like a valid unicast MAC address"),
    "pve-configid": (lambda v: bool(_CONFIGID.match(v)), "invalid configuration ID"),
    "pve-configid-list": (
        lambda v: all(_CONFIGID.match(x) for x in _split(v)),
        "invalid configuration ID",
    ),
    "pve-ct-timezone": (lambda v: bool(_TZ.match(v)), "invalid time zone"),
    "pve-ipv4-config": (
        lambda v: v in ("dhcp", "manual") or _cidr(4, v),
        "value does not look like a valid IPv4 network configuration",
    ),
    "pve-ipv6-config": (
        lambda v: v in ("dhcp", "auto", "manual") or _cidr(6, v),
        "value does not look like a valid IPv6 network configuration",
    ),
    "pve-lxc-dev-string": (lambda v: v.startswith("/dev/") and _mp_string(v), "not a valid device path"),
    "pve-lxc-mp-string": (_mp_string, "directory name must not contain '.' or '..' components"),
    "pve-node": (lambda v: bool(_NODE.match(v)), "value does not look like a valid node name"),
    "pve-poolid": (lambda v: bool(_POOL.match(v)), "pool name contains illegal characters"),
    "pve-realm": (lambda v: bool(_REALM.match(v)), "value does not look like a valid realm"),
    "pve-startup-order": (_startup, "value does not look like a valid startup order"),
    "pve-storage-content": (lambda v: v in STORAGE_CONTENT, "invalid content type"),
    "pve-storage-content-list": (
        lambda v: all(x in STORAGE_CONTENT for x in _split(v)),
        "invalid content type",
    ),
    "pve-storage-id": (lambda v: bool(_STORAGE_ID.match(v)), "storage ID contains illegal characters"),
    "pve-tag-list": (lambda v: bool(_split(v)) and all(_TAG.match(x) for x in _split(v)), "invalid tag"),
    "pve-task-status-type-list": (lambda v: all(x in TASK_STATUS for x in _split(v)), "invalid status"),
    "pve-vmid": (lambda v: v.isdigit(), "value does not look like a valid VM ID"),
    "pve-volume-id": (lambda v: bool(_VOLID.match(v)), "unable to parse volume ID"),
    "pve-userid": (
        lambda v: bool(_USERID.match(v)) and len(v) <= 64,
        "value does not look like a valid user name",
    ),
    "pve-userid-list": (
        lambda v: all(_USERID.match(x) for x in _split(v)),
        "value does not look like a valid user name",
    ),
    "pve-tokenid-list": (
        lambda v: all(_TOKENID.match(x) for x in _split(v)),
        "value does not look like a valid token ID",
    ),
    "pve-roleid": (lambda v: bool(_ROLEID.match(v)), "role name contains invalid characters"),
    "pve-roleid-list": (
        lambda v: all(_ROLEID.match(x) for x in _split(v)),
        "role name contains invalid characters",
    ),
    "pve-groupid-list": (
        lambda v: all(_ROLEID.match(x) for x in _split(v)),
        "group name contains invalid characters",
    ),
    "email-opt": (lambda v: not v or bool(_EMAIL.match(v)), "value does not look like a valid email address"),
    "disk-size": (lambda v: bool(_DISK_SIZE.match(v)), "unable to parse size"),
}


def check(fmt: str, value: str) -> str | None:
    """PVE's error text if `value` breaks named format `fmt`; unknown formats pass (PVE does the same)."""
    if fmt == "pve-priv-list":  # AccessControl.pm verify_privname names the first unknown privilege
        from lab.pve.privileges import VALID_PRIVS

        bad = next((p for p in _split(value) if p not in VALID_PRIVS), None)
        return f"invalid format - invalid privilege '{bad}'" if bad else None
    entry = FORMATS.get(fmt)
    if entry is None or entry[0](value):
        return None
    return f"invalid format - {entry[1]}"


def split_list(value: str) -> list[str]:
    return _split(value)
