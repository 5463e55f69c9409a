"""Cloudflare Access at the lab edge, for self-hosted applications with service-token (Service Auth) policies.

For each visitor request the edge asks the Cloudflare emulator's Access state which self-hosted application
covers `host + path` (Cloudflare's application paths: "the more specific rule takes precedence", a path
covers its sub-paths, `*` matches one label in a hostname and anything in a path; cloudflare-docs
cloudflare-one/access-controls/policies/app-paths.mdx). No application → the request goes on untouched, as
before Access existed. Otherwise:
- a Bypass policy including everyone → forwarded untouched ("disables Access enforcement", policies/index),
  and so is a CORS preflight when the application has `options_preflight_bypass`;
- `CF-Access-Client-Id` + `CF-Access-Client-Secret` naming an enabled, unexpired service token (its current
  secret, or the previous one until `previous_client_secret_expires_at`) that a Service Auth policy of the
  application includes → forwarded with `Cf-Access-Jwt-Assertion`;
- anything else is refused here and never reaches a connector (below).

Refusals, by what Cloudflare is reported to answer (its documentation does not print the pages):
- `service_auth_401_redirect` on → **401** (the API schema: "Returns a 401 status code when the request is
  blocked by a Service Auth policy");
- the application has an identity (Allow) policy → **302** to the team's login,
  `https://<team domain>/cdn-cgi/access/login/<host>?kid=<aud>&redirect_url=<path>` (the URL form is the one
  in cloudflare/cloudflared#1637; "an Allow policy 302s the token to login": martymcenroe/AssemblyZero#1663);
- Service Auth policies only → **403** "Forbidden" ("If not, Cloudflare returns a 403": rahulmx.com
  gists/cloudflare-non-identity; the same three cases are listed by public operator guides). The page's
  exact wording is not public; ours names the refusal, the host and the Ray ID.

The token (cloudflare-one … authorization-cookie/application-token.mdx, "Service token authentication"):
`{"type": "app", "aud": [<application aud>], "exp", "iss": <team domain URL>, "common_name": <client id>,
"iat", "sub": ""}`, RS256 with the team key (access_keys.py). Its lifetime is the application's
`session_duration`. The service-token headers are not passed to the origin: the secret has done its job at
the edge and an origin (or its logs) never needs it; Cloudflare does not document either way, so the lab
takes the safe side. A `Cf-Access-Jwt-Assertion` sent by the visitor is replaced, never passed on.
"""

import html
import json
import re
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from lab.cloudflare import access
from lab.edge.access_keys import AccessSigner

CLIENT_ID = "cf-access-client-id"
CLIENT_SECRET = "cf-access-client-secret"
ASSERTION = "cf-access-jwt-assertion"
STRIPPED = {CLIENT_ID, CLIENT_SECRET, ASSERTION}
CERTS_PATH = "/cdn-cgi/access/certs"


def _host_pattern(domain_host: str) -> re.Pattern:
    # `*` stands for one label (or part of one): "*.example.com" does not cover "foo.bar.example.com".
    return re.compile("[^.]*".join(re.escape(part) for part in domain_host.split("*")))


def _path_pattern(domain_path: str) -> re.Pattern:
    # A path covers itself and what is below it ("dashboard.com/eng" → "/eng/exec"); `*` spans segments.
    body = ".*".join(re.escape(part) for part in ("/" + domain_path).split("*"))
    return re.compile(body + "(/.*)?")


def specificity(domain: str, host: str, path: str) -> tuple[int, int] | None:
    """How specifically `domain` (an application's `host[/path]`) covers host + path; None if it does not."""
    domain_host, _, domain_path = domain.partition("/")
    if not _host_pattern(domain_host.lower().rstrip(".")).fullmatch(host):
        return None
    if domain_path.strip("/") in ("", "*"):
        return ("*" not in domain_host, 0)
    if not _path_pattern(domain_path.rstrip("/")).fullmatch(path):
        return None
    return ("*" not in domain_host, len(domain_path))


def application_for(store, host: str, path: str) -> dict[str, Any] | None:
    """The self-hosted application covering host + path, the most specific one when several do."""
    host = host.lower().rstrip(".")
    best, best_rank = None, None
    for app in access.ordered(access.objects(store, "apps")):
        for domain in app["self_hosted_domains"]:
            rank = specificity(domain, host, path)
            if rank is not None and (best_rank is None or rank > best_rank):
                best, best_rank = app, rank
    return best


def _policies(store, app: dict[str, Any]) -> list[dict[str, Any]]:
    found = (access.objects(store, "policies").get(link["id"]) for link in app["policies"])
    return [policy for policy in found if policy is not None]


class AccessGate:
    """What the edge's client side asks before routing a request; holds the team's signing key."""

    def __init__(self, signer: AccessSigner, team_domain: str):
        self.signer = signer
        self.team_domain = team_domain.lower()
        self.issuer = f"https://{self.team_domain}"

    def set_port(self, port: int) -> None:
        """The issuer is the URL the certs are fetched under (`<iss>/cdn-cgi/access/certs`), port included
        when the lab edge is not on 443."""
        self.issuer = f"https://{self.team_domain}" + ("" if port == 443 else f":{port}")

    def team_endpoint(self, request: web.Request, ray: str) -> web.Response:
        headers = {"Server": "cloudflare", "CF-RAY": ray}
        if request.path == CERTS_PATH and request.method in ("GET", "HEAD"):
            return web.json_response(self.signer.certs(), headers=headers)
        return web.Response(status=404, text="Not Found", headers=headers)

    def check(self, store, request: web.Request, host: str, ray: str):
        """(refusal, None) | (None, headers to add: a token) | (None, None): no application, or bypassed."""
        if store is None:
            return None, None
        app = application_for(store, host, request.path)
        if app is None:
            return None, None
        policies = _policies(store, app)
        # `options_preflight_bypass` (API schema: "Allows options preflight requests to bypass Access
        # authentication and go directly to the origin"): a CORS preflight carries no credentials.
        preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        if preflight and app.get("options_preflight_bypass"):
            return None, None
        if any(p["decision"] == "bypass" and any("everyone" in r for r in p["include"]) for p in policies):
            return None, None
        client_id = request.headers.get(CLIENT_ID, "")
        secret = request.headers.get(CLIENT_SECRET, "")
        token = access.service_token_for(store, client_id, secret) if client_id and secret else None
        if token is not None and access.app_admits_token(store, app, token):
            return None, [(ASSERTION, self.token_for(app, token))]
        return self.refusal(request, app, policies, host, ray), None

    def token_for(self, app: dict[str, Any], token: dict[str, Any]) -> str:
        now = int(time.time())
        lifetime = int(access.duration_seconds(app.get("session_duration", "24h"))) or 1
        claims = {
            "type": "app",
            "aud": [app["aud"]],
            "exp": now + lifetime,
            "iss": self.issuer,
            "common_name": token["client_id"],
            "iat": now,
            "sub": "",
        }
        return self.signer.sign(claims)

    def refusal(self, request, app, policies, host: str, ray: str) -> web.Response:
        headers = {"Server": "cloudflare", "CF-RAY": ray, "Cache-Control": "private, max-age=0, no-store"}
        if app.get("service_auth_401_redirect"):
            status, title = 401, "Unauthorized"
        elif any(p["decision"] == "allow" for p in policies):
            target = f"{self.issuer}/cdn-cgi/access/login/{host}?kid={app['aud']}"
            target += "&redirect_url=" + quote(request.path_qs, safe="")
            return web.Response(status=302, headers={**headers, "Location": target})
        else:
            status, title = 403, "Forbidden"
        safe_host = html.escape(host)
        if "application/json" in request.headers.get("Accept", ""):
            body = {"status": status, "title": title, "host": host, "ray_id": ray}
            return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                                headers=headers)  # fmt: skip
        page = (
            f"<!DOCTYPE html><html><head><title>{title} | {safe_host} | Cloudflare Access</title></head>"
            f"<body><h1>{title}</h1><p>You don't have permission to view {safe_host}: Cloudflare Access "
            f"requires a valid service token.</p><p>Ray ID: {ray}</p>"
            "<p>Served by the llm-relay lab edge (in place of Cloudflare Access).</p></body></html>"
        )
        return web.Response(status=status, text=page, content_type="text/html", headers=headers)
