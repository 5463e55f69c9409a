"""Every route and auth channel, against the lab's fake upstream in-process."""

from __future__ import annotations

import json

import pytest
from relay_support import CHAT, UPSTREAM_KEYS, bearer


async def test_health_and_ready_need_no_token(relay, http):
    async with http.get(relay.url + "/healthz") as r:
        assert r.status == 200 and (await r.json()) == {"status": "ok"}
    async with http.get(relay.url + "/readyz") as r:
        assert r.status == 200 and (await r.json()) == {"status": "ready"}


@pytest.mark.parametrize("channel", ["bearer", "x-relay-token", "path"])
async def test_every_auth_channel_reaches_the_provider_with_the_provider_key(relay, upstream, http, channel):
    headers, prefix = {}, ""
    if channel == "bearer":
        headers = bearer(relay.token)
    elif channel == "x-relay-token":
        headers = {"X-Relay-Token": relay.token}
    else:
        prefix = f"/t/{relay.token}"
    async with http.post(relay.url + prefix + "/v1/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 200, await r.text()
        doc = await r.json()
        assert doc["object"] == "chat.completion" and doc["choices"][0]["message"]["content"]
        assert r.headers["X-Generation-Id"] == doc["id"]
    seen = upstream.state.requests[-1]
    assert seen["key"] in UPSTREAM_KEYS and seen["path"] == "/api/v1/chat/completions"
    # The client's credentials never reach the provider; the configured extra headers do.
    forwarded = {k.lower(): v for k, v in seen["headers"].items()}
    assert "x-relay-token" not in forwarded
    assert relay.token not in json.dumps(seen["headers"])
    assert forwarded["http-referer"] == "https://relay.test" and forwarded["x-title"] == "llm-relay-tests"
    line = json.loads(relay.log.lines[-1])
    assert line["token"] == "alice" and line["status"] == 200 and line["provider"] == "openrouter"
    assert relay.token not in relay.log.lines[-1]


async def test_keys_are_used_round_robin(relay, upstream, http):
    for _ in range(4):
        async with http.get(relay.url + "/v1/models", headers=bearer(relay.token)) as r:
            assert r.status == 200
    assert upstream.state.keys_seen()[-4:] == UPSTREAM_KEYS * 2


async def test_named_provider_route_query_and_methods_pass_through(relay, upstream, http):
    async with http.get(
        relay.url + "/lab/v1/models?supported_parameters=tools", headers=bearer(relay.token)
    ) as r:
        assert r.status == 200
        assert (await r.json())["data"]
    assert upstream.state.requests[-1]["path"] == "/api/v1/models"
    async with http.post(
        relay.url + "/lab/v1/embeddings",
        json={"model": "openai/text-embedding-3-small", "input": ["a", "b"]},
        headers=bearer(relay.token),
    ) as r:
        body = await r.json()
        assert r.status in (200, 400), body  # upstream decides; the relay passes it through verbatim
    async with http.delete(relay.url + "/v1/chat/completions", headers=bearer(relay.token)) as r:
        assert r.status in (404, 405)  # the upstream's answer to a method it does not route


async def test_relay_route_keeps_the_original_contract(relay, upstream, http):
    async with http.post(relay.url + "/relay", data=json.dumps(CHAT), headers=bearer(relay.token)) as r:
        assert r.status == 200
        assert (await r.json())["object"] == "chat.completion"
    assert upstream.state.requests[-1]["path"] == "/api/v1/chat/completions"
    async with http.get(relay.url + "/relay", headers=bearer(relay.token)) as r:
        assert r.status == 405
        assert (await r.json())["error"]["code"] == "method_not_allowed"


async def test_providers_listing(relay, http):
    async with http.get(relay.url + "/v1/providers", headers=bearer(relay.token)) as r:
        doc = await r.json()
    assert {p["id"] for p in doc["data"]} == {"openrouter", "lab"}
    assert [p["id"] for p in doc["data"] if p["default"]] == ["openrouter"]
    assert "keys" not in json.dumps(doc) and UPSTREAM_KEYS[0] not in json.dumps(doc)


async def test_metrics_need_a_token_on_the_main_listener_but_not_on_localhost_one(relay, http):
    async with http.get(relay.url + "/v1/models", headers=bearer(relay.token)) as r:
        assert r.status == 200
    async with http.get(relay.url + "/metrics") as r:
        assert r.status == 401
    async with http.get(relay.url + "/metrics", headers=bearer(relay.token)) as r:
        text = await r.text()
        assert r.status == 200
    assert 'llm_relay_requests_total{token="alice",provider="openrouter",status="200",method="GET"}' in text
    assert "llm_relay_request_duration_seconds_bucket" in text and "llm_relay_in_flight_requests" in text
    async with http.get(relay.metrics_url + "/metrics") as r:
        assert r.status == 200 and "llm_relay_upstream_errors_total" in await r.text()
    async with http.get(relay.metrics_url + "/v1/models") as r:
        assert r.status == 404


async def test_upstream_status_body_and_headers_pass_through(relay, upstream, http):
    upstream.state.add_fault({"path": "chat", "status": 429, "retry_after": 7, "times": 1})
    async with http.post(relay.url + "/v1/chat/completions", json=CHAT, headers=bearer(relay.token)) as r:
        assert r.status == 429
        assert r.headers["Retry-After"] == "7" and r.headers["X-RateLimit-Remaining"] == "0"
        assert (await r.json())["error"]["code"] == 429  # OpenRouter's own body, verbatim
    # Hop-by-hop headers from the client are not forwarded.
    async with http.get(
        relay.url + "/v1/models",
        headers={
            **bearer(relay.token),
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "TE": "x",
        },
    ) as r:
        assert r.status == 200
    forwarded = {k.lower() for k in upstream.state.requests[-1]["headers"]}
    assert "x-hop" not in forwarded and "te" not in forwarded
