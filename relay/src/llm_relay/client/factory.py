"""Configured clients: an HTTP client that reaches the relay, and `openai.OpenAI` on top of it."""

from __future__ import annotations

from typing import Any

from . import access
from ._http import httpx
from .config import Profile, load_profile
from .failover import AsyncDirectTransport, AsyncFailoverTransport, DirectTransport, FailoverTransport
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


def _endpoint(profile: Profile, asynchronous: bool, raw: bool) -> Any:
    """The transport for one endpoint: its own route, and its own codec (envelope keys, epochs)."""
    route = _route(profile, asynchronous)
    if raw:
        return route
    if profile.kind != "relay":
        return (AsyncDirectTransport if asynchronous else DirectTransport)(profile, route)
    return (AsyncRelayTransport if asynchronous else RelayTransport)(profile, route)


def _transport(profile: Profile, asynchronous: bool = False, raw: bool = False) -> Any:
    """The profile's endpoint, or, with a `failover` list, every endpoint behind one FailoverTransport."""
    main = _endpoint(profile, asynchronous, raw)
    if not profile.fallbacks:
        return main
    endpoints = [(profile, main)] + [(fb, _endpoint(fb, asynchronous, raw)) for fb in profile.fallbacks]
    return (AsyncFailoverTransport if asynchronous else FailoverTransport)(profile, endpoints)


def http_client(profile: Profile) -> Any:
    """A synchronous client whose requests reach the relay (token added, envelope if encrypting), or the
    next endpoint of the profile's `failover` list when it cannot answer."""
    return httpx.Client(transport=_transport(profile), timeout=_timeout(profile), trust_env=False)


def async_http_client(profile: Profile) -> Any:
    return httpx.AsyncClient(
        transport=_transport(profile, asynchronous=True), timeout=_timeout(profile), trust_env=False
    )


def raw_http_client(profile: Profile) -> Any:
    """Same route (proxy, TLS, failover) but no token and no envelope: for unauthenticated probes like
    /healthz."""
    return httpx.Client(transport=_transport(profile, raw=True), timeout=_timeout(profile), trust_env=False)


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
