"""CORS for browser tools (`[cors] allow_origins`): preflights answered without a token, answers marked.

Only listed origins get CORS headers, each echoed back exactly (never `*`), always with `Vary: Origin`.
`Access-Control-Allow-Credentials` is never sent: the relay uses no cookies (a browser tool sends its token
in `Authorization`, `x-api-key` or the path, which needs no credentials mode), so a page can never ride on
a user's ambient credentials. The provider's own `Access-Control-*` headers never reach the client
(headers.py): only this policy decides.
"""

from __future__ import annotations

import re

from .config_features import CorsSettings
from .http11 import Headers, Response

# Response headers a browser script may read: the SDKs' request ids and rate-limit headers.
EXPOSED = ", ".join(
    [
        "request-id",
        "x-request-id",
        "retry-after",
        "x-generation-id",
        "openai-processing-ms",
        "openai-version",
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ]
)
METHODS = "GET, POST, PUT, PATCH, DELETE"
_HEADER_LIST_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+){0,63}$")
VARY = ("Vary", "Origin")


def allowed(cors: CorsSettings, origin: str | None) -> bool:
    return bool(origin) and origin.lower() in cors.allow_origins  # type: ignore[union-attr]


def is_preflight(method: str, headers: Headers) -> bool:
    return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


def preflight(cors: CorsSettings, headers: Headers) -> Response:
    """204 with the grants for an allowed origin; 403 without any CORS header for any other."""
    origin = headers.get("Origin") or ""
    if not allowed(cors, origin):
        return Response(403, [VARY, ("Content-Type", "application/json")], _FORBIDDEN)
    grant = [("Access-Control-Allow-Origin", origin), VARY, ("Access-Control-Allow-Methods", METHODS)]
    requested = (headers.get("Access-Control-Request-Headers") or "").strip()
    if requested and _HEADER_LIST_RE.match(requested):
        grant.append(("Access-Control-Allow-Headers", requested))
    grant.append(("Access-Control-Max-Age", str(cors.max_age)))
    return Response(204, grant)


def answer_headers(cors: CorsSettings, origin: str | None) -> list[tuple[str, str]]:
    """Headers for an actual (non-preflight) answer; [] when CORS is off."""
    if not cors.allow_origins:
        return []
    if not allowed(cors, origin):
        return [VARY]
    return [("Access-Control-Allow-Origin", origin), VARY, ("Access-Control-Expose-Headers", EXPOSED)]  # type: ignore[list-item]


_FORBIDDEN = (
    b'{"error": {"message": "origin not allowed by this relay\'s [cors] allow_origins", '
    b'"type": "permission_error", "code": "cors_origin_not_allowed"}}'
)


def merge(headers: list[tuple[str, str]], extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` plus the pairs of `extra` not already among them. A buffered provider answer already
    carries the CORS headers (forward.py adds them to what it passes on), and the handler adds them to
    every answer: appended twice, a browser refuses the doubled `Access-Control-Allow-Origin`. Only exact
    pairs are skipped, so the provider's own `Vary: Accept-Encoding` still gets our `Vary: Origin`."""
    present = {(n.lower(), v) for n, v in headers}
    return [*headers, *(p for p in extra if (p[0].lower(), p[1]) not in present)]
