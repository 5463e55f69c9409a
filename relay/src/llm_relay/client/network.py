"""Which proxy the relay is reached through, and how its TLS certificate is checked.

The client talks to exactly one host (the relay), so the proxy decision is made once per profile here
instead of letting the HTTP library read the environment on its own: `doctor` then reports and tests
exactly the route the other commands take.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from .config import Profile, _hostport


def _no_proxy_matches(entry: str, host: str, port: int) -> bool:
    entry = entry.strip().lower()
    if not entry:
        return False
    if entry == "*":
        return True
    entry_host, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
    if entry_port and entry_port.isdigit() and int(entry_port) != port:
        return False
    entry_host = entry_host.strip("[]")
    try:
        network = ipaddress.ip_network(entry_host, strict=False)
    except ValueError:
        network = None
    if network is not None:
        try:
            return ipaddress.ip_address(host) in network
        except ValueError:
            return False
    # curl semantics: "example.com" and ".example.com" both match the domain and its subdomains.
    domain = entry_host.lstrip(".").lstrip("*.")
    return host == domain or host.endswith("." + domain)


def bypasses_proxy(profile: Profile) -> bool:
    host = profile.host.lower().strip("[]")
    return any(_no_proxy_matches(e, host, profile.port) for e in profile.no_proxy.split(","))


def proxy_url(profile: Profile) -> str | None:
    """The proxy URL (credentials included) to reach the relay, or None for a direct connection."""
    if not profile.proxy or bypasses_proxy(profile):
        return None
    return profile.proxy if "://" in profile.proxy else "http://" + profile.proxy


def proxy_credentials(proxy: str) -> tuple[str, str] | None:
    parts = urlsplit(proxy)
    if parts.username is None:
        return None
    return unquote(parts.username), unquote(parts.password or "")


def mask_url(url: str | None) -> str:
    """The URL with any password replaced by `***` (for printing effective configuration)."""
    if not url:
        return ""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def mask_secret(value: str) -> str:
    """Enough of a secret to tell two apart, never enough to use it."""
    if not value:
        return "(not set)"
    return f"{value[:6]}…{value[-2:]} ({len(value)} chars)" if len(value) > 12 else "***"


def ssl_context(profile: Profile) -> ssl.SSLContext:
    """System trust store (or `ca_bundle`); `verify_tls = false` is honoured but reported by doctor."""
    if not profile.verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cafile = str(Path(profile.ca_bundle).expanduser()) if profile.ca_bundle else None
    return ssl.create_default_context(cafile=cafile)


def dial_target(profile: Profile) -> tuple[str, int]:
    """Where a direct connection to the relay goes: `connect_to` when set, else the URL's host:port.

    `connect_to` is curl's --connect-to: the URL, Host header and TLS server name stay the relay's, only
    the address dialled changes (split DNS, a hosts-file-free lab, a relay behind a local port forward).
    Through a proxy it does not apply: the proxy resolves and dials the relay.
    """
    return _hostport(profile.connect_to) or (profile.host, profile.port)


class _SyncDialer:
    """Wraps an httpcore network backend so connections to the relay's host:port dial `target`."""

    def __init__(self, inner: object, origin: tuple[str, int], target: tuple[str, int]) -> None:
        self._inner, self._origin, self._target = inner, origin, target

    def connect_tcp(self, host: str, port: int, **kwargs: object) -> object:
        host, port = self._target if (host, port) == self._origin else (host, port)
        return self._inner.connect_tcp(host, port, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class _AsyncDialer(_SyncDialer):
    async def connect_tcp(self, host: str, port: int, **kwargs: object) -> object:
        host, port = self._target if (host, port) == self._origin else (host, port)
        return await self._inner.connect_tcp(host, port, **kwargs)


def apply_connect_to(transport: object, profile: Profile) -> object:
    """Make `transport` (an httpx HTTPTransport/AsyncHTTPTransport) honour `connect_to`; returns it."""
    if not profile.connect_to or proxy_url(profile):
        return transport
    pool = transport._pool  # httpx exposes no hook for this; the pool's backend is httpcore's documented seam
    dialer = _AsyncDialer if hasattr(pool, "__aenter__") else _SyncDialer
    pool._network_backend = dialer(pool._network_backend, (profile.host, profile.port), dial_target(profile))
    return transport
