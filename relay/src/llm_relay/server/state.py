"""Everything a request needs from the current settings, swapped as one object on SIGHUP.

A request takes the `RelayState` that is current when it starts and keeps it to the end, so a reload never
changes keys, limits or pools under a running request or stream.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from llm_relay import envelope, envelope_v2

from .access_jwt import AccessVerifier
from .auth import RateLimiter, TokenStore
from .config import ProviderSettings, Settings
from .replay import new_epoch
from .upstream import UpstreamPool


def without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class Provider:
    """A provider's settings, its keep-alive pool and its round-robin key cursor."""

    def __init__(self, settings: ProviderSettings, pool: UpstreamPool) -> None:
        self.settings = settings
        self.name = settings.name
        self.pool = pool
        self.base_path = settings.base_path
        # What GET /v1/providers shows: never the userinfo a base_url may carry (user:password@).
        self.public_base_url = without_userinfo(settings.base_url)
        self.extra_headers = list(settings.headers.items())
        self.auth_header = settings.auth_header
        self.auth_query = settings.auth_query
        # Client headers of these names are dropped: the provider's fixed headers and its auth header are
        # the relay's to set (a client's `x-goog-api-key` must never reach a provider that reads it).
        self.owned_headers = {n.lower() for n, _ in self.extra_headers}
        if self.auth_header:
            self.owned_headers.add(self.auth_header.lower())
        self._keys = settings.keys
        self._next = 0

    def next_key(self) -> str:
        key = self._keys[self._next % len(self._keys)]
        self._next += 1
        return key


class RelayState:
    def __init__(self, settings: Settings, previous: RelayState | None = None) -> None:
        self.settings = settings
        self.server = settings.server
        self.tokens = TokenStore(settings.token_hashes)
        # Envelope v1 (refused once `accept_v1 = false`): the shared keys, then each client's own key.
        v1_keys = settings.fernet_keys or settings.client_keys
        self.fernet: envelope.KeyRing | None = (
            envelope.make_fernet(settings.fernet_keys, settings.client_keys)
            if v1_keys and settings.accept_v1
            else None
        )
        # Envelope v2: one key per client, found by the key id the envelope carries.
        self.client_keys: envelope_v2.KeyTable | None = (
            envelope_v2.KeyTable(envelope_v2.ClientKey(k, n) for n, k in settings.client_keys)
            if settings.client_keys
            else None
        )
        # Limiter buckets and the replay window outlive reloads: a reload must not reset either.
        if previous is not None:
            self.limiter = previous.limiter
            self.limiter.per_minute = settings.rate_limit_per_minute
            self.replay = previous.replay
            self.replay.ttl = settings.envelope_ttl
            self.epoch = previous.epoch
        else:
            self.limiter = RateLimiter(settings.rate_limit_per_minute)
            self.replay = envelope.ReplayCache(settings.envelope_ttl)
            # This process's epoch (replay.py): a restart draws a new one, so older envelopes are refused.
            self.epoch = new_epoch()
        # Cloudflare Access (access_jwt.py): a reload with the same [access] keeps the cached team keys.
        self.access: AccessVerifier | None = None
        if settings.access.enabled:
            kept = previous.access if previous is not None else None
            same = kept is not None and kept.settings == settings.access
            self.access = kept if same else AccessVerifier(settings.access)
        old_pools = {p.pool.identity: p.pool for p in previous.providers.values()} if previous else {}
        self.providers: dict[str, Provider] = {}
        for name, ps in settings.providers.items():
            pool = old_pools.pop(ps.connection_identity(), None)
            if pool is None:
                pool = UpstreamPool(ps)
            else:
                pool.provider = ps  # same origin: keep warm connections, take new timeouts
                pool.max_idle = ps.max_idle_connections
            self.providers[name] = Provider(ps, pool)
        self.retired_pools = list(old_pools.values())
        # What a path prefix resolves to: an ordered list of (provider, model) to try. A provider's own
        # name never falls back; a [routes.NAME] table lists several.
        self.targets: dict[str, list[tuple[Provider, str]]] = {
            name: [(p, "")] for name, p in self.providers.items()
        }
        for name, route in settings.routes.items():
            self.targets[name] = [(self.providers[a.provider], a.model) for a in route.attempts]
        self.default_name = settings.server.default_provider
        self.default_target = self.targets[self.default_name]
        self.default_provider = self.default_target[0][0]

    def close_retired(self) -> None:
        for pool in self.retired_pools:
            pool.close()
        self.retired_pools = []

    def close(self) -> None:
        for p in self.providers.values():
            p.pool.close()
