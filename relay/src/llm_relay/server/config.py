"""The server's settings: relay.toml plus the secret files it names (format: relay/docs/config.md).

Loading is all-or-nothing: `load_settings` either returns a complete, validated `Settings` or raises
`ConfigError` naming the file, line or key at fault (never a secret value). SIGHUP reloads go through the
same function, so a broken edit never replaces working settings.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llm_relay import envelope, envelope_v2, tokens

from .config_features import (
    RESERVED_NAMES,
    AccessSettings,
    CorsSettings,
    RouteSettings,
    UsageSettings,
    parse_access,
    parse_cors,
    parse_routes,
    parse_usage,
    with_secrets_file,
)
from .config_table import ConfigError, Table
from .headers import valid_name, valid_value

DEFAULT_CONFIG = "/etc/llm-relay/relay.toml"
OPENROUTER_BASE = "https://openrouter.ai/api/v1"
RESERVED_PROVIDER_NAMES = RESERVED_NAMES
# What the providers' APIs use (OpenAI-compatible, Anthropic): the default of [providers.X] methods and
# the most it may hold. The HTTP server refuses any other method for every route (http11.ALLOWED_METHODS).
PROVIDER_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class ServerSettings:
    listen: tuple[str, int] = ("127.0.0.1", 8787)
    metrics_listen: tuple[str, int] | None = ("127.0.0.1", 9464)
    default_provider: str = "openrouter"
    max_body_bytes: int = 10 * 1024 * 1024
    body_timeout: float = 30.0
    drain_timeout: float = 30.0
    max_line_bytes: int = 8190
    max_headers: int = 100
    max_head_bytes: int = 32768
    max_connections: int = 1024
    max_envelope_body_bytes: int = 2 * 1024 * 1024
    # Memory budget (issue 25, server/budget.py): what the process and one connection may hold.
    memory_budget_bytes: int = 128 * 1024 * 1024
    connection_budget_bytes: int = 16 * 1024 * 1024
    send_timeout: float = 60.0
    access_log: bool = True
    log_level: str = "info"


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    base_url: str
    keys: tuple[str, ...] = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict)
    auth: str = "bearer"  # "bearer" | "<header-name>" | "query:<param>"
    proxy: str = ""
    no_proxy: tuple[str, ...] = ()
    ca_file: str = ""
    connect_timeout: float = 10.0
    response_timeout: float = 600.0
    idle_timeout: float = 300.0
    max_idle_connections: int = 64
    # Methods forwarded to this provider (issue 25): others get 405 before any byte goes to it.
    methods: frozenset[str] = field(default_factory=lambda: PROVIDER_METHODS)

    @property
    def auth_header(self) -> str | None:
        """The header that carries the key (None when it travels as a query parameter)."""
        if self.auth == "bearer":
            return "Authorization"
        return None if self.auth.startswith("query:") else self.auth

    @property
    def auth_query(self) -> str | None:
        """The query parameter that carries the key, if the provider wants it there."""
        return self.auth.partition(":")[2] if self.auth.startswith("query:") else None

    @property
    def scheme(self) -> str:
        return urlsplit(self.base_url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def base_path(self) -> str:
        return urlsplit(self.base_url).path.rstrip("/")

    def uses_proxy(self) -> bool:
        if not self.proxy:
            return False
        host = self.host.lower()
        return not any(host == n.lstrip(".") or host.endswith("." + n.lstrip(".")) for n in self.no_proxy)

    def connection_identity(self) -> tuple:
        """What a keep-alive pool depends on: equal identity → the pool survives a reload."""
        return (self.scheme, self.host, self.port, self.proxy if self.uses_proxy() else "", self.ca_file)


@dataclass(frozen=True)
class Settings:
    path: Path
    server: ServerSettings
    providers: dict[str, ProviderSettings]
    token_hashes: dict[str, str] = field(repr=False)  # sha256hex -> token name
    rate_limit_per_minute: int = 600
    fernet_keys: tuple[bytes, ...] = field(default=(), repr=False)
    envelope_ttl: int = envelope.DEFAULT_TTL
    client_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (token name, key), v2
    # Envelope v1 opens only when asked for: a proxy that could make clients fall back to it would get
    # unbound answers, unnumbered stream events and unpadded sizes (relay/docs/envelope.md).
    accept_v1: bool = False
    envelope_pad_to: int = envelope_v2.DEFAULT_PAD
    cors: CorsSettings = field(default_factory=CorsSettings)
    routes: dict[str, RouteSettings] = field(default_factory=dict)
    usage: UsageSettings = field(default_factory=UsageSettings)
    access: AccessSettings = field(default_factory=AccessSettings)


def parse_hostport(value: Any, what: str) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{what} must be 'host:port', got {value!r}")
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} must be 'host:port', got {value!r}")
    return host, int(port)


def resolve_secret(name: str, config_dir: Path) -> Path:
    path = Path(name)
    if path.is_absolute():
        return path
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        return Path(creds) / path
    return config_dir / path


def read_secret(path: Path, what: str) -> list[str]:
    """Lines of a secret file that exists, is a regular file and is private to its owner."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{what}: file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot stat {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what}: {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{what}: {path} is accessible by group/others (mode {st.st_mode & 0o777:04o}); use 0600"
        )
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.__class__.__name__}") from None


def _key_lines(lines: list[str]) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in lines if k.strip() and not k.strip().startswith("#"))
    for k in keys:
        if any(c.isspace() or ord(c) < 33 or ord(c) > 126 for c in k):
            raise ConfigError("provider keys must be printable ASCII without spaces, one per line")
    return keys


# Headers the relay computes (framing, Host, hop-by-hop): a provider table may not set them.
_RELAY_OWNED = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
}


def _auth_style(name: str, auth: str) -> str:
    """Validate `auth`: "bearer", a header name, or "query:<param>"."""
    if auth.lower() == "bearer":
        return "bearer"
    if auth.startswith("query:"):
        param = auth[6:]
        if not param or not re.fullmatch(r"[A-Za-z0-9._~-]+", param):
            raise ConfigError(f"[providers.{name}] auth: query parameter name {param!r} is not valid")
        return auth
    if not valid_name(auth) or auth.lower() in _RELAY_OWNED:
        raise ConfigError(
            f'[providers.{name}] auth must be "bearer", a header name or "query:<param>", got {auth!r}'
        )
    return auth


def _provider(name: str, data: Any, config_dir: Path) -> ProviderSettings:
    if not tokens.NAME_RE.match(name) or name in RESERVED_PROVIDER_NAMES:
        raise ConfigError(f"[providers.{name}]: invalid or reserved provider name")
    data = with_secrets_file(  # headers and proxy from a 0600 file (config_features.SECRET_SETTINGS)
        name,
        data,
        lambda ref: read_secret(resolve_secret(ref, config_dir), f"[providers.{name}] secrets_file"),
    )
    known = {
        "base_url",
        "keys_file",
        "headers",
        "auth",
        "proxy",
        "no_proxy",
        "ca_file",
        "connect_timeout",
        "response_timeout",
        "idle_timeout",
        "max_idle_connections",
        "methods",
    }
    t = Table(data, f"providers.{name}", known)
    default_base = OPENROUTER_BASE if name == "openrouter" else None
    base_url = t.get("base_url", str, default_base) if default_base or "base_url" in data else None
    if base_url is None:
        raise ConfigError(f"[providers.{name}] base_url is required")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"[providers.{name}] base_url must be an http(s) URL without query, got {base_url!r}"
        )
    headers = t.get("headers", dict, {})
    for k, v in headers.items():
        if not isinstance(v, str) or not valid_name(k) or not valid_value(v):
            raise ConfigError(f"[providers.{name}] headers: invalid header {k!r}")
        if k.lower() in _RELAY_OWNED:
            raise ConfigError(f"[providers.{name}] headers: {k!r} is set by the relay itself")
    auth = _auth_style(name, t.get("auth", str, "bearer"))
    proxy = t.get("proxy", str, "")
    if proxy:
        p = urlsplit(proxy)
        if p.scheme != "http" or not p.hostname:
            raise ConfigError(f"[providers.{name}] proxy must be an http://host:port URL")
    no_proxy = t.get("no_proxy", list, [])
    if not all(isinstance(n, str) for n in no_proxy):
        raise ConfigError(f"[providers.{name}] no_proxy must be a list of host names")
    ca_file = t.get("ca_file", str, "")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"[providers.{name}] ca_file {ca_file} does not exist")
    keys_file = t.get("keys_file", str, f"{name}-keys")
    keys = _key_lines(read_secret(resolve_secret(keys_file, config_dir), f"[providers.{name}] keys_file"))
    if not keys:
        raise ConfigError(f"[providers.{name}] keys_file holds no key")
    return ProviderSettings(
        name=name,
        base_url=base_url.rstrip("/"),
        keys=keys,
        headers={str(k): v for k, v in headers.items()},
        auth=auth,
        proxy=proxy,
        no_proxy=tuple(n.lower() for n in no_proxy),
        ca_file=ca_file,
        connect_timeout=t.number("connect_timeout", 10.0, 0.001),
        response_timeout=t.number("response_timeout", 600.0, 0.001),
        idle_timeout=t.number("idle_timeout", 300.0, 0.001),
        max_idle_connections=int(t.number("max_idle_connections", 64)),
        methods=_provider_methods(t, name),
    )


def load_settings(path: str | Path, listen_override: str | None = None) -> Settings:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.__class__.__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    config_dir = path.parent
    Table(raw, "top level", {"server", "auth", "envelope", "providers", "cors", "routes", "usage", "access"})

    s = Table(raw.get("server", {}), "server", set(ServerSettings.__dataclass_fields__) | {"listen"})
    listen = parse_hostport(listen_override or s.get("listen", str, "127.0.0.1:8787"), "server.listen")
    metrics = s.get("metrics_listen", str, "127.0.0.1:9464")
    log_level = s.get("log_level", str, "info")
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("[server] log_level must be debug, info, warning or error")
    server = ServerSettings(
        listen=listen,
        metrics_listen=parse_hostport(metrics, "server.metrics_listen") if metrics else None,
        default_provider=s.get("default_provider", str, "openrouter"),
        max_body_bytes=int(s.number("max_body_bytes", 10 * 1024 * 1024, 1)),
        body_timeout=s.number("body_timeout", 30.0, 0.001),
        drain_timeout=s.number("drain_timeout", 30.0),
        max_line_bytes=int(s.number("max_line_bytes", 8190, 256)),
        max_headers=int(s.number("max_headers", 100, 8)),
        max_head_bytes=int(s.number("max_head_bytes", 32768, 1024)),
        max_connections=int(s.number("max_connections", 1024, 1)),
        max_envelope_body_bytes=int(s.number("max_envelope_body_bytes", 2 * 1024 * 1024, 1024)),
        access_log=s.get("access_log", bool, True),
        log_level=log_level,
        **_budget_settings(s),
    )

    a = Table(raw.get("auth", {}), "auth", {"tokens_file", "rate_limit_per_minute"})
    tokens_path = resolve_secret(a.get("tokens_file", str, "client-tokens"), config_dir)
    try:
        token_hashes = tokens.parse_token_lines("\n".join(read_secret(tokens_path, "[auth] tokens_file")))
    except tokens.TokenLineError as exc:
        raise ConfigError(f"[auth] tokens_file {tokens_path}: {exc}") from None

    e = Table(
        raw.get("envelope", {}), "envelope", {"keys_file", "ttl", "client_keys_file", "accept_v1", "pad_to"}
    )
    keys_name = e.get("keys_file", str, "fernet-keys")
    keys_path = resolve_secret(keys_name, config_dir)
    fernet_keys: list[bytes] = []
    if "keys_file" in e.data or keys_path.exists():
        try:
            fernet_keys = envelope.parse_keys(read_secret(keys_path, "[envelope] keys_file"))
        except ValueError as exc:
            raise ConfigError(f"[envelope] keys_file {keys_path}: {exc}") from None
    client_keys = _client_keys(e, config_dir)

    providers_raw = raw.get("providers", {"openrouter": {}})
    if not isinstance(providers_raw, dict) or not providers_raw:
        raise ConfigError("[providers] must define at least one [providers.NAME] table")
    providers = {name: _provider(name, data, config_dir) for name, data in providers_raw.items()}
    routes = parse_routes(raw.get("routes", {}), providers)
    if server.default_provider not in providers and server.default_provider not in routes:
        if "default_provider" in s.data or len(providers) != 1:
            raise ConfigError(
                f"[server] default_provider {server.default_provider!r} is not a configured provider"
            )
        server = ServerSettings(**{**server.__dict__, "default_provider": next(iter(providers))})
    return Settings(
        path=path,
        server=server,
        providers=providers,
        token_hashes=token_hashes,
        rate_limit_per_minute=int(a.number("rate_limit_per_minute", 600)),
        fernet_keys=tuple(fernet_keys),
        envelope_ttl=int(e.number("ttl", envelope.DEFAULT_TTL, 1)),
        client_keys=client_keys,
        accept_v1=e.get("accept_v1", bool, False),
        envelope_pad_to=int(e.number("pad_to", envelope_v2.DEFAULT_PAD, 0)),
        cors=parse_cors(raw.get("cors", {})),
        routes=routes,
        usage=parse_usage(raw.get("usage", {})),
        access=parse_access(raw.get("access", {}), config_dir),
    )


def _client_keys(e: Table, config_dir: Path) -> tuple[tuple[str, str], ...]:
    """Envelope v2's key per client: `name:key` lines, each name one of the tokens file's names."""
    path = resolve_secret(e.get("client_keys_file", str, "client-keys"), config_dir)
    if "client_keys_file" not in e.data and not path.exists():
        return ()
    try:
        pairs = envelope_v2.parse_client_keys(read_secret(path, "[envelope] client_keys_file"))
        envelope_v2.KeyTable(envelope_v2.ClientKey(k, n) for n, k in pairs)
    except ValueError as exc:
        raise ConfigError(f"[envelope] client_keys_file {path}: {exc}") from None
    # A key whose name has no token is not an error (tokens and keys are rotated in two steps): it opens
    # envelopes, but no token can pass the owner check, so it authenticates nothing.
    return tuple(pairs)


def _budget_settings(s: Table) -> dict[str, Any]:
    """[server] memory budget settings (budget.py; documented in relay/docs/config.md)."""
    total = int(s.number("memory_budget_bytes", 128 * 1024 * 1024, 1024 * 1024))
    per_connection = int(s.number("connection_budget_bytes", 16 * 1024 * 1024, 64 * 1024))
    if per_connection > total:
        raise ConfigError("[server] connection_budget_bytes must not exceed memory_budget_bytes")
    return {
        "memory_budget_bytes": total,
        "connection_budget_bytes": per_connection,
        "send_timeout": s.number("send_timeout", 60.0, 0.001),
    }


def _provider_methods(t: Table, name: str) -> frozenset[str]:
    """[providers.X] methods: the HTTP methods forwarded to it (default: all of PROVIDER_METHODS)."""
    methods = t.get("methods", list, sorted(PROVIDER_METHODS))
    chosen = {m.upper() for m in methods if isinstance(m, str)}
    if len(chosen) != len(methods) or not chosen or not chosen <= PROVIDER_METHODS:
        raise ConfigError(
            f"[providers.{name}] methods must be a non-empty list of {', '.join(sorted(PROVIDER_METHODS))}"
        )
    return frozenset(chosen)
