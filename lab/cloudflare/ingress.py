"""Remote tunnel configuration checks, as cloudflared applies them to ingress rules.

The messages are cloudflared's own wording where it has one, so a module that surfaces the API's message
shows users the text they would find in cloudflared's documentation and issues.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .envelope import CloudflareError

CONFIG_ERROR_CODE = 1055
SOCKET_SCHEMES = ("unix:", "unix+tls:")
KEYWORD_SERVICES = {"hello_world", "bastion", "socks-proxy"}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
# originRequest settings and their JSON types (cloudflared decodes them into typed fields, so a wrong type
# is refused; unknown keys are ignored as Go's JSON decoder does).
ORIGIN_REQUEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "access": dict,
    "caPool": str,
    "connectTimeout": int,
    "disableChunkedEncoding": bool,
    "http2Origin": bool,
    "httpHostHeader": str,
    "keepAliveConnections": int,
    "keepAliveTimeout": int,
    "noHappyEyeballs": bool,
    "noTLSVerify": bool,
    "originServerName": str,
    "proxyType": str,
    "tcpKeepAlive": int,
    "tlsTimeout": int,
    "matchSNItoHost": bool,
}


def _invalid(message: str) -> CloudflareError:
    return CloudflareError(400, CONFIG_ERROR_CODE, message)


def valid_hostname(name: str) -> bool:
    if not name or len(name) > 253 or name.endswith("."):
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def check_hostname(index: int, hostname: str) -> None:
    if ":" in hostname:
        raise _invalid("Hostname cannot contain a port")
    if "*" in hostname:
        if hostname.count("*") > 1 or not (hostname == "*" or hostname.startswith("*.")):
            raise _invalid(
                'Hostname patterns can have at most one wildcard character ("*") and it can only be used for '
                'subdomains, e.g. "*.example.com"'
            )
        hostname = hostname.removeprefix("*.") if hostname != "*" else "wildcard.invalid"
    if not valid_hostname(hostname):
        raise _invalid(f"Rule #{index} has an invalid hostname {hostname!r}")


def check_service(index: int, service: Any) -> None:
    if not isinstance(service, str) or not service:
        raise _invalid(f"Rule #{index} has no service; every ingress rule needs one")
    if service in KEYWORD_SERVICES or service.startswith(SOCKET_SCHEMES):
        if service.startswith(SOCKET_SCHEMES) and not service.split(":", 1)[1]:
            raise _invalid(f"{service} is an invalid address, a unix socket path is required")
        return
    if service.startswith("http_status:"):
        # cloudflared ingress/ingress.go: strconv.Atoi, then 100 <= code <= 999.
        code = service.removeprefix("http_status:")
        if not re.fullmatch(r"[+-]?\d+", code):
            raise _invalid(f'invalid HTTP status code: strconv.Atoi: parsing "{code}": invalid syntax')
        if not 100 <= int(code) <= 999:
            raise _invalid(f"invalid HTTP status code: {int(code)}")
        return
    parts = urlsplit(service)
    # Any scheme: cloudflared only requires one, and a hostname (its origin types decide what they serve).
    if not parts.scheme or not parts.hostname:
        raise _invalid(f"{service} is an invalid address, please make sure it has a scheme and a hostname")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise _invalid(f"{service} is an invalid address, its port is not a number in 1-65535") from exc
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _invalid(
            f"{service} is an invalid address, ingress rules don't support proxying to a different path on "
            "the origin service. The path will be the same as the eyeball request's path"
        )


def check_origin_request(where: str, settings: Any) -> None:
    if not isinstance(settings, dict):
        raise _invalid(f"{where}: originRequest must be an object")
    for key, value in settings.items():
        expected = ORIGIN_REQUEST_TYPES.get(key)
        if expected is None:
            continue
        wrong_bool = expected is int and isinstance(value, bool)
        if wrong_bool or not isinstance(value, expected):
            name = getattr(expected, "__name__", "value")
            raise _invalid(f"{where}: originRequest.{key} must be of type {name}")


def check_rule(index: int, rule: Any, last: bool) -> None:
    if not isinstance(rule, dict):
        raise _invalid(f"Rule #{index} must be an object")
    hostname, path = rule.get("hostname", ""), rule.get("path", "")
    if not isinstance(hostname, str) or not isinstance(path, str):
        raise _invalid(f"Rule #{index}: hostname and path must be strings")
    if path:
        try:
            re.compile(path)
        except re.error as exc:
            raise _invalid(f"Rule #{index} has an invalid path regular expression: {exc}") from exc
    catch_all = hostname in ("", "*") and not path
    if last and not catch_all:
        raise _invalid(
            "The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)"
        )
    if not last and catch_all:
        raise _invalid(
            f"Rule #{index} is matching all URLs, but it is not the last rule, so the rules which follow it "
            "will never be triggered"
        )
    if hostname:
        check_hostname(index, hostname)
    check_service(index, rule.get("service"))
    check_origin_request(f"Rule #{index}", rule.get("originRequest", {}))


def validate_config(config: Any) -> dict[str, Any]:
    """The configuration to store, or the refusal cloudflared's rules would give."""
    if not isinstance(config, dict):
        raise _invalid("config must be an object with an ingress list")
    ingress = config.get("ingress")
    if ingress is not None:
        if not isinstance(ingress, list) or not ingress:
            raise _invalid("ingress must be a non-empty list of rules ending with a catch-all rule")
        for i, rule in enumerate(ingress, start=1):
            check_rule(i, rule, last=i == len(ingress))
    check_origin_request("config", config.get("originRequest", {}))
    warp = config.get("warp-routing", {})
    if not isinstance(warp, dict) or not isinstance(warp.get("enabled", False), bool):
        raise _invalid("warp-routing must be an object with a boolean 'enabled'")
    return config
