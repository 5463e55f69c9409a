"""Cloudflare Access at the relay: every request must carry the edge's `Cf-Access-Jwt-Assertion`.

With an Access application in front of the public hostname, Cloudflare's edge lets a request through only
with a valid service token, and adds `Cf-Access-Jwt-Assertion`: an RS256 JWT signed with the team's key
(Cloudflare's docs, cloudflare-one ... authorization-cookie/validating-json and application-token). The relay
checks it too (defence in depth, relay/docs/config.md `[access]`): a request that reaches the relay by any
other path -- the LAN, a misconfigured ingress, a tunnel hostname without the Access application -- is
refused as well.

The check runs in the admission stage (app.RelayApp.admit, called when the request head is complete), so
a refused peer never gets to send a body, and it is synchronous: RSA verification takes tens of
microseconds. The team's keys (`https://<team_domain>/cdn-cgi/access/certs`, a JWKS under `keys`) are
fetched in the background and cached:
- at start (runner.py) and whenever the cache is older than REFRESH_SECONDS (Cloudflare rotates its key
  every six weeks and publishes the old and the new one side by side);
- when a token names a kid the cache does not hold -- at most one fetch per REFETCH_SECONDS, whatever
  the requests say, so an attacker sending random kids cannot make the relay fetch in a loop. While that
  fetch runs, such a request gets 503 + Retry-After (it may be a real new key); once it is done, an
  unknown kid is a 403.
A fetch that failed leaves the cached keys in use; with none at all, every request gets 503.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import ssl
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from llm_relay import __version__

from .config_features import AccessSettings
from .errors import RelayError

log = logging.getLogger("llm_relay.server")

ASSERTION_HEADER = "Cf-Access-Jwt-Assertion"
LEEWAY_SECONDS = 60  # clock skew tolerated on exp / nbf / iat (the edge's clock is not ours)
REFRESH_SECONDS = 3600  # cached keys older than this are fetched again (in the background)
REFETCH_SECONDS = 10  # at most one fetch per this many seconds, whatever the requests carry
FETCH_TIMEOUT = 5.0  # seconds for one certs fetch (per socket operation, and for the whole fetch x2)
MAX_CERTS_BYTES = 256 * 1024  # Cloudflare's certs document is ~3 KB; anything far larger is refused
MAX_KEYS = 16  # keys taken from one certs document (Cloudflare publishes two)
MAX_TOKEN_BYTES = 6144  # an Access token is ~1 KB (a user's, with identity claims, a few KB); larger is none
MIN_RSA_BITS = 2048
ACCESS_DENIED = "access_denied"


def refusal(reason: str, message: str) -> RelayError:
    """403 with `type: access_denied`; `code` is the reason (also the metric's label)."""
    return RelayError(403, reason, message, error_type=ACCESS_DENIED)


def unavailable(reason: str, message: str) -> RelayError:
    return RelayError(503, reason, message, {"Retry-After": str(REFETCH_SECONDS)}, error_type=ACCESS_DENIED)


def _b64url(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise refusal("malformed_assertion", "Cf-Access-Jwt-Assertion is not a JWT") from None


def _json_part(part: str) -> dict[str, Any]:
    try:
        doc = json.loads(_b64url(part))
    except (UnicodeDecodeError, ValueError):
        raise refusal("malformed_assertion", "Cf-Access-Jwt-Assertion is not a JWT") from None
    if not isinstance(doc, dict):
        raise refusal("malformed_assertion", "Cf-Access-Jwt-Assertion is not a JWT")
    return doc


def _jwk_int(jwk: dict[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"key member {name!r} missing")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def parse_certs(body: bytes) -> dict[str, rsa.RSAPublicKey]:
    """The RS256 signing keys of a certs document, by kid. Its `public_cert(s)` hold the same keys as
    certificates; the JWKS alone is enough (and is what Cloudflare's own examples verify against)."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("no `keys` list")
    keys: dict[str, rsa.RSAPublicKey] = {}
    for jwk in doc["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("alg", "RS256") != "RS256":
            continue  # another key type or algorithm: never used for RS256
        if jwk.get("use", "sig") != "sig" or not isinstance(jwk.get("kid"), str):
            continue
        key = rsa.RSAPublicNumbers(_jwk_int(jwk, "e"), _jwk_int(jwk, "n")).public_key()
        if key.key_size < MIN_RSA_BITS:
            continue
        keys[jwk["kid"]] = key
    if not keys:
        raise ValueError("no RS256 signing key")
    return keys


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # The certs are fetched from exactly the configured URL: a redirect (possibly to http) is a failure.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_certs(url: str, ca_file: str, timeout: float = FETCH_TIMEOUT) -> bytes:
    """GET the certs document (blocking: run in a thread). No proxy from the environment: the relay
    reaches the team domain directly, like its providers unless they name a proxy."""
    context = ssl.create_default_context(cafile=ca_file or None)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context), _NoRedirect()
    )
    if not url.startswith("https://"):
        raise ValueError("the certs URL must be https://")  # config.py checks it too; never file: or http:
    request = urllib.request.Request(  # noqa: S310 - https only, checked above
        url, headers={"Accept": "application/json", "User-Agent": f"llm-relay/{__version__}"}
    )
    with opener.open(request, timeout=timeout) as response:
        body = response.read(MAX_CERTS_BYTES + 1)
    if len(body) > MAX_CERTS_BYTES:
        raise ValueError(f"certs document over {MAX_CERTS_BYTES} bytes")
    return body


class AccessVerifier:
    """Checks `Cf-Access-Jwt-Assertion` against one [access] setting; holds the team's keys."""

    def __init__(
        self,
        settings: AccessSettings,
        fetch: Callable[[str, str], bytes] = fetch_certs,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.audiences = frozenset(settings.audiences)
        self._fetch = fetch
        self._clock, self._wall = clock, wall
        self.keys: dict[str, rsa.RSAPublicKey] = {}
        self.fetched_at: float | None = None  # clock() of the last successful fetch
        self.attempted_at: float | None = None  # clock() of the last fetch started
        self.last_failed = False
        self.task: asyncio.Task | None = None
        self.fetch_results: Counter[str] = Counter()  # ok / failed: llm_relay_access_cert_fetches_total

    # --- the keys ---
    @property
    def fetching(self) -> bool:
        return self.task is not None and not self.task.done()

    async def refresh(self) -> bool:
        """Fetch the keys now (the caller bounds how often); True when they were replaced."""
        self.attempted_at = self._clock()
        url = self.settings.keys_url
        try:
            body = await asyncio.wait_for(
                asyncio.to_thread(self._fetch, url, self.settings.ca_file), FETCH_TIMEOUT * 2
            )
            keys = parse_certs(body)
        except Exception as exc:
            # Whatever broke (network, TLS, HTTP status or framing, JSON, a key) is a failed fetch: the
            # cached keys stay, and the task never ends with an exception nobody retrieves.
            self.last_failed = True
            self.fetch_results["failed"] += 1
            log.warning(
                "Access certs fetch failed",
                extra={"fields": {"url": url, "error": f"{exc.__class__.__name__}: {str(exc)[:200]}"}},
            )
            return False
        self.keys, self.fetched_at, self.last_failed = keys, self._clock(), False
        self.fetch_results["ok"] += 1
        log.info("Access certs fetched", extra={"fields": {"url": url, "kids": sorted(keys)}})
        return True

    def _may_fetch(self) -> bool:
        return not self.fetching and (
            self.attempted_at is None or self._clock() - self.attempted_at >= REFETCH_SECONDS
        )

    def kick(self) -> bool:
        """Start a background fetch if none runs and the last one started REFETCH_SECONDS ago or more;
        True when one is running afterwards."""
        if self._may_fetch():
            self.attempted_at = self._clock()  # before the task runs: a burst starts one fetch only
            self.task = asyncio.get_running_loop().create_task(self.refresh())
        return self.fetching

    # --- the check ---
    def _key(self, kid: Any) -> rsa.RSAPublicKey:
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is not None:
            if self.fetched_at is not None and self._clock() - self.fetched_at >= REFRESH_SECONDS:
                self.kick()  # stale: refreshed in the background, the cached keys still serve
            return key
        if not self.keys or self.last_failed:
            # Nothing to verify with, or the team's current keys are unknown: the client may retry.
            self.kick()
            raise unavailable("access_certs_unavailable", "the Cloudflare Access certs could not be fetched")
        if isinstance(kid, str) and self.kick():
            raise unavailable("access_certs_refreshing", "unknown key id: fetching the team's certs again")
        raise refusal("unknown_key_id", f"{ASSERTION_HEADER} is signed by a key the team does not publish")

    def check(self, token: str | None) -> dict[str, Any]:
        """The token's claims when it is valid for this relay; RelayError (403 access_denied, or 503 while
        the keys are unavailable) otherwise."""
        if not token:
            raise refusal("missing_assertion", f"{ASSERTION_HEADER} is required (Cloudflare Access)")
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise refusal("malformed_assertion", f"{ASSERTION_HEADER} is not a JWT")
        head_b64, claims_b64, signature_b64 = token.split(".")
        header = _json_part(head_b64)
        # Only RS256, whatever the token says: `none` and HS256 (keyed with the public key) are the classic
        # JWT forgeries.
        if header.get("alg") != "RS256":
            raise refusal("bad_algorithm", f"{ASSERTION_HEADER} must be signed with RS256")
        key = self._key(header.get("kid"))
        try:
            key.verify(
                _b64url(signature_b64),
                f"{head_b64}.{claims_b64}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, UnicodeEncodeError):
            raise refusal("bad_signature", f"{ASSERTION_HEADER} signature does not verify") from None
        claims = _json_part(claims_b64)
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        if claims.get("iss") != self.settings.issuer:
            raise refusal("wrong_issuer", f"{ASSERTION_HEADER} was issued by another team")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in self.audiences for a in auds):
            raise refusal("wrong_audience", f"{ASSERTION_HEADER} is for another Access application")
        now = self._wall()
        exp = claims.get("exp")
        if not _number(exp) or now > exp + LEEWAY_SECONDS:
            raise refusal("expired", f"{ASSERTION_HEADER} has expired (or has no exp)")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is not None and (not _number(value) or value > now + LEEWAY_SECONDS):
                raise refusal("not_yet_valid", f"{ASSERTION_HEADER} is not valid yet ({name})")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
