"""Cloudflare Access in front of the relay: the service-token headers a profile sends, and how to tell an
Access refusal (Cloudflare's edge, before the relay) from the relay's own.

The headers travel OUTSIDE the envelope: the edge decides before anything reaches the homelab, and it cannot
open envelopes. So they are added to every request one layer below the relay transport (`wrap`, applied by
factory._route to each endpoint's own route): plain and sealed requests, doctor's probes, serve-local and
the library alike, each with the headers of the profile that route belongs to (a failover chain's
endpoints each have their own). A proxy that strips them defeats Access for this client; `doctor` says so.

What Cloudflare answers when Access refuses (lab/edge/access_gate.py has the sources): 403 "Forbidden" for
an application with Service Auth policies only, 401 when the application sets `service_auth_401_redirect`,
302 to `https://<team>/cdn-cgi/access/login/...` when it also has an identity policy. None of them is the
relay's JSON error ({"error": {...}}); all come from Cloudflare (`Server: cloudflare`, a `CF-RAY`).
"""

from __future__ import annotations

import json

from ._http import httpx
from .config import Profile

CLIENT_ID_HEADER = "CF-Access-Client-Id"
CLIENT_SECRET_HEADER = "CF-Access-Client-Secret"  # noqa: S105 - a header name
# Never sealed into an envelope (the relay has no use for them, and a secret is not copied further than it
# must go) and never taken from a caller's request in place of the profile's.
HEADER_NAMES = frozenset({"cf-access-client-id", "cf-access-client-secret", "cf-access-jwt-assertion"})
# Set on each response of a wrapped route: whether this request carried the service-token headers. The
# messages about a refusal depend on it, and the code that reports one holds the response, not the profile.
SENT = "llm_relay_access_headers_sent"
LOGIN_PATH = "/cdn-cgi/access/login"


def headers_for(profile: Profile) -> dict[str, str]:
    """The service-token headers of `profile` ({} when it has none)."""
    if not profile.access_client_id:
        return {}
    return {CLIENT_ID_HEADER: profile.access_client_id, CLIENT_SECRET_HEADER: profile.access_client_secret}


class _SyncAccess(httpx.BaseTransport):
    def __init__(self, inner: object, headers: dict[str, str]) -> None:
        self.inner, self._headers = inner, headers

    def handle_request(self, request: object) -> object:
        request.headers.update(self._headers)
        response = self.inner.handle_request(request)
        response.extensions[SENT] = bool(self._headers)
        return response

    def close(self) -> None:
        self.inner.close()


class _AsyncAccess(httpx.AsyncBaseTransport):
    def __init__(self, inner: object, headers: dict[str, str]) -> None:
        self.inner, self._headers = inner, headers

    async def handle_async_request(self, request: object) -> object:
        request.headers.update(self._headers)
        response = await self.inner.handle_async_request(request)
        response.extensions[SENT] = bool(self._headers)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def wrap(transport: object, profile: Profile) -> object:
    """`transport` (the route to the relay) adding `profile`'s service-token headers to every request."""
    kind = _AsyncAccess if isinstance(transport, httpx.AsyncBaseTransport) else _SyncAccess
    return kind(transport, headers_for(profile))


def _is_relay_error(body: bytes) -> bool:
    """The relay's own refusals are OpenAI-shaped: {"error": {...}}."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("error"), dict)


def from_cloudflare(response: object) -> bool:
    """Answered by Cloudflare's edge (which also carries the relay's own answers: not enough alone)."""
    return "cf-ray" in response.headers or response.headers.get("server", "").lower() == "cloudflare"


def refused_by_access(response: object, body: bytes) -> str | None:
    """How Cloudflare Access refused this request ("403 Forbidden", "302 to the Access login", ...), or
    None when the answer is not an Access refusal (the relay's, a proxy's, a success)."""
    status = response.status_code
    if status in (301, 302, 303, 307, 308):
        location = response.headers.get("location", "")
        return f"{status} to the Access login" if LOGIN_PATH in location else None
    if status not in (401, 403) or _is_relay_error(body) or not from_cloudflare(response):
        return None
    return "401 Unauthorized (service_auth_401_redirect)" if status == 401 else "403 Forbidden"


def headers_sent(response: object) -> bool | None:
    """Whether the request of `response` carried service-token headers; None if it did not pass `wrap`."""
    return response.extensions.get(SENT)


def refusal_message(response: object, body: bytes) -> str | None:
    """One line for `ask`, `serve-local`, `usage` and the library when Access refused; None otherwise."""
    how = refused_by_access(response, body)
    if how is None:
        return None
    said = f"Cloudflare Access refused the request before it reached the relay ({how})"
    if headers_sent(response):
        return (
            f"{said}, although this profile sent its service token: the token is wrong, revoked or not in "
            "the Access policy, or a proxy on the way strips the CF-Access-Client-Id/-Secret headers"
        )
    return f"{said}: this profile sends no service token; set access_client_id and access_client_secret_file"


def relay_access_denied(body: bytes) -> str | None:
    """The reason when the relay itself refused for want of a valid Access assertion (its [access]
    verification: 403 {"error": {"type": "access_denied", "code": <reason>}}), else None."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    if not isinstance(error, dict) or error.get("type") != "access_denied":
        return None
    return str(error.get("code") or "access_denied")[:64]


def relay_denied_message(body: bytes) -> str | None:
    """One line when the relay refused for want of a valid Access assertion; None otherwise."""
    reason = relay_access_denied(body)
    if reason is None:
        return None
    return (
        f"the relay refused the request: it carried no valid Cloudflare Access assertion ({reason}), so it "
        "did not pass Cloudflare Access: is `url` the relay's public hostname, covered by the Access "
        "application?"
    )
