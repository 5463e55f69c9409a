"""Which headers cross the relay, in each direction.

Hop-by-hop headers (RFC 9110 §7.6.1, plus those a `Connection` header names) never cross. The client's
credentials never reach the provider, and the provider never sees who the client is beyond what the client
itself put in end-to-end headers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers the relay sets itself or must not forward.
_REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    "x-relay-token",
    "cookie",
    "expect",
    "x-api-key",
    "api-key",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "cf-connecting-ip",
    "cf-ray",
    "cf-ipcountry",
    "cf-visitor",
    "cdn-loop",
}
# Response headers our HTTP server computes itself (http11.py: framing, Date, Server).
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "date", "server"}


def _connection_tokens(value: str) -> set[str]:
    """The header names one `Connection` header value lists (they are hop-by-hop too)."""
    return {t.strip().lower() for t in value.split(",") if t.strip()}


def _connection_named(pairs: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in pairs:
        if name.lower() == "connection":
            named |= _connection_tokens(value)
    return named


def upstream_request_headers(client: Iterable[tuple[str, str]], envelope: bool) -> list[tuple[str, str]]:
    """End-to-end client headers to forward (before the relay adds Host, Authorization and its extras)."""
    pairs = list(client)
    named = _connection_named(pairs)
    out = []
    for name, value in pairs:
        low = name.lower()
        if low in _REQUEST_DROP or low in named:
            continue
        if envelope and low == "accept-encoding":
            continue  # the relay must see SSE event boundaries to seal each event: ask for identity
        out.append((name, value))
    if envelope:
        out.append(("Accept-Encoding", "identity"))
    return out


_RESPONSE_DROP_BYTES = frozenset(n.encode() for n in _RESPONSE_DROP)


def client_response_headers(upstream: Iterable[tuple[bytes, bytes]]) -> tuple[list[tuple[str, str]], str]:
    """Provider response headers to pass back (Retry-After, X-Generation-Id, rate-limit headers...), and
    the response's Content-Type. One pass on the raw pairs: this runs on every request."""
    out: list[tuple[str, str]] = []
    named: set[str] = set()
    content_type = ""
    for raw_name, raw_value in upstream:
        low = raw_name.lower()
        if low in _RESPONSE_DROP_BYTES:
            if low == b"connection":
                named |= _connection_tokens(raw_value.decode("latin-1"))
            continue
        value = raw_value.decode("latin-1")
        if low == b"content-type" and not content_type:
            content_type = value
        out.append((raw_name.decode("latin-1"), value))
    if named:
        out = [(n, v) for n, v in out if n.lower() not in named]
    return out, content_type


def as_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as a JSON object for an envelope (repeated names joined with ', ', as RFC 9110 allows)."""
    out: dict[str, str] = {}
    for n, v in pairs:
        out[n] = f"{out[n]}, {v}" if n in out else v
    return out


def from_mapping(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    return list(headers.items())
