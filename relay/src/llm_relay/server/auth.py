"""Client authentication (token hashes, constant-time lookup) and the per-token rate limit."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Mapping

from llm_relay import tokens

TOKEN_HEADER = "X-Relay-Token"  # noqa: S105 - a header name


API_KEY_HEADER = "x-api-key"  # how Anthropic's SDKs (older ones) and Claude Code send a key


def token_from_headers(headers: Mapping[str, str]) -> str | None:
    """The client token from `Authorization: Bearer`, `X-Relay-Token` or `x-api-key`: the first present.

    None of them is ever forwarded (headers.py drops all three).
    """
    value = headers.get("Authorization")
    if value:
        scheme, _, cred = value.partition(" ")
        if scheme.lower() == "bearer" and cred.strip():
            return cred.strip()
    value = headers.get(TOKEN_HEADER) or headers.get(API_KEY_HEADER)
    return value.strip() if value else None


class TokenStore:
    """Token names by SHA-256 hash. Lookup compares the digest with every stored one in constant time.

    The presented token is hashed first, so timing could at most leak information about a hash, and the
    comparison loop never exits early, so it does not even leak that.
    """

    def __init__(self, hashes: Mapping[str, str]) -> None:
        self._entries = [(bytes.fromhex(h), name) for h, name in hashes.items()]

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str | None) -> str | None:
        if not token or len(token) > 256:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for stored, name in self._entries:
            if hmac.compare_digest(stored, digest):
                found = name
        if found is not None and not (
            len(token) == tokens.TOKEN_LENGTH and token.startswith(tokens.TOKEN_PREFIX)
        ):
            return None  # only well-formed tokens count (a stray hash line cannot open a weak token)
        return found


class RateLimiter:
    """Token bucket per client name: `per_minute` requests, bursting up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last refill time)

    def check(self, name: str, now: float | None = None) -> float:
        """0 when allowed (and counted); otherwise the seconds until the next request would be allowed."""
        rate = self.per_minute
        if rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        level, last = self._buckets.get(name, (float(rate), now))
        level = min(float(rate), level + (now - last) * rate / 60.0)
        if level >= 1.0:
            self._buckets[name] = (level - 1.0, now)
            return 0.0
        self._buckets[name] = (level, now)
        return (1.0 - level) * 60.0 / rate


def retry_after_header(wait: float) -> str:
    return str(max(1, math.ceil(wait)))
