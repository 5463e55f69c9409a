"""Which headers cross the relay, in each direction, and what a header or target must look like to cross.

Requests: only an allow-list of end-to-end headers reaches the provider (`FORWARDED`, `FORWARDED_PREFIXES`):
what an OpenAI-compatible API and its SDKs use. Everything else stays at the relay: credentials
(Authorization, X-Relay-Token, X-Api-Key, Cookie), who the client is (Forwarded, X-Forwarded-*, X-Real-Ip,
True-Client-Ip, Via, Cf-*: the edge's view of the client), hop-by-hop headers (RFC 9110 §7.6.1, plus those a
`Connection` header names) and whatever a future edge or client adds. A deny-list lets every new header
through; an allow-list fails closed. The relay sets Host, Content-Length and the provider's Authorization
itself.

Every name and value forwarded is checked against RFC 9110 (§5.1 name = token, §5.5 value = no CTL but
HTAB), and so is the request target (no whitespace, CTL, non-ASCII or fragment): llhttp already enforces
this for what arrives over HTTP, but envelope fields arrive as JSON strings and would otherwise reach the
pooled provider connection, which carries the provider key and other clients' requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import RelayError

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
# Request headers forwarded to the provider, by lower-case name.
FORWARDED = frozenset(
    {
        "accept",  # JSON or text/event-stream
        "accept-language",
        "content-type",  # JSON, multipart (audio/file uploads)
        "content-encoding",  # compressed request bodies are passed through, not decompressed
        "user-agent",  # SDK name and version: providers use it for support and compatibility
        "idempotency-key",  # lets the provider de-duplicate a client's retries
        "http-referer",  # OpenRouter app attribution (also settable per provider in relay.toml)
        "x-title",  # OpenRouter app attribution
        "x-request-id",  # client-chosen correlation ids, echoed in provider logs
        "x-client-request-id",
    }
)
# Name prefixes forwarded: API options of OpenAI (OpenAI-Beta, -Organization, -Project) and Anthropic
# (anthropic-version, anthropic-beta) and the Stainless SDKs' metadata (X-Stainless-Retry-Count,
# -Read-Timeout, ... which the provider uses to tell retries and timeouts apart).
FORWARDED_PREFIXES = ("openai-", "anthropic-", "x-stainless-")
# Headers today's coding agents send that were weighed and are NOT forwarded, each with the reason (from
# the providers' own documentation, checked 2026-12):
# - Claude Code `x-app`, `X-Claude-Code-Session-Id`: Anthropic's gateway protocol page for Claude Code
#   (code.claude.com/docs, "LLM gateway") lists `anthropic-beta` and `anthropic-version` as the request
#   headers a gateway must forward unchanged (both pass as `anthropic-*`); the session id is described as
#   there for proxies to group a session's requests, i.e. for a gateway to consume, not for the API. It
#   is also one stable identifier per session, which would link every request of a user upstream.
# - Codex `originator`, `session_id` / `session-id`, `thread-id`, `x-codex-*`: headers of the ChatGPT
#   backend Codex talks to when signed in with ChatGPT; OpenAI's API documents no use for them. Its prompt
#   caching routes by a hash of the prompt prefix, optionally steered by the `prompt_cache_key` body field
#   (developers.openai.com, "Prompt caching"), which passes untouched in the body.
DECLINED = frozenset(
    {"x-app", "x-claude-code-session-id", "originator", "session_id", "session-id", "thread-id"}
)
DECLINED_PREFIXES = ("x-codex-",)
# Response headers our HTTP server computes itself (http11.py: framing, Date, Server), and the provider's
# CORS grants: only the relay's own [cors] policy (cors.py) may let a browser page read an answer.
_RESPONSE_DROP = HOP_BY_HOP | {
    "content-length",
    "date",
    "server",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-expose-headers",
    "access-control-max-age",
}

# RFC 9110 §5.6.2 token: the only characters of a field name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: field-vchar / SP / HTAB (obs-text allowed); any other control character is refused.
_VALUE_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def valid_name(name: str) -> bool:
    return _TOKEN.fullmatch(name) is not None


def valid_value(value: str) -> bool:
    # Fast path first (printable ASCII: the usual value); the pattern handles HTAB and obs-text.
    return (value.isascii() and value.isprintable()) or _VALUE_CTL.search(value) is None


def check_target(target: str) -> str:
    """`target` (path and query) if it may go in a request line; otherwise 400. (isascii + isprintable
    is exactly \\x20-\\x7e, and runs in a fraction of a regex search's time: this is on every request.)"""
    if not (
        target[:1] == "/"
        and target.isascii()
        and target.isprintable()
        and " " not in target
        and "#" not in target
    ):
        raise RelayError(400, "invalid_path", "the path or query holds characters not allowed in HTTP")
    return target


def check_header(name: str, value: str) -> None:
    if not valid_name(name) or not valid_value(value):
        raise RelayError(
            400, "invalid_header", f"header {name[:64]!r} is not a valid HTTP field (RFC 9110 §5)"
        )


def _connection_tokens(value: str) -> set[str]:
    """The header names one `Connection` header value lists (they are hop-by-hop too)."""
    return {t.strip().lower() for t in value.split(",") if t.strip()}


# What to do with a header name, by the name as received (names repeat from request to request: the
# lower-casing, prefix tests and token check run once per distinct name, not once per header).
_FORWARD, _ENCODING, _CONNECTION, _OTHER = 1, 2, 3, 4
_KINDS: dict[str, int] = {}
_KINDS_MAX = 4096


def _kind(name: str) -> int:
    if not valid_name(name):
        raise RelayError(400, "invalid_header", f"header {name[:64]!r} is not a valid HTTP field name")
    low = name.lower()
    if low == "accept-encoding":
        kind = _ENCODING
    elif low in FORWARDED or low.startswith(FORWARDED_PREFIXES):
        kind = _FORWARD
    elif low == "connection":
        kind = _CONNECTION
    else:
        kind = _OTHER
    if len(_KINDS) < _KINDS_MAX:
        _KINDS[name] = kind
    return kind


def upstream_request_headers(client: Iterable[tuple[str, str]], envelope: bool) -> list[tuple[str, str]]:
    """The client headers to forward (before the relay adds Host, Authorization and its extras): the
    allow-listed ones, minus those a `Connection` header names, each checked against RFC 9110 (a bad one
    is a 400). An envelope's inner headers are all checked, forwarded or not: they come from JSON, and a
    client sending a broken one has a bug worth seeing. Plain headers were checked by llhttp already;
    the forwarded ones are checked again here, so nothing unchecked reaches the provider."""
    out = []
    named: set[str] | None = None
    kinds = _KINDS
    for name, value in client:
        kind = kinds.get(name) or _kind(name)
        if kind == _OTHER:
            if envelope and not valid_value(value):
                check_header(name, value)
            continue
        if not (value.isascii() and value.isprintable()) and not valid_value(value):
            check_header(name, value)
        if kind == _FORWARD:
            out.append((name, value))
        elif kind == _CONNECTION:
            named = (named or set()) | _connection_tokens(value)
        # The client's Accept-Encoding is replaced in both modes: the relay reads the usage from every
        # answer (a gzipped JSON answer counted 0 tokens against the budget: the unmodified OpenAI SDK
        # sends `Accept-Encoding: gzip`) and must see SSE event boundaries to seal each event.
    if named:
        out = [(n, v) for n, v in out if n.lower() not in named]
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
