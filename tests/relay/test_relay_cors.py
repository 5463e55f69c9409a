"""CORS (`[cors] allow_origins`): preflights answered without a token, only for listed origins."""

from __future__ import annotations

from llm_relay.server.headers import client_response_headers
from relay_support import CHAT, bearer

ORIGIN = "https://tool.example"
CORS = f'\n[cors]\nallow_origins = ["{ORIGIN}"]\nmax_age = 300\n'
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
}


async def test_preflight_from_an_allowed_origin_needs_no_token(relay_factory, upstream, http):
    relay = await relay_factory(extra=CORS)
    before = len(upstream.state.requests)
    async with http.options(relay.url + "/v1/chat/completions", headers={"Origin": ORIGIN, **PREFLIGHT}) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN and r.headers["Vary"] == "Origin"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Headers"] == PREFLIGHT["Access-Control-Request-Headers"]
        assert r.headers["Access-Control-Max-Age"] == "300"
        assert "Access-Control-Allow-Credentials" not in r.headers  # no cookies, ever
    assert len(upstream.state.requests) == before  # answered by the relay alone


async def test_preflight_from_another_origin_gets_no_cors_header(relay_factory, http):
    relay = await relay_factory(extra=CORS)
    async with http.options(
        relay.url + "/v1/chat/completions", headers={"Origin": "https://evil.example", **PREFLIGHT}
    ) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "cors_origin_not_allowed"
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]


async def test_answers_to_an_allowed_origin_expose_the_sdk_headers(relay_factory, upstream, http):
    relay = await relay_factory(extra=CORS)
    upstream.state.add_fault({"path": "chat", "status": 429, "retry_after": 2, "times": 1})
    headers = {"Origin": ORIGIN, **bearer(relay.token)}
    async with http.post(relay.url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 429  # the provider's rate limit, with its headers readable by the page
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"retry-after", "x-ratelimit-remaining", "x-request-id", "request-id"} <= exposed
        assert {h.lower() for h in r.headers} & {h.lower() for h in exposed} >= {"retry-after"}
    async with http.post(
        relay.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
    ) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
        await r.read()
    async with http.get(relay.url + "/v1/models", headers={"Origin": ORIGIN}) as r:
        assert r.status == 401  # a page still needs a token; it can read why it was refused
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with http.get(relay.url + "/v1/models", headers={"Origin": "https://evil.example"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers and r.headers["Vary"] == "Origin"


async def test_without_cors_config_nothing_changes(relay, http):
    async with http.options(relay.url + "/v1/models", headers={"Origin": ORIGIN, **PREFLIGHT}) as r:
        assert r.status == 401  # no preflight handling at all: an OPTIONS needs a token like any request
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]


def test_the_providers_own_cors_grants_never_reach_the_client():
    upstream = [
        (b"Content-Type", b"application/json"),
        (b"Access-Control-Allow-Origin", b"*"),
        (b"access-control-allow-credentials", b"true"),
        (b"Access-Control-Expose-Headers", b"*"),
        (b"X-Request-Id", b"r1"),
    ]
    headers, _ = client_response_headers(upstream)
    assert [n for n, _ in headers] == ["Content-Type", "X-Request-Id"]
