"""DNS record validation and conflict rules, as the live API applies them.

Since October 2024 the API answers the root cause directly (no `1004 DNS Validation Error` wrapper).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .envelope import CloudflareError

SUPPORTED_TYPES = {"A", "AAAA", "CNAME", "TXT", "MX", "NS"}
PROXIABLE = {"A", "AAAA", "CNAME"}
ADDRESS_TYPES = {"A", "AAAA", "CNAME"}
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _bad(code: int, message: str) -> CloudflareError:
    return CloudflareError(400, code, message)


def full_name(name: Any, zone_name: str) -> str:
    """The record name the API stores: lower case, no trailing dot, `@` = apex, zone appended if missing."""
    if not isinstance(name, str) or not name.strip():
        raise _bad(9000, "DNS name is invalid.")
    name = name.strip().lower().rstrip(".")
    if name in ("@", zone_name):
        return zone_name
    if not name.endswith("." + zone_name):
        name = f"{name}.{zone_name}"
    labels = name.split(".")
    wildcard_ok = labels[0] == "*"
    if len(name) > 253 or not all(_LABEL.match(lbl) for lbl in labels[1 if wildcard_ok else 0 :]):
        raise _bad(9000, "DNS name is invalid.")
    return name


def _hostname_content(value: str) -> bool:
    value = value.rstrip(".").lower()
    return 0 < len(value) <= 253 and all(_LABEL.match(lbl) for lbl in value.split("."))


def check_content(rtype: str, content: Any, name: str) -> str:
    if not isinstance(content, str) or not content:
        raise _bad(9005 if rtype in ("A", "AAAA") else 9007, f"Content for {rtype} record is invalid.")
    if rtype == "A":
        try:
            ipaddress.IPv4Address(content)
        except ValueError as exc:
            raise _bad(9005, "Content for A record must be a valid IPv4 address.") from exc
    elif rtype == "AAAA":
        try:
            ipaddress.IPv6Address(content)
        except ValueError as exc:
            raise _bad(9006, "Content for AAAA record must be a valid IPv6 address.") from exc
    elif rtype in ("CNAME", "MX", "NS"):
        if not _hostname_content(content):
            raise _bad(9007, f"Content for {rtype} record is invalid.")
        content = content.rstrip(".").lower()
        if rtype == "CNAME" and content == name:
            raise _bad(9039, "CNAME content cannot reference itself.")
    elif len(content) > 2048:
        raise _bad(9100, "Content for TXT record is too long.")
    return content


def check_ttl(ttl: Any) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
        raise _bad(9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.")
    return ttl


def normalise(body: dict[str, Any], zone_name: str) -> dict[str, Any]:
    """The stored fields of a record body (type, name, content, proxied, ttl, comment, tags, priority)."""
    rtype = body.get("type")
    if not isinstance(rtype, str) or rtype.upper() not in SUPPORTED_TYPES:
        raise _bad(9020, "Invalid DNS record type.")
    rtype = rtype.upper()
    name = full_name(body.get("name"), zone_name)
    content = check_content(rtype, body.get("content"), name)
    proxied = body.get("proxied", False)
    if not isinstance(proxied, bool):
        raise _bad(9003, "Invalid 'proxied' value, must be a boolean")
    if proxied and rtype not in PROXIABLE:
        raise _bad(9004, "This record type cannot be proxied.")
    ttl = 1 if proxied else check_ttl(body.get("ttl", 1))
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 100):
        raise _bad(9101, "DNS record comment must be a string of at most 100 characters.")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and ":" in t for t in tags):
        raise _bad(9102, "DNS record tags must be a list of name:value strings.")
    record = {"type": rtype, "name": name, "content": content, "proxied": proxied, "ttl": ttl}
    record |= {"comment": comment, "tags": tags, "settings": body.get("settings") or {}}
    if rtype == "MX":
        priority = body.get("priority")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 65535:
            raise _bad(9010, "MX records require a priority between 0 and 65535.")
        record["priority"] = priority
    return record


def refuse_conflicts(record: dict[str, Any], existing: list[dict[str, Any]]) -> None:
    """81058 for an identical record (the live API's answer since 2025; older answers said 81057 "Record
    already exists."), 81053/81054 when a CNAME would share its name with an address."""
    same_name = [r for r in existing if r["name"] == record["name"]]
    for other in same_name:
        if (other["type"], other["content"]) == (record["type"], record["content"]):
            raise _bad(81058, "An identical record already exists.")
    if record["type"] == "CNAME" and any(r["type"] in ADDRESS_TYPES for r in same_name):
        raise _bad(81053, "An A, AAAA, or CNAME record with that host already exists.")
    if record["type"] in ("A", "AAAA") and any(r["type"] == "CNAME" for r in same_name):
        raise _bad(81054, "A CNAME record with that host already exists.")
