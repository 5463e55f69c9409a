"""Configured clients: an HTTP client that reaches the relay, and `openai.OpenAI` on top of it."""

from __future__ import annotations

from typing import Any

from . import access
from ._http import httpx
from .config import Profile, load_profile
from .network import apply_connect_to, proxy_url, ssl_context
from .transport import AsyncRelayTransport, RelayTransport

# The SDK insists on an API key; the relay holds the real one, and the transport drops this placeholder.
PLACEHOLDER_API_KEY = "relay-managed"


def _timeout(profile: Profile) -> Any:
    return httpx.Timeout(profile.timeout, connect=profile.connect_timeout)


def _route(profile: Profile, asynchronous: bool = False) -> Any:
    """The transport that carries bytes to the relay: proxy, TLS verification, `connect_to`, and the
    profile's Cloudflare Access service-token headers on every request (outside any envelope)."""
    kind = httpx.AsyncHTTPTransport if asynchronous else httpx.HTTPTransport
    transport = kind(verify=ssl_context(profile), proxy=proxy_url(profile), trust_env=False)
    return access.wrap(apply_connect_to(transport, profile), profile)


def http_client(profile: Profile) -> Any:
    """A synchronous client whose requests reach the relay (token added, envelope if encrypting)."""
    inner = _route(profile)
    return httpx.Client(transport=RelayTransport(profile, inner), timeout=_timeout(profile), trust_env=False)


def async_http_client(profile: Profile) -> Any:
    inner = _route(profile, asynchronous=True)
    return httpx.AsyncClient(
        transport=AsyncRelayTransport(profile, inner), timeout=_timeout(profile), trust_env=False
    )


def raw_http_client(profile: Profile) -> Any:
    """Same route (proxy, TLS) but no token and no envelope: for unauthenticated probes like /healthz."""
    return httpx.Client(transport=_route(profile), timeout=_timeout(profile), trust_env=False)


def _profile(profile: Profile | str | None, overrides: dict[str, Any]) -> Profile:
    if isinstance(profile, Profile):
        return profile.with_overrides(**overrides)
    return load_profile(profile, **overrides)


def openai_client(profile: Profile | str | None = None, *, max_retries: int = 2, **overrides: Any) -> Any:
    """An `openai.OpenAI` talking to the relay.

    `profile` is a Profile, a profile name from the config file, or None (LLM_RELAY_PROFILE / the file's
    default / the environment). `overrides` are Profile fields, e.g. `encrypt=True`, `timeout=60`.
    """
    import openai  # the client extra; imported here so keygen/doctor work without it

    resolved = _profile(profile, overrides)
    return openai.OpenAI(
        api_key=PLACEHOLDER_API_KEY,
        base_url=resolved.root + "/v1",
        http_client=http_client(resolved),
        max_retries=max_retries,
    )


def async_openai_client(
    profile: Profile | str | None = None, *, max_retries: int = 2, **overrides: Any
) -> Any:
    """An `openai.AsyncOpenAI` talking to the relay (same arguments as `openai_client`)."""
    import openai

    resolved = _profile(profile, overrides)
    return openai.AsyncOpenAI(
        api_key=PLACEHOLDER_API_KEY,
        base_url=resolved.root + "/v1",
        http_client=async_http_client(resolved),
        max_retries=max_retries,
    )
