"""API tokens of the lab account (from lab.toml) and the checks the real API makes with them.

lab.toml:
    [cloudflare.tokens.admin]          # the name shows in the call log and /user/tokens/verify
    value = "<40 chars [A-Za-z0-9_-]>" # what clients send as `Authorization: Bearer <value>`
    permissions = ["Cloudflare Tunnel:Edit", "DNS:Edit", "Zone:Read"]
    accounts = ["0123456789abcdef0123456789abcdef"]   # account resources the token covers
    zones = ["lab.test"]                               # zone resources the token covers
`<Resource>:Edit` implies `<Resource>:Read`. Finding a zone (`GET /zones?name=`) needs `Zone:Read`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .envelope import CloudflareError

TOKEN_FORMAT = re.compile(r"^[A-Za-z0-9_-]{40}$")
# Access ones: Cloudflare's permission groups "Access: Apps and Policies" and "Access: Service Tokens".
RESOURCES = {"Cloudflare Tunnel", "DNS", "Zone", "Access: Apps and Policies", "Access: Service Tokens"}


@dataclass(frozen=True)
class ApiToken:
    name: str
    value: str
    permissions: frozenset[str]
    accounts: frozenset[str]
    zones: frozenset[str]

    def allows(self, resource: str, write: bool) -> bool:
        if f"{resource}:Edit" in self.permissions:
            return True
        return not write and f"{resource}:Read" in self.permissions

    def sees_zone(self, zone_name: str) -> bool:
        """Zone lookups need Zone:Read: a DNS-only token gets an empty `GET /zones` (a classic pitfall)."""
        return zone_name in self.zones and self.allows("Zone", False)


def parse_tokens(raw: list[dict[str, Any]] | dict[str, dict[str, Any]]) -> dict[str, ApiToken]:
    """Tokens by value, from a list of tables or a table of tables keyed by token name."""
    if isinstance(raw, dict):
        raw = [{"name": name} | entry for name, entry in raw.items()]
    tokens = {}
    for entry in raw:
        value = entry["value"]
        if not TOKEN_FORMAT.match(value):
            raise ValueError(
                f"[cloudflare] token {entry.get('name')!r}: value must be 40 chars [A-Za-z0-9_-]"
            )
        perms = frozenset(entry.get("permissions", []))
        unknown = {
            p for p in perms if p.rpartition(":")[0] not in RESOURCES or not p.endswith((":Edit", ":Read"))
        }
        if unknown:
            raise ValueError(
                f"[cloudflare] token {entry.get('name')!r}: unknown permissions {sorted(unknown)}"
            )
        tokens[value] = ApiToken(
            name=entry.get("name", value[:6]),
            value=value,
            permissions=perms,
            accounts=frozenset(entry.get("accounts", [])),
            zones=frozenset(entry.get("zones", [])),
        )
    return tokens


def authentication_error() -> CloudflareError:
    return CloudflareError(403, 10000, "Authentication error")


def authenticate(request: web.Request, tokens: dict[str, ApiToken]) -> ApiToken:
    """The token a request carries, or the live API's refusal for a missing/malformed/unknown one."""
    header = request.headers.get("Authorization")
    if header is None:
        raise CloudflareError(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
    scheme, _, value = header.partition(" ")
    if scheme != "Bearer" or not TOKEN_FORMAT.match(value.strip()):
        error = CloudflareError(400, 6003, "Invalid request headers")
        error.errors[0]["error_chain"] = [
            {"code": 6111, "message": "Invalid format for Authorization header"}
        ]
        raise error
    token = tokens.get(value.strip())
    if token is None:
        raise authentication_error()
    return token


def require_account(token: ApiToken, account_id: str, resource: str, write: bool) -> None:
    if account_id not in token.accounts or not token.allows(resource, write):
        raise authentication_error()


def require_zone(token: ApiToken, zone_name: str, resource: str, write: bool) -> None:
    if zone_name not in token.zones or not token.allows(resource, write):
        raise authentication_error()
