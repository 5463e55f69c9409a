"""Cloudflare Access at the lab edge: service-token-only applications refused or admitted at the edge, the
team's certs, the JWT the origin receives (verified with `cryptography` against the published JWKS).

In-process emulator + edge on port 0 (lab/edge/harness.py); the real cloudflared where a request must reach an
origin. Secrets are never put in an assertion's operands (a failing assert prints them)."""

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from lab.edge.access_gate import application_for
from lab.edge.access_keys import KEY_FILE, AccessSigner
from lab.edge.harness import ACCOUNT

from .support import Cloudflared, client_session, get, ingress

HOST = "guarded.lab.test"
TEAM = "team.lab.test"
BASE = f"/accounts/{ACCOUNT}/access"


async def service_token(env, name="edge-access"):
    """(token id, client id, client secret)."""
    tok = await env.api.call("POST", f"{BASE}/service_tokens", json={"name": name})
    return tok["id"], tok["client_id"], tok["client_secret"]


async def protect(env, domain, token_id, decision="non_identity", **app_fields):
    include = [{"service_token": {"token_id": token_id}}]
    body = {"name": f"{decision}-{domain}", "decision": decision, "include": include}
    policy = await env.api.call("POST", f"{BASE}/policies", json=body)
    body = {"type": "self_hosted", "domain": domain, "policies": [policy["id"]], **app_fields}
    return await env.api.call("POST", f"{BASE}/apps", json=body)


async def started(env, origin):
    tunnel_id, token = await env.api.create_tunnel("edge-access")
    await env.api.put_config(tunnel_id, ingress(origin.port, HOST))
    await env.api.route(HOST, tunnel_id)
    cloudflared = await Cloudflared.start(env.connector_port, env.ca_path, token=token, connections=1)
    await cloudflared.wait_for(r"INF Registered tunnel connection connIndex=0")
    return cloudflared


def b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verified_claims(jwt: str, certs: dict, aud: str, iss: str) -> dict:
    """An independent RS256 check: the key from the JWKS by kid, then aud, iss, exp, iat."""
    head_b64, body_b64, sig_b64 = jwt.split(".")
    header = json.loads(b64(head_b64))
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    (jwk,) = [k for k in certs["keys"] if k["kid"] == header["kid"]]
    numbers = rsa.RSAPublicNumbers(int.from_bytes(b64(jwk["e"])), int.from_bytes(b64(jwk["n"])))
    key = numbers.public_key()
    key.verify(b64(sig_b64), f"{head_b64}.{body_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    cert = x509.load_pem_x509_certificate(certs["public_cert"]["cert"].encode())
    assert cert.public_key().public_numbers() == numbers and certs["public_cert"]["kid"] == jwk["kid"]
    claims = json.loads(b64(body_b64))
    now = time.time()
    assert claims["aud"] == [aud] and claims["iss"] == iss
    assert claims["iat"] <= now + 5 < claims["exp"]
    return claims


async def test_service_token_only_app_is_enforced_at_the_edge(edge, origin):
    token_id, client_id, secret = await service_token(edge)
    app = await protect(edge, HOST, token_id)
    cloudflared = await started(edge, origin)
    try:
        # No token, a wrong secret, an unknown id: Cloudflare's 403, and the origin sees nothing.
        status, page, headers = await get(edge, "/hello", HOST)
        assert status == 403 and "Forbidden" in page and headers["Server"] == "cloudflare"
        assert (await get(edge, "/hello", HOST, **{"CF-Access-Client-Id": client_id}))[0] == 403
        wrong = {"CF-Access-Client-Id": client_id, "CF-Access-Client-Secret": "0" * 64}
        assert (await get(edge, "/hello", HOST, **wrong))[0] == 403
        other = {"CF-Access-Client-Id": "f" * 32 + ".access", "CF-Access-Client-Secret": secret}
        assert (await get(edge, "/hello", HOST, **other))[0] == 403
        assert origin.seen_headers == []

        # The valid token: forwarded with a JWT that verifies against the published certs.
        good = {"CF-Access-Client-Id": client_id, "CF-Access-Client-Secret": secret}
        forged = {"Cf-Access-Jwt-Assertion": "visitor.made.this"}
        status, text, _ = await get(edge, "/hello", HOST, **good, **forged)
        assert status == 200 and text.startswith("hello from origin")
        (seen,) = origin.seen_headers
        status, certs_text, _ = await get(edge, "/cdn-cgi/access/certs", TEAM)
        assert status == 200
        issuer = f"https://{TEAM}:{edge.edge.client_port}"
        claims = verified_claims(seen["Cf-Access-Jwt-Assertion"], json.loads(certs_text), app["aud"], issuer)
        assert claims["common_name"] == client_id and claims["type"] == "app" and claims["sub"] == ""
        head, _, sig = seen["Cf-Access-Jwt-Assertion"].split(".")
        other_aud = base64.urlsafe_b64encode(json.dumps({**claims, "aud": ["x"]}).encode()).decode()
        with pytest.raises(InvalidSignature):  # the check above would notice a changed claim
            verified_claims(f"{head}.{other_aud.rstrip('=')}.{sig}", json.loads(certs_text), "x", issuer)
        leaked = any(secret in value for value in seen.values())
        assert not leaked and "Cf-Access-Client-Secret" not in seen and "Cf-Access-Client-Id" not in seen
    finally:
        await cloudflared.stop()


async def test_rotation_grace_and_deleted_app(edge, origin):
    token_id, client_id, old = await service_token(edge)
    app = await protect(edge, HOST, token_id)
    later = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rotated = await edge.api.call(
        "POST", f"{BASE}/service_tokens/{token_id}/rotate", json={"previous_client_secret_expires_at": later}
    )
    new = rotated["client_secret"]
    cloudflared = await started(edge, origin)
    try:
        for secret in (old, new):  # during the grace both secrets are admitted
            headers = {"CF-Access-Client-Id": client_id, "CF-Access-Client-Secret": secret}
            assert (await get(edge, "/hello", HOST, **headers))[0] == 200
        past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        await edge.api.call(
            "PUT", f"{BASE}/service_tokens/{token_id}", json={"previous_client_secret_expires_at": past}
        )
        seen = len(origin.seen_headers)
        assert (await get(edge, "/hello", HOST, **{"CF-Access-Client-Id": client_id,
                                                  "CF-Access-Client-Secret": old}))[0] == 403  # fmt: skip
        assert len(origin.seen_headers) == seen
        assert (await get(edge, "/hello", HOST, **{"CF-Access-Client-Id": client_id,
                                                  "CF-Access-Client-Secret": new}))[0] == 200  # fmt: skip
        # The application deleted: the hostname is open again, and the origin gets no Access header.
        await edge.api.call("DELETE", f"{BASE}/apps/{app['id']}")
        status, _, _ = await get(edge, "/hello", HOST)
        assert status == 200 and "Cf-Access-Jwt-Assertion" not in origin.seen_headers[-1]
    finally:
        await cloudflared.stop()


async def test_refusals_come_before_routing_and_follow_the_app_settings(edge):
    """No connector at all: an admitted request gets the tunnel's 1033, a refused one Access's answer."""
    token_id, client_id, secret = await service_token(edge)
    tunnel_id, _ = await edge.api.create_tunnel("edge-access-none")
    await edge.api.route(HOST, tunnel_id)
    await protect(edge, HOST, token_id)
    good = {"CF-Access-Client-Id": client_id, "CF-Access-Client-Secret": secret}
    status, page, _ = await get(edge, "/", HOST, **good)
    assert status == 530 and "Error 1033" in page
    status, text, _ = await get(edge, "/", HOST, Accept="application/json")
    assert status == 403 and json.loads(text)["title"] == "Forbidden"
    # A disabled token is refused; enabled again, admitted.
    await edge.api.call("PUT", f"{BASE}/service_tokens/{token_id}", json={"enabled": False})
    assert (await get(edge, "/", HOST, **good))[0] == 403
    await edge.api.call("PUT", f"{BASE}/service_tokens/{token_id}", json={"enabled": True})
    assert (await get(edge, "/", HOST, **good))[0] == 530
    # A CORS preflight passes without credentials only where the application says so.
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with client_session(edge.ca_path) as http:
        async with http.options(edge.client_url + "/", headers={"Host": HOST, **preflight}) as resp:
            assert resp.status == 403
        await protect(edge, "cors.lab.test", token_id, options_preflight_bypass=True)
        async with http.options(
            edge.client_url + "/", headers={"Host": "cors.lab.test", **preflight}
        ) as resp:
            assert resp.status == 530  # past Access: no route for this name (1016)
        async with http.options(edge.client_url + "/", headers={"Host": "cors.lab.test"}) as resp:
            assert resp.status == 403  # an OPTIONS that is no preflight is not bypassed
    # Only for the covered path: /api/ is protected on another host, /public there is not.
    await protect(edge, "paths.lab.test/api", token_id, service_auth_401_redirect=True)
    assert (await get(edge, "/api/v1/x", "paths.lab.test"))[0] == 401
    assert (await get(edge, "/apis", "paths.lab.test"))[0] == 530  # not covered: no route → 1016
    # An identity (Allow) policy: without a token the visitor is sent to the team's login.
    app = await protect(edge, "login.lab.test", token_id, decision="allow")
    async with (
        client_session(edge.ca_path) as http,
        http.get(
            edge.client_url + "/a?b=1", headers={"Host": "login.lab.test"}, allow_redirects=False
        ) as resp,
    ):
        assert resp.status == 302
        expected = f"https://{TEAM}:{edge.edge.client_port}/cdn-cgi/access/login/login.lab.test"
        assert resp.headers["Location"] == f"{expected}?kid={app['aud']}&redirect_url=%2Fa%3Fb%3D1"


@pytest.mark.parametrize(
    ("domains", "host", "path", "expected"),
    [
        (["a.lab.test"], "a.lab.test", "/x/y", "a.lab.test"),
        (["a.lab.test/*"], "a.lab.test", "/", "a.lab.test/*"),
        (["a.lab.test/eng"], "a.lab.test", "/eng/exec", "a.lab.test/eng"),
        (["a.lab.test/eng"], "a.lab.test", "/engineering", None),
        (["a.lab.test/alpha/*"], "a.lab.test", "/alpha", None),
        (["a.lab.test", "a.lab.test/eng/exec"], "a.lab.test", "/eng/exec/1", "a.lab.test/eng/exec"),
        (["*.lab.test"], "b.lab.test", "/", "*.lab.test"),
        (["*.lab.test"], "c.b.lab.test", "/", None),
        (["*.lab.test", "b.lab.test"], "b.lab.test", "/", "b.lab.test"),
    ],
)
def test_application_paths_follow_cloudflare_matching(domains, host, path, expected):
    store = type("Store", (), {})()
    store.access = {"apps": {}}
    for i, domain in enumerate(domains):
        app = {"id": str(i), "created_at": str(i), "self_hosted_domains": [domain]}
        store.access["apps"][str(i)] = app
    found = application_for(store, host, path)
    assert (found["self_hosted_domains"][0] if found else None) == expected


def test_signing_key_is_kept_in_the_state_dir_owner_only(tmp_path):
    first = AccessSigner.load_or_create(tmp_path / "edge", TEAM)
    again = AccessSigner.load_or_create(tmp_path / "edge", TEAM)
    assert first.kid == again.kid and len(first.kid) == 64
    assert (tmp_path / "edge" / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert again.certs()["keys"][0]["n"] == first.certs()["keys"][0]["n"]
