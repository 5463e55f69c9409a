"""Client configuration: a TOML file in the user's config dir, named profiles, then the environment.

Precedence, lowest first: built-in defaults < top-level keys of the file < `[profiles.<name>]` <
environment (`LLM_RELAY_URL`, `LLM_RELAY_TOKEN`, `LLM_RELAY_FERNET_KEY`, `LLM_RELAY_ACCESS_CLIENT_ID`,
`LLM_RELAY_ACCESS_CLIENT_SECRET`, `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` when the file sets no
`proxy`/`no_proxy`) < command-line flags. See relay/docs/client.md.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

from llm_relay import tokens

TOKEN_CHANNELS = ("path", "header", "bearer")
ENVELOPE_VERSIONS = ("auto", "v2", "v1")
DEFAULT_TIMEOUT = 300.0  # seconds: long completions stream for minutes
CONFIG_ENV = "LLM_RELAY_CLIENT_CONFIG"  # not LLM_RELAY_CONFIG: that one is the server's
PROFILE_ENV = "LLM_RELAY_PROFILE"
# A Cloudflare Access service token travels in two request headers: visible ASCII only, so a stray newline
# or space in a secret file is refused here with a message naming the key, not by the HTTP library with
# one that quotes the value.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]{1,512}")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and where it came from."""


@dataclass(frozen=True)
class Profile:
    """Everything needed to reach one relay. Secrets are kept out of `repr`."""

    name: str = "default"
    url: str = ""
    token: str = field(default="", repr=False)
    fernet_key: str = field(default="", repr=False)
    encrypt: bool | None = None  # None: encrypt whenever a Fernet key is configured
    envelope: str = "auto"  # auto = v2, never a fallback (a plain answer can be forged); v1 only if set
    pad_to: int = 128  # envelope v2: request sizes rounded up to a multiple of this (0: off)
    token_channel: str = "path"  # noqa: S105 - a channel name, not a secret
    proxy: str | None = None  # None: from HTTPS_PROXY/HTTP_PROXY; "": explicitly direct
    no_proxy: str = ""
    ca_bundle: str = ""
    verify_tls: bool = True
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = 10.0
    connect_to: str = ""  # "host:port" dialled instead of the URL's (Host header and TLS name unchanged)
    # Cloudflare Access service token, sent as CF-Access-Client-Id/-Secret on every request (access.py)
    access_client_id: str = ""
    access_client_secret: str = field(default="", repr=False)
    model: str = "openai/gpt-4o-mini"
    embedding_model: str = "openai/text-embedding-3-small"
    source: str = field(default="defaults", compare=False)  # where the file came from, for messages

    @property
    def encrypting(self) -> bool:
        return bool(self.fernet_key) if self.encrypt is None else self.encrypt

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def root(self) -> str:
        """The relay URL without a trailing slash; OpenAI paths (`/v1/...`) hang below it."""
        return self.url.rstrip("/")

    def with_overrides(self, **changes: Any) -> Profile:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# Keys accepted in the file, with their types; `*_file` keys read a secret from a separate 0600 file.
_FILE_KEYS: dict[str, type | tuple[type, ...]] = {
    "url": str,
    "token": str,
    "token_file": str,
    "fernet_key": str,
    "fernet_key_file": str,
    "encrypt": bool,
    "envelope": str,
    "pad_to": int,
    "token_channel": str,
    "proxy": str,
    "no_proxy": (str, list),
    "ca_bundle": str,
    "verify_tls": bool,
    "timeout": (int, float),
    "connect_timeout": (int, float),
    "connect_to": str,
    "model": str,
    "embedding_model": str,
    "access_client_id": str,
    "access_client_secret": str,
    "access_client_secret_file": str,
}
_TOP_ONLY = {"default_profile", "profiles"}


def default_config_path() -> Path:
    """`$LLM_RELAY_CLIENT_CONFIG`, else `%APPDATA%\\llm-relay\\config.toml` on Windows, else XDG's config
    dir (`$LLM_RELAY_CONFIG` is the server's variable, deliberately not read here)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    if os.name == "nt" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "llm-relay" / "config.toml"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "llm-relay" / "config.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _check_table(table: dict[str, Any], where: str) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in table.items():
        if key in _TOP_ONLY:
            continue
        expected = _FILE_KEYS.get(key)
        if expected is None:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_FILE_KEYS))})")
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
        checked[key] = value
    return checked


def _read_secret_file(path_text: str, key: str, where: str) -> str:
    path = Path(path_text).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where}: {key} {path}: {exc.strerror}") from None


def _file_values(data: dict[str, Any], profile: str | None, path: Path) -> tuple[str, dict[str, Any]]:
    """Merge top-level keys with the selected profile table; returns (profile name, values)."""
    values = _check_table(data, str(path))
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: 'profiles' must be a table of tables ([profiles.NAME])")
    name = profile or data.get("default_profile") or ("default" if "default" in profiles else None)
    if profile and profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"{path}: no profile {profile!r} (profiles: {known})")
    if name and name in profiles:
        table = profiles[name]
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [profiles.{name}] must be a table")
        values |= _check_table(table, f"{path} [profiles.{name}]")
    elif name and profile is None and data.get("default_profile"):
        raise ConfigError(f"{path}: default_profile {name!r} has no [profiles.{name}] table")
    for key in ("token", "fernet_key", "access_client_secret"):
        if f"{key}_file" in values:
            values[key] = _read_secret_file(values.pop(f"{key}_file"), f"{key}_file", str(path))
    if isinstance(values.get("no_proxy"), list):
        values["no_proxy"] = ",".join(str(item) for item in values["no_proxy"])
    return name or "default", values


def _env_values(env: dict[str, str], file_values: dict[str, Any], scheme: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, var in (
        ("url", "LLM_RELAY_URL"),
        ("token", "LLM_RELAY_TOKEN"),
        ("fernet_key", "LLM_RELAY_FERNET_KEY"),
        ("access_client_id", "LLM_RELAY_ACCESS_CLIENT_ID"),
        ("access_client_secret", "LLM_RELAY_ACCESS_CLIENT_SECRET"),
    ):
        if env.get(var):
            values[key] = env[var]
    if "proxy" not in file_values:
        # Standard variables, upper case first (curl's order); the relay's scheme picks which one applies.
        names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
        found = next((env[n] for n in (*names, "ALL_PROXY", "all_proxy") if env.get(n)), None)
        if found is not None:
            values["proxy"] = found
    if "no_proxy" not in file_values:
        found = env.get("NO_PROXY", env.get("no_proxy"))
        if found is not None:
            values["no_proxy"] = found
    return values


def validate(profile: Profile) -> Profile:
    """Raise ConfigError for a profile that cannot work; never echo a secret in the message."""
    where = f"profile {profile.name!r} ({profile.source})"
    parts = urlsplit(profile.url)
    if not profile.url:
        raise ConfigError(f"{where}: no relay url (set `url` or LLM_RELAY_URL)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: url must be http(s)://host[:port], got {profile.url!r}")
    if not profile.token:
        raise ConfigError(f"{where}: no client token (set `token`, `token_file` or LLM_RELAY_TOKEN)")
    if not tokens.is_well_formed(profile.token):
        raise ConfigError(f"{where}: token is not an llm-relay token (expected lrt_ + 43 characters)")
    if profile.fernet_key:
        try:
            Fernet(profile.fernet_key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise ConfigError(f"{where}: fernet_key is not a Fernet key (44 urlsafe-base64 chars)") from None
    if profile.encrypting and not profile.fernet_key:
        raise ConfigError(f"{where}: encrypt = true needs a fernet_key (or LLM_RELAY_FERNET_KEY)")
    if profile.envelope not in ENVELOPE_VERSIONS:
        raise ConfigError(f"{where}: envelope must be one of {', '.join(ENVELOPE_VERSIONS)}")
    if profile.pad_to < 0:
        raise ConfigError(f"{where}: pad_to must be 0 (off) or a positive number of bytes")
    if profile.token_channel not in TOKEN_CHANNELS:
        raise ConfigError(f"{where}: token_channel must be one of {', '.join(TOKEN_CHANNELS)}")
    if profile.proxy:
        proxy = urlsplit(profile.proxy if "://" in profile.proxy else "http://" + profile.proxy)
        if proxy.scheme not in ("http", "https") or not proxy.hostname:
            raise ConfigError(f"{where}: proxy must be http://[user:password@]host:port")
    if profile.ca_bundle and not Path(profile.ca_bundle).expanduser().is_file():
        raise ConfigError(f"{where}: ca_bundle {profile.ca_bundle!r} is not a file")
    if profile.connect_to and not _hostport(profile.connect_to):
        raise ConfigError(f"{where}: connect_to must be host:port (IPv6 as [addr]:port)")
    if profile.timeout <= 0 or profile.connect_timeout <= 0:
        raise ConfigError(f"{where}: timeout and connect_timeout must be positive")
    _validate_access(profile, where)
    return profile


def _validate_access(profile: Profile, where: str) -> None:
    """A service token is an id and a secret: one without the other would be refused at the edge with a
    message that cannot say which half is missing, so both or neither, named here."""
    if profile.access_client_id and not profile.access_client_secret:
        raise ConfigError(
            f"{where}: access_client_id is set but access_client_secret is not (set "
            "access_client_secret_file, access_client_secret or LLM_RELAY_ACCESS_CLIENT_SECRET)"
        )
    if profile.access_client_secret and not profile.access_client_id:
        raise ConfigError(
            f"{where}: access_client_secret is set but access_client_id is not "
            "(set access_client_id or LLM_RELAY_ACCESS_CLIENT_ID)"
        )
    for key in ("access_client_id", "access_client_secret"):
        value = getattr(profile, key)
        if value and not _HEADER_VALUE.fullmatch(value):
            raise ConfigError(
                f"{where}: {key} must be 1-512 visible ASCII characters (no spaces or line breaks): "
                "it is sent as an HTTP header"
            )


def _hostport(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def load_profile(
    profile: str | None = None,
    *,
    config_path: str | Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    **overrides: Any,
) -> Profile:
    """The effective profile: file + environment + `overrides` (None values are ignored), validated."""
    env = dict(os.environ if env is None else env)
    path = Path(config_path).expanduser() if config_path else default_config_path()
    data = _read_toml(path)
    if config_path and not data and not path.exists():
        raise ConfigError(f"{path}: no such config file")
    profile = profile or env.get(PROFILE_ENV) or None
    if profile and not data:
        raise ConfigError(f"profile {profile!r} requested but there is no config file at {path}")
    name, values = _file_values(data, profile, path) if data else ("default", {})
    url = overrides.get("url") or env.get("LLM_RELAY_URL") or values.get("url", "")
    values |= _env_values(env, values, urlsplit(url).scheme)
    known = {f.name for f in fields(Profile)}
    values |= {k: v for k, v in overrides.items() if v is not None and k in known}
    for key in ("timeout", "connect_timeout"):
        if key in values:
            values[key] = float(values[key])
    result = Profile(name=name, source=str(path) if data else "environment", **values)
    return validate(result) if check else result


def loose_permissions(path: Path) -> bool:
    """True when a file holding secrets can be read by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return os.name != "nt" and bool(mode & (stat.S_IRWXG | stat.S_IRWXO))
