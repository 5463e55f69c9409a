"""The optional feature tables of relay.toml: `[cors]`, `[routes.NAME]` (fallback), `[usage]`, `[access]`.

Each is off by default: no table, no behaviour change. Format and meaning: relay/docs/config.md.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from llm_relay import tokens

from .config_table import ConfigError, Table

# Path names the relay answers itself; neither a provider nor a route may take them.
RESERVED_NAMES = {"v1", "t", "relay", "healthz", "readyz", "metrics", "envelope"}


@dataclass(frozen=True)
class CorsSettings:
    allow_origins: tuple[str, ...] = ()  # exact origins ("https://tool.example"); empty = no CORS at all
    max_age: int = 600  # seconds a browser may cache a preflight answer


@dataclass(frozen=True)
class Attempt:
    provider: str
    model: str = ""  # "" = keep the client's model


@dataclass(frozen=True)
class RouteSettings:
    name: str
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True)
class UsageSettings:
    daily_token_budget: int = 0  # prompt + completion tokens per client and UTC day; 0 = unlimited
    client_budgets: dict[str, int] = field(default_factory=dict)  # per client name, overrides the default
    # What a request without max_tokens (max_completion_tokens, max_output_tokens) reserves for its answer
    # against the budget while it runs (token_budget.py).
    reserve_tokens: int = 1024
    max_concurrent_per_client: int = 0  # requests of one client in flight at once; 0 = unlimited

    def budget_of(self, client: str) -> int:
        return self.client_budgets.get(client, self.daily_token_budget)


@dataclass(frozen=True)
class AccessSettings:
    """Cloudflare Access: verify each request's `Cf-Access-Jwt-Assertion` (access_jwt.py)."""

    team_domain: str = ""  # "<team>.cloudflareaccess.com" (optionally :port); "" = off
    audiences: tuple[str, ...] = ()  # the Access application's aud tags; a token must name one of them
    ca_file: str = ""  # CA bundle for fetching the certs; "" = the system's
    certs_url: str = ""  # "" = https://<team_domain>/cdn-cgi/access/certs

    @property
    def enabled(self) -> bool:
        return bool(self.team_domain)

    @property
    def issuer(self) -> str:
        return f"https://{self.team_domain}"

    @property
    def keys_url(self) -> str:
        return self.certs_url or f"{self.issuer}/cdn-cgi/access/certs"


# A DNS name (labels of letters, digits, hyphens), optionally `:port`: what goes after https:// in `iss`.
_TEAM_DOMAIN = re.compile(
    r"(?=.{1,253}(:|$))([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}(:[0-9]{1,5})?"
)


def parse_access(raw: Any, config_dir: Any) -> AccessSettings:
    t = Table(raw, "access", {"team_domain", "audiences", "ca_file", "certs_url"})
    team_domain = t.get("team_domain", str, "").strip().lower()
    audiences = t.get("audiences", list, [])
    ca_file = t.get("ca_file", str, "")
    certs_url = t.get("certs_url", str, "")
    if not team_domain:
        if audiences or ca_file or certs_url:
            raise ConfigError(
                "[access] audiences, ca_file and certs_url need team_domain (empty = Access off)"
            )
        return AccessSettings()
    if not _TEAM_DOMAIN.fullmatch(team_domain):
        raise ConfigError(
            f"[access] team_domain {team_domain[:80]!r} is not a host name like 'myteam.cloudflareaccess.com'"
            " (no scheme, no path; ':port' allowed)"
        )
    if not audiences:
        raise ConfigError(
            "[access] audiences must list the Access application's aud tag(s) when team_domain is set"
        )
    for aud in audiences:
        if not isinstance(aud, str) or not aud.strip() or len(aud) > 256:
            raise ConfigError("[access] audiences must be non-empty strings (the application's aud tag)")
    if certs_url:
        parts = urlsplit(certs_url)
        if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
            raise ConfigError(
                f"[access] certs_url {certs_url[:120]!r} must be an https:// URL without userinfo"
            )
    if ca_file:
        path = config_dir / ca_file
        if not path.is_file():
            raise ConfigError(f"[access] ca_file {path} is not a readable file")
        ca_file = str(path)
    return AccessSettings(team_domain, tuple(a.strip() for a in audiences), ca_file, certs_url)


def _origin(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError("[cors] allow_origins must be a list of origins like 'https://tool.example'")
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise ConfigError(f"[cors] allow_origins: {value!r} is not an origin (scheme://host[:port], no path)")
    return value.lower()


def parse_cors(raw: Any) -> CorsSettings:
    t = Table(raw, "cors", {"allow_origins", "max_age"})
    origins = t.get("allow_origins", list, [])
    return CorsSettings(
        allow_origins=tuple(_origin(o) for o in origins), max_age=int(t.number("max_age", 600))
    )


def _attempt(route: str, entry: Any, providers: dict[str, Any]) -> Attempt:
    if isinstance(entry, str):
        entry = {"provider": entry}
    t = Table(entry, f"routes.{route}.providers[]", {"provider", "model"})
    name = t.get("provider", str, "")
    if name not in providers:
        raise ConfigError(f"[routes.{route}] providers: {name!r} is not a configured provider")
    return Attempt(name, t.get("model", str, ""))


def parse_routes(raw: Any, providers: dict[str, Any]) -> dict[str, RouteSettings]:
    if not isinstance(raw, dict):
        raise ConfigError("[routes] must be a table of [routes.NAME] tables")
    routes = {}
    for name, data in raw.items():
        if not tokens.NAME_RE.match(name) or name in RESERVED_NAMES or name in providers:
            raise ConfigError(f"[routes.{name}]: invalid or reserved name (or a provider's name)")
        t = Table(data, f"routes.{name}", {"providers"})
        entries = t.get("providers", list, [])
        if not entries:
            raise ConfigError(f"[routes.{name}] providers must list at least one provider")
        routes[name] = RouteSettings(name, tuple(_attempt(name, e, providers) for e in entries))
    return routes


def parse_usage(raw: Any) -> UsageSettings:
    t = Table(
        raw,
        "usage",
        {"daily_token_budget", "client_budgets", "reserve_tokens", "max_concurrent_per_client"},
    )
    budgets = t.get("client_budgets", dict, {})
    for client, value in budgets.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"[usage] client_budgets: {client!r} must be a non-negative integer")
    return UsageSettings(
        int(t.number("daily_token_budget", 0)),
        dict(budgets),
        int(t.number("reserve_tokens", 1024, 1)),
        int(t.number("max_concurrent_per_client", 0)),
    )


# What a provider's `secrets_file` may hold: the settings that can carry credentials (a header holding a
# key, a proxy URL with user:password), kept out of relay.toml (readable by the service's group) in a 0600
# file owned by the service user, like the keys files.
SECRET_SETTINGS = frozenset({"headers", "proxy"})


def with_secrets_file(name: str, data: Any, read: Callable[[str], list[str]]) -> Any:
    """`[providers.NAME]` with its `secrets_file` (TOML: `headers = {...}`, `proxy = "..."`) merged in.
    `read` returns the lines of a private secret file (the caller checks its mode). A header or proxy set
    in both places is an error: one place decides. Nothing read from the file is echoed in an error."""
    if not isinstance(data, dict) or "secrets_file" not in data:
        return data
    where = f"[providers.{name}] secrets_file"
    ref = data["secrets_file"]
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"{where} must be a file name")
    try:
        extra = tomllib.loads("\n".join(read(ref)))
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{where}: {ref} is not valid TOML") from None
    unknown = set(extra) - SECRET_SETTINGS
    if unknown:
        raise ConfigError(f"{where}: {ref} may hold only {sorted(SECRET_SETTINGS)}, not {sorted(unknown)}")
    merged = {k: v for k, v in data.items() if k != "secrets_file"}
    if "proxy" in extra:
        if "proxy" in merged:
            raise ConfigError(f"{where}: proxy is set both here and in relay.toml")
        merged["proxy"] = extra["proxy"]
    if "headers" in extra:
        inline, secret = merged.get("headers", {}), extra["headers"]
        if not isinstance(inline, dict) or not isinstance(secret, dict):
            raise ConfigError(f"{where}: headers must be a table")
        both = {k.lower() for k in inline} & {k.lower() for k in secret}
        if both:
            raise ConfigError(f"{where}: headers {sorted(both)} set both here and in relay.toml")
        merged["headers"] = {**inline, **secret}
    return merged
