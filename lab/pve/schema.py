"""The PVE API schema (apidata.json, a copy of ../shared/api-schemas/proxmox-ve-api.json so the lab
works from a clean clone; apidata_access.json adds the access-control paths) and a validator that
accepts exactly what PVE::JSONSchema accepts.

Errors are collected per parameter as PVE does: {"net0": "invalid format - ...", "foo": "property is
not defined in schema and the schema does not allow additional properties"}.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from lab.pve import formats

APIDATA = Path(__file__).with_name("apidata.json")
# The access-control paths (users, tokens, roles, ACLs), absent from the shared schema copy.
APIDATA_ACCESS = Path(__file__).with_name("apidata_access.json")
# Read-only endpoints third-party clients call (storage config, cluster status, the qemu list), written
# from PVE's source; also absent from the shared copy.
APIDATA_EXTRA = Path(__file__).with_name("apidata_extra.json")
UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"
MISSING = "property is missing and it is not optional"
_INDEXED = re.compile(r"^([a-z]+)(\d+)$")
# Highest index PVE allows for each `name[n]` family.
MAX_INDEX = {"net": 31, "mp": 255, "unused": 255, "dev": 255}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ParamError(Exception):
    """HTTP 400 "Parameter verification failed." carrying {param: message}."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("Parameter verification failed.")
        self.errors = errors


@functools.cache
def paths() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for source in (APIDATA, APIDATA_ACCESS, APIDATA_EXTRA):
        out.update(json.loads(source.read_text())["paths"])
    return out


@functools.cache
def _routes() -> list[tuple[re.Pattern[str], str]]:
    out = []
    for template in paths():
        rx = re.sub(r"\\\{([a-z]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        out.append((re.compile(f"^{rx}$"), template))
    return out


def match(path: str) -> tuple[str, dict[str, str]] | None:
    """Find the schema path for a request path; returns (template, path params)."""
    path = path.rstrip("/") or "/"
    for rx, template in _routes():
        m = rx.match(path)
        if m:
            return template, m.groupdict()
    return None


def method_info(template: str, method: str) -> dict[str, Any] | None:
    return paths()[template]["info"].get(method)


def returns(template: str, method: str) -> dict[str, Any]:
    return paths()[template]["info"][method]["returns"]


def _pattern(raw: str) -> re.Pattern[str]:
    # Perl stringifies qr// as (?^:...); PVE anchors every pattern.
    return re.compile("^(?:" + raw.replace("(?^:", "(?:") + ")$")


def _prop_for(props: dict[str, Any], name: str) -> dict[str, Any] | None:
    if name in props:
        return props[name]
    m = _INDEXED.match(name)
    if m and f"{m[1]}[n]" in props and int(m[2]) <= MAX_INDEX.get(m[1], 255):
        return props[f"{m[1]}[n]"]
    return None


def validate(template: str, method: str, params: dict[str, str]) -> dict[str, Any]:
    """Check request parameters against the schema; returns them typed (int/bool/float/str)."""
    info = method_info(template, method) or {}
    spec = info.get("parameters", {})
    props = spec.get("properties", {})
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, raw in params.items():
        prop = _prop_for(props, name)
        if prop is None:
            if not spec.get("additionalProperties"):
                errors[name] = UNKNOWN
            continue
        try:
            out[name] = check_value(name, prop, raw)
        except ValueError as exc:
            errors[name] = str(exc)
    for name, prop in props.items():
        if not prop.get("optional") and "[n]" not in name and name not in params:
            errors.setdefault(name, MISSING)
        req = prop.get("requires")
        if req and name in params and req not in params:
            errors.setdefault(req, f"parameter '{req}' is required by '{name}'")  # PVE: "requires" check
    if errors:
        raise ParamError(errors)
    return out


def check_value(name: str, prop: dict[str, Any], raw: Any) -> Any:
    """Validate one value against its schema; raise ValueError(PVE message); return it typed."""
    kind = prop.get("type", "string")
    value = str(raw) if not isinstance(raw, bool) else ("1" if raw else "0")
    if kind == "boolean":
        low = value.lower()
        if low not in _TRUE | _FALSE:
            raise ValueError(f"type check ('boolean') failed - got '{value}'")
        return low in _TRUE
    if kind == "integer":
        if not re.fullmatch(r"[+-]?\d+", value):
            raise ValueError(f"type check ('integer') failed - got '{value}'")
        number: float = int(value)
    elif kind == "number":
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"type check ('number') failed - got '{value}'") from None
    else:
        number = 0
    if kind in ("integer", "number"):
        if "minimum" in prop and number < prop["minimum"]:
            raise ValueError(f"value must have a minimum value of {prop['minimum']}")
        if "maximum" in prop and number > prop["maximum"]:
            raise ValueError(f"value must have a maximum value of {prop['maximum']}")
        return number
    if "maxLength" in prop and len(value) > prop["maxLength"]:
        raise ValueError(f"value may only be {prop['maxLength']} characters long")
    if "minLength" in prop and len(value) < prop["minLength"]:
        raise ValueError(f"value must be at least {prop['minLength']} characters long")
    if "enum" in prop and value not in prop["enum"]:
        raise ValueError(
            f"value '{value}' does not have a value in the enumeration '{', '.join(prop['enum'])}'"
        )
    if "pattern" in prop and not _pattern(prop["pattern"]).match(value):
        raise ValueError("value does not match the regex pattern")
    fmt = prop.get("format")
    if isinstance(fmt, dict):
        parse_property_string(name, fmt, value)
    elif isinstance(fmt, str):
        msg = formats.check(fmt, value)
        if msg:
            raise ValueError(msg)
    return value


def parse_property_string(name: str, fmt: dict[str, Any], value: str) -> dict[str, Any]:
    """Parse `key=value,...` (bare value = the default_key) and check every sub-key like PVE."""
    default_key = next((k for k, p in fmt.items() if p.get("default_key")), None)
    result: dict[str, Any] = {}
    problems: list[str] = []
    for part in value.split(","):
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep:
            if default_key is None or default_key in result:
                raise ValueError(
                    "invalid format - value without key, but schema does not define a default key"
                )
            key, val = default_key, part
        if key in result:
            raise ValueError(f"invalid format - duplicate key in comma-separated list property: {key}")
        sub = fmt.get(key)
        if sub is None:
            problems.append(f"{name}.{key}: {UNKNOWN}")
            continue
        try:
            result[key] = check_value(f"{name}.{key}", sub, val)
        except ValueError as exc:
            problems.append(f"{name}.{key}: {exc}")
    for key, sub in fmt.items():
        if not sub.get("optional") and key not in result and f"{name}.{key}:" not in " ".join(problems):
            problems.append(f"{name}.{key}: {MISSING}")
    if problems:
        raise ValueError("invalid format - format error\n" + "\n".join(problems) + "\n")
    return result


def property_string(template: str, method: str, name: str, value: str) -> dict[str, Any]:
    """Parse an already-validated property-string parameter into a typed dict."""
    props = method_info(template, method)["parameters"]["properties"]  # type: ignore[index]
    prop = _prop_for(props, name)
    return parse_property_string(name, prop["format"], value)  # type: ignore[index]
