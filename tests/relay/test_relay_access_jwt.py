"""[access]: the relay refuses every request without a valid Cloudflare Access assertion (access_jwt.py).

Tokens are signed the way the lab edge signs them (lab/edge/access_keys.py: RS256, kid, the team's certs
document) and the certs are served by an HTTPS server on loopback with a certificate from a throwaway CA
made as the lab makes its own, which the relay trusts through `ca_file`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ssl
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import make_relay_dir  # at import time: later in a whole run, `conftest` names another suite's
from cryptography.hazmat.primitives import serialization
from llm_relay.server import access_jwt
from llm_relay.server.config import ConfigError, load_settings
from relay_support import CHAT, bearer, metric, raw_exchange, status_of

from lab import ca
from lab.edge.access_keys import AccessSigner

TEAM = "team.lab.test"
AUD = "4714b1a7cc8c9e3c0c8f9a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"
ASSERTION = "Cf-Access-Jwt-Assertion"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes) -> dict:
    now = int(time.time())
    base = {"type": "app", "aud": [AUD], "exp": now + 600, "iss": f"https://{TEAM}", "iat": now, "sub": ""}
    base["common_name"] = "0123456789abcdef.access"
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def unsigned(header: dict, body: dict) -> str:
    return ".".join(b64(json.dumps(part).encode()) for part in (header, body))


def tls_files(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA and a server certificate for 127.0.0.1 made as the lab makes its own (lab/ca.py): the CA file
    the relay is told to trust, and the certs server's TLS context."""
    paths = ca.ensure(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(paths["crt"], paths["key"])
    return paths["ca_crt"], context


class Team:
    """The team's certs endpoint: which signers it publishes, how often it was asked, whether it is up."""

    def __init__(self, signer: AccessSigner) -> None:
        self.published = [signer]
        self.fetches = 0
        self.up = True
        self.raw: bytes | None = None  # served instead of the document when set
        self.url = ""
        self.ca_file = ""

    def document(self) -> dict:
        docs = [s.certs() for s in self.published]
        certs = [c for d in docs for c in d["public_certs"]]
        return {"keys": [k for d in docs for k in d["keys"]], "public_cert": certs[0], "public_certs": certs}

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if not self.up:
            return web.Response(status=502, text="bad gateway")
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        return web.json_response(self.document())

    def toml(self) -> str:
        return (
            f'\n[access]\nteam_domain = "{TEAM}"\naudiences = ["other-app", "{AUD}"]\n'
            f'ca_file = "{self.ca_file}"\ncerts_url = "{self.url}"\n'
        )


def new_signer(directory: Path) -> AccessSigner:
    return AccessSigner.load_or_create(directory, TEAM)


@pytest.fixture
async def team(tmp_path):
    keys_dir = tmp_path / "team-key"
    state = Team(new_signer(keys_dir))
    app = web.Application()
    app.router.add_get("/cdn-cgi/access/certs", state.handle)
    cert, context = tls_files(tmp_path / "tls")
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server(ssl=context)
    state.url = f"https://127.0.0.1:{server.port}/cdn-cgi/access/certs"
    state.ca_file = str(cert)
    yield state
    await server.close()


@pytest.fixture
async def gated(relay_factory, team):
    return await relay_factory(extra=team.toml())


def signed_by(team: Team, **changes) -> str:
    return team.published[0].sign(claims(**changes))


def headers(relay, token: str | None) -> dict:
    out = bearer(relay.token)
    if token is not None:
        out[ASSERTION] = token
    return out


async def refused(http, relay, token, status=403, path="/v1/chat/completions") -> dict:
    async with http.post(relay.url + path, json=CHAT, headers=headers(relay, token)) as r:
        body = await r.json()
        assert r.status == status, body
        assert body["error"]["type"] == "access_denied"
        return body["error"]


async def test_a_valid_assertion_passes_and_is_not_forwarded(gated, team, upstream, http):
    valid = headers(gated, signed_by(team))
    async with http.post(gated.url + "/v1/chat/completions", json=CHAT, headers=valid) as r:
        assert r.status == 200, await r.text()
    seen = upstream.state.requests[-1]["headers"]
    assert not [h for h in seen if h.lower().startswith("cf-access")]  # a bearer credential: stays here
    assert team.fetches == 1  # fetched once at start, then served from the cache


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"aud": ["another-application"]}, "wrong_audience"),
        ({"aud": AUD + "x"}, "wrong_audience"),
        ({"iss": "https://evil.cloudflareaccess.com"}, "wrong_issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"exp": None}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not_yet_valid"),
        ({"iat": int(time.time()) + 3600}, "not_yet_valid"),
    ],
)
async def test_bad_claims_are_refused(gated, team, upstream, http, changes, code):
    before = len(upstream.state.requests)
    assert (await refused(http, gated, signed_by(team, **changes)))["code"] == code
    assert len(upstream.state.requests) == before
    async with http.get(gated.metrics_url + "/metrics") as r:
        assert metric(await r.text(), "llm_relay_access_refusals_total", reason=code) == 1


async def test_small_clock_skew_is_tolerated(gated, team, http):
    skewed = signed_by(team, exp=int(time.time()) - 20, nbf=int(time.time()) + 20)
    async with http.get(gated.url + "/v1/models", headers=headers(gated, skewed)) as r:
        assert r.status == 200


async def test_missing_and_malformed_assertions(gated, team, http):
    assert (await refused(http, gated, None))["code"] == "missing_assertion"
    assert (await refused(http, gated, "not-a-jwt"))["code"] == "malformed_assertion"
    assert (await refused(http, gated, "a.b.c"))["code"] == "malformed_assertion"
    assert (await refused(http, gated, "x" * 7000 + ".a.b"))["code"] == "malformed_assertion"
    good = signed_by(team)
    forged = good.rsplit(".", 1)[0] + "." + b64(b"\0" * 256)
    assert (await refused(http, gated, forged))["code"] == "bad_signature"
    head, _, sig = good.split(".")
    other_claims = b64(json.dumps(claims(common_name="someone-else")).encode())
    assert (await refused(http, gated, f"{head}.{other_claims}.{sig}"))["code"] == "bad_signature"


async def test_alg_none_and_hs256_are_refused(gated, team, http):
    kid = team.published[0].kid
    none_token = unsigned({"alg": "none", "kid": kid, "typ": "JWT"}, claims()) + "."
    assert (await refused(http, gated, none_token))["code"] == "bad_algorithm"
    # HS256 keyed with the public key (the classic RS/HS confusion): refused before any key is used.
    public_pem = (
        team.published[0]
        .key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = unsigned({"alg": "HS256", "kid": kid, "typ": "JWT"}, claims())
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert (await refused(http, gated, f"{signing_input}.{b64(mac)}"))["code"] == "bad_algorithm"


async def test_healthz_is_exempt_and_nothing_else(gated, http):
    async with http.get(gated.url + "/healthz") as r:
        assert r.status == 200
    async with http.get(gated.url + "/readyz", headers=bearer(gated.token)) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "missing_assertion"
    async with http.get(gated.url + "/v1/models", headers=bearer(gated.token)) as r:
        assert r.status == 403
    async with http.get(gated.metrics_url + "/healthz") as r:  # the loopback metrics listener: untouched
        assert r.status == 200


async def test_the_body_is_not_read_when_refused(gated, upstream):
    # Ten megabytes announced, none sent: the refusal comes at once (body_timeout is 2 s in these tests).
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + gated.token.encode() + b"\r\nContent-Length: 10000000\r\n\r\n"
    )
    started = time.monotonic()
    raw = await raw_exchange(gated.server.port, head, wait_s=1.5)
    assert status_of(raw) == 403 and b'"access_denied"' in raw
    assert time.monotonic() - started < 1.0
    assert not upstream.state.requests
    assert gated.server.budget.used == 0  # nothing of it is held


async def test_the_access_check_comes_before_the_client_token(gated, team, http):
    # Without the assertion, not even the token is looked at: no 401 tells a stranger about tokens.
    async with http.get(gated.url + "/v1/models") as r:
        assert r.status == 403
    async with http.get(gated.url + "/v1/models", headers={ASSERTION: signed_by(team)}) as r:
        assert r.status == 401  # past the edge's check, the relay's own token is still required


async def test_unknown_kid_refetches_once_then_is_refused(gated, team, http, tmp_path):
    verifier = gated.server.relay.state.access
    clock = [1000.0]
    verifier._clock = lambda: clock[0]
    verifier.attempted_at = clock[0] - 60  # the start's fetch was a while ago
    stranger = new_signer(tmp_path / "stranger")  # a key the team does not publish
    token = stranger.sign(claims())
    assert (await refused(http, gated, token, 503))["code"] == "access_certs_refreshing"
    await verifier.task
    assert team.fetches == 2
    # A burst of random kids within REFETCH_SECONDS: refused, and not one more fetch.
    for n in range(20):
        forged = unsigned({"alg": "RS256", "kid": f"random-{n}"}, claims()) + "." + b64(b"x" * 256)
        assert (await refused(http, gated, forged))["code"] == "unknown_key_id"
    assert (await refused(http, gated, token))["code"] == "unknown_key_id"
    assert team.fetches == 2
    clock[0] += access_jwt.REFETCH_SECONDS  # later, one new fetch again
    assert (await refused(http, gated, token, 503))["code"] == "access_certs_refreshing"
    await verifier.task
    assert team.fetches == 3
    async with http.get(gated.url + "/v1/models", headers=headers(gated, signed_by(team))) as r:
        assert r.status == 200  # the team's own key still verifies throughout


async def test_key_rotation_new_kid_after_refetch(gated, team, http, tmp_path):
    verifier = gated.server.relay.state.access
    verifier.attempted_at -= access_jwt.REFETCH_SECONDS
    rotated = new_signer(tmp_path / "rotated")
    team.published.insert(0, rotated)  # the team publishes its new key beside the old one
    token = rotated.sign(claims())
    assert (await refused(http, gated, token, 503))["code"] == "access_certs_refreshing"
    await verifier.task
    async with http.get(gated.url + "/v1/models", headers=headers(gated, token)) as r:
        assert r.status == 200
    old = team.published[1].sign(claims())
    async with http.get(gated.url + "/v1/models", headers=headers(gated, old)) as r:
        assert r.status == 200  # tokens of the previous key still verify while it is published


async def test_stale_keys_are_refreshed_in_the_background(gated, team, http):
    verifier = gated.server.relay.state.access
    verifier.fetched_at -= access_jwt.REFRESH_SECONDS
    verifier.attempted_at -= access_jwt.REFRESH_SECONDS
    async with http.get(gated.url + "/v1/models", headers=headers(gated, signed_by(team))) as r:
        assert r.status == 200  # served from the cache while the refresh runs
    await verifier.task
    assert team.fetches == 2


async def test_certs_endpoint_down_at_start_gives_503(relay_factory, team, http):
    team.up = False
    relay = await relay_factory(extra=team.toml())
    async with http.get(relay.url + "/healthz") as r:
        assert r.status == 200  # the relay runs; only gated routes wait for the keys
    async with http.get(relay.url + "/v1/models", headers=headers(relay, signed_by(team))) as r:
        assert r.status == 503 and r.headers["Retry-After"] == str(access_jwt.REFETCH_SECONDS)
        err = (await r.json())["error"]
        assert (err["type"], err["code"]) == ("access_denied", "access_certs_unavailable")
    verifier = relay.server.relay.state.access
    assert team.fetches == 1  # the start's fetch; the refusal above starts none within REFETCH_SECONDS
    team.up = True
    verifier.attempted_at -= access_jwt.REFETCH_SECONDS
    async with http.get(relay.url + "/v1/models", headers=headers(relay, signed_by(team))) as r:
        assert r.status == 503  # this one starts the fetch
    await verifier.task
    async with http.get(relay.url + "/v1/models", headers=headers(relay, signed_by(team))) as r:
        assert r.status == 200
    async with http.get(relay.metrics_url + "/metrics") as r:
        text = await r.text()
    assert metric(text, "llm_relay_access_cert_fetches_total", result="failed") == 1
    assert metric(text, "llm_relay_access_cert_fetches_total", result="ok") == 1


async def test_certs_served_by_an_untrusted_server_are_not_used(relay_factory, team, http, tmp_path):
    other_ca, _ = tls_files(tmp_path / "other")  # a certificate the certs server does not use
    text = team.toml().replace(team.ca_file, str(other_ca))
    relay = await relay_factory(extra=text)
    async with http.get(relay.url + "/v1/models", headers=headers(relay, signed_by(team))) as r:
        assert r.status == 503
    assert relay.server.relay.state.access.fetch_results["failed"] == 1


async def test_reload_keeps_the_cached_keys(gated, team, http):
    before = gated.server.relay.state.access
    assert gated.server.reload()
    assert gated.server.relay.state.access is before and team.fetches == 1
    async with http.get(gated.url + "/v1/models", headers=headers(gated, signed_by(team))) as r:
        assert r.status == 200


def test_certs_document_of_the_lab_edge_parses(tmp_path):
    signer = new_signer(tmp_path)
    keys = access_jwt.parse_certs(json.dumps(signer.certs()).encode())
    assert list(keys) == [signer.kid]
    with pytest.raises(ValueError, match="no RS256 signing key"):
        access_jwt.parse_certs(b'{"keys": [{"kty": "EC", "kid": "a"}]}')
    with pytest.raises(ValueError):
        access_jwt.parse_certs(b"[]")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('team_domain = "https://team.example.com"', "is not a host name"),
        ('team_domain = "team.example.com/path"', "is not a host name"),
        ('team_domain = "team.example.com"', "audiences must list"),
        ('team_domain = "team.example.com"\naudiences = [""]', "non-empty strings"),
        ('team_domain = "team.example.com"\naudiences = "abc"', "wrong type"),
        ('audiences = ["abc"]', "need team_domain"),
        (
            'team_domain = "t.example.com"\naudiences = ["a"]\ncerts_url = "http://t.example.com/c"',
            "https://",
        ),
        ('team_domain = "t.example.com"\naudiences = ["a"]\nca_file = "missing.pem"', "not a readable file"),
        ('team_domain = "t.example.com"\naudiences = ["a"]\nleeway = 5', "unknown keys: leeway"),
    ],
)
def test_bad_access_tables_fail_naming_the_key(tmp_path, table, message):
    make_relay_dir(tmp_path, "http://127.0.0.1:9/api/v1", extra=f"\n[access]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path / "relay.toml")


def test_access_table_defaults(tmp_path):
    make_relay_dir(tmp_path, "http://127.0.0.1:9/api/v1")
    assert not load_settings(tmp_path / "relay.toml").access.enabled
    table = '\n[access]\nteam_domain = "Team.Lab.Test:9443"\naudiences = ["a"]\n'
    make_relay_dir(tmp_path, "http://127.0.0.1:9/api/v1", extra=table)
    access = load_settings(tmp_path / "relay.toml").access
    assert (access.issuer, access.keys_url) == (
        "https://team.lab.test:9443",
        "https://team.lab.test:9443/cdn-cgi/access/certs",
    )


async def test_fetch_refuses_redirects(tmp_path):
    app = web.Application()

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:9/elsewhere")

    app.router.add_get("/certs", moved)
    cert, context = tls_files(tmp_path / "tls")
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server(ssl=context)
    try:
        with pytest.raises(OSError):  # urllib's HTTPError for the unfollowed 302
            url = f"https://127.0.0.1:{server.port}/certs"
            await asyncio.to_thread(access_jwt.fetch_certs, url, str(cert))
    finally:
        await server.close()


@pytest.mark.parametrize("body", [b"<html>not json</html>", b'{"keys": []}', b'{"keys": [{"kty": "RSA"}]}'])
async def test_a_broken_certs_document_is_a_failed_fetch(body):
    verifier = access_jwt.AccessVerifier(access_jwt.AccessSettings(TEAM, (AUD,)), fetch=lambda url, ca: body)
    assert not await verifier.refresh()
    assert (verifier.fetch_results["failed"], verifier.keys, verifier.last_failed) == (1, {}, True)


async def test_an_oversized_certs_document_is_not_read_whole(team):
    team.raw = b" " * (access_jwt.MAX_CERTS_BYTES + 10)
    with pytest.raises(ValueError, match="over"):
        await asyncio.to_thread(access_jwt.fetch_certs, team.url, team.ca_file)
