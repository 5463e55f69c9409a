"""doctor's Cloudflare Access diagnosis: who refused, the edge or the relay, and why.

- Cloudflare Access refuses at the edge (access.refused_by_access: its 403 page, 401, or a 302 to the team's
  login) before the relay sees anything. With no service token in the profile the fix is to configure one.
  With one, either the token is not accepted or something on the way removed the headers: a corporate
  proxy can (with TLS inspection, or for a plain-http URL). When a proxy is configured, doctor repeats the
  refused probe once directly, without it: accepted there means the proxy strips the headers.
- The relay refuses with its own JSON (`{"error": {"type": "access_denied"}}`) when it verifies Access
  assertions and the request carried none: it reached the relay without passing Cloudflare Access.
"""

from __future__ import annotations

from typing import Any

from . import access
from ._http import httpx
from .config import Profile
from .doctor_net import Check
from .network import mask_secret, proxy_url

# The direct probe only runs after a refusal, to diagnose it: short, so a blocked direct route (the usual
# case behind a corporate proxy) costs seconds, not the profile's timeout.
DIRECT_PROBE_TIMEOUT = 5.0
CONFIGURE_HINT = (
    "the relay's hostname is behind Cloudflare Access: set access_client_id and access_client_secret_file "
    "(a 0600 file holding the secret) from the service token site.yml stored; see relay/docs/client.md"
)
CHECK_STRIPPING = (
    "check: run `llm-relay doctor --proxy ''` from a network without the proxy (accepted there = the proxy "
    "strips them), or look the request up in Cloudflare Zero Trust > Logs > Access (no service token "
    "logged = stripped)"
)
NOT_ACCEPTED_HINT = (
    "the token is wrong, revoked, expired or not in the application's Service Auth policy "
    "(rotate-credentials.yml renews the secret: copy the new one into access_client_secret_file)"
)


def describe(profile: Profile) -> str:
    """The service token line of the effective configuration (the secret masked)."""
    if not profile.access_client_id:
        return "(none: no Cloudflare Access service token)"
    return f"{profile.access_client_id}, secret {mask_secret(profile.access_client_secret)}"


def _body(response: Any) -> bytes:
    try:
        return response.content
    except httpx.ResponseNotRead:
        return b""


def _accepted_directly(profile: Profile, path: str) -> bool:
    """The same probe without the proxy: True when the edge accepted it (the headers arrived)."""
    from .factory import raw_http_client  # factory imports the transports: only needed on this path

    direct = profile.with_overrides(
        proxy="",
        timeout=min(profile.timeout, DIRECT_PROBE_TIMEOUT),
        connect_timeout=min(profile.connect_timeout, DIRECT_PROBE_TIMEOUT),
    )
    try:
        with raw_http_client(direct) as client:
            response = client.get(profile.root + path)
    except httpx.HTTPError:
        return False
    return access.refused_by_access(response, _body(response)) is None


def edge_refusal(profile: Profile, response: Any, name: str, path: str = "/healthz") -> Check | None:
    """The failed Check when Cloudflare Access refused `response`'s request at the edge, else None."""
    how = access.refused_by_access(response, _body(response))
    if how is None:
        return None
    ray = response.headers.get("cf-ray", "")
    detail = f"Cloudflare Access refused the request at the edge ({how}{', Ray ID ' + ray if ray else ''}); "
    detail += "it never reached the relay"
    if not profile.access_client_id:
        return Check(name, "fail", detail + ": this profile sends no service token", "access_token_missing",
                     CONFIGURE_HINT)  # fmt: skip
    detail += f", although CF-Access-Client-Id {profile.access_client_id} and its secret were sent"
    proxy = proxy_url(profile)
    if proxy is None:
        hint = f"no proxy is configured, so nothing on this side removes the headers: {NOT_ACCEPTED_HINT}"
        return Check(name, "fail", detail, "access_token_refused", hint)
    if _accepted_directly(profile, path):
        return Check(
            name,
            "fail",
            detail + " through the proxy; the same request without the proxy was let through: the proxy "
            "strips the CF-Access-Client-Id/-Secret headers",
            "access_headers_stripped",
            "ask for the proxy to pass CF-Access-* headers to the relay's host (or to exempt it from TLS "
            "inspection); the envelope cannot carry them, the edge must see them",
        )
    hint = "the corporate proxy may strip the CF-Access-Client-Id/-Secret headers (it can with TLS "
    hint += f"inspection or a plain-http url): {CHECK_STRIPPING}; if not, {NOT_ACCEPTED_HINT}"
    return Check(name, "fail", detail + " through the proxy", "access_token_refused", hint)


def relay_refusal(response: Any, name: str) -> Check | None:
    """The failed Check when the relay itself refused for want of a valid Access assertion, else None."""
    reason = access.relay_access_denied(_body(response))
    if reason is None:
        return None
    return Check(
        name,
        "fail",
        f"the relay refused the request: no valid Cloudflare Access assertion ({response.status_code} "
        f"access_denied: {reason}); Cloudflare Access let it through or it did not pass Cloudflare at all",
        "relay_access_denied",
        "the relay verifies Access assertions: use the public hostname as `url` (not the relay's own "
        "address or a connect_to around the edge), and check that the Access application covers it",
    )


def status(profile: Profile) -> Check:
    """After /healthz passed the edge: what that says about Access."""
    if not profile.access_client_id:
        return Check(
            "access", "skip", "no service token configured (fine unless Cloudflare Access guards url)"
        )
    return Check(
        "access", "ok", f"service token {profile.access_client_id} sent; the edge let the request through"
    )
