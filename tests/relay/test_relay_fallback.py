"""Fallback between a route's providers: only before the first byte reached the client, never after."""

from __future__ import annotations

import json

import aiohttp
import pytest
from relay_support import CHAT, bearer, metric

from lab.upstream import answers

ROUTE = """
[providers.down]
base_url = "http://127.0.0.1:9/api/v1"
keys_file = "openrouter-keys"
connect_timeout = 2

[routes.auto]
providers = [{ provider = "openrouter" }, { provider = "lab", model = "lab/echo" }]

[routes.resilient]
providers = ["down", "lab"]
"""


@pytest.fixture
async def relay_r(relay_factory):
    return await relay_factory(extra=ROUTE)


async def test_a_429_falls_back_to_the_next_provider_and_its_model(relay_r, upstream, http):
    upstream.state.add_fault({"path": "chat", "status": 429, "times": 1})
    before = len(upstream.state.requests)
    headers = bearer(relay_r.token)
    async with http.post(relay_r.url + "/auto/v1/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 200, await r.text()
        doc = await r.json()
    assert doc["choices"][0]["message"]["content"] == answers.chat_answer(CHAT)[0]
    tried = list(upstream.state.requests)[before:]
    assert [t["outcome"] for t in tried] == ["fault_status", "completed"]
    assert tried[-1]["model"] == "lab/echo" and doc["model"] == "lab/echo"  # the entry's model
    line = json.loads(relay_r.log.lines[-1])
    assert line["provider"] == "lab" and line["fallback"] == ["openrouter:429"] and line["status"] == 200
    async with http.get(relay_r.metrics_url + "/metrics") as r:
        text = await r.text()
    assert metric(text, "llm_relay_fallbacks_total", provider="openrouter", reason="429") == 1


async def test_a_5xx_stream_falls_back_before_any_byte(relay_r, upstream, http):
    upstream.state.add_fault({"path": "chat", "status": 503, "times": 1})
    body = {**CHAT, "stream": True}
    async with http.post(
        relay_r.url + "/auto/v1/chat/completions", json=body, headers=bearer(relay_r.token)
    ) as r:
        assert r.status == 200
        raw = await r.read()
    assert raw.rstrip().endswith(b"data: [DONE]")
    assert json.loads(relay_r.log.lines[-1])["fallback"] == ["openrouter:503"]


async def test_an_unreachable_provider_falls_back(relay_r, upstream, http):
    async with http.get(relay_r.url + "/resilient/v1/models", headers=bearer(relay_r.token)) as r:
        assert r.status == 200
    line = json.loads(relay_r.log.lines[-1])
    assert line["provider"] == "lab" and line["fallback"] == ["down:connect"]


async def test_no_second_attempt_once_a_byte_was_sent(relay_r, upstream, http):
    upstream.state.add_fault({"path": "chat", "disconnect_after_tokens": 2, "times": 1})
    before = len(upstream.state.requests)
    body = {**CHAT, "stream": True}
    got = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            relay_r.url + "/auto/v1/chat/completions", json=body, headers=bearer(relay_r.token)
        ) as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                got += chunk
    assert b"data: " in got and b"[DONE]" not in got  # the client saw the failure, as it happened
    assert len(upstream.state.requests) - before == 1  # and nothing was tried after it
    line = json.loads(relay_r.log.lines[-1])
    assert line["status"] == 502 and line["upstream_error"] == "reset" and "fallback" not in line


async def test_the_last_providers_error_is_the_answer(relay_r, upstream, http):
    upstream.state.add_fault({"path": "chat", "status": 429, "times": 2})
    async with http.post(
        relay_r.url + "/auto/v1/chat/completions", json=CHAT, headers=bearer(relay_r.token)
    ) as r:
        assert r.status == 429 and r.headers["Retry-After"]
    assert json.loads(relay_r.log.lines[-1])["fallback"] == ["openrouter:429"]


async def test_a_plain_provider_route_never_falls_back(relay_r, upstream, http):
    upstream.state.add_fault({"path": "chat", "status": 500, "times": 1})
    async with http.post(
        relay_r.url + "/openrouter/v1/chat/completions", json=CHAT, headers=bearer(relay_r.token)
    ) as r:
        assert r.status == 500


async def test_the_fallback_model_replaces_the_model_of_a_large_body_too(relay_r, upstream, http):
    # Bodies over the relay's full-parse bound (64 KiB) are parsed only when a fallback must change them.
    big = {**CHAT, "messages": [{"role": "user", "content": "long context " * 8000}]}
    upstream.state.add_fault({"path": "chat", "status": 502, "times": 1})
    async with http.post(
        relay_r.url + "/auto/v1/chat/completions", json=big, headers=bearer(relay_r.token)
    ) as r:
        assert r.status == 200 and (await r.json())["model"] == "lab/echo"
    assert upstream.state.requests[-1]["model"] == "lab/echo"


async def test_routes_are_listed_with_the_providers(relay_r, http):
    async with http.get(relay_r.url + "/v1/providers", headers=bearer(relay_r.token)) as r:
        listed = {entry["id"]: entry for entry in (await r.json())["data"]}
    assert listed["auto"]["route"] == ["openrouter", "lab"] and listed["resilient"]["route"] == [
        "down",
        "lab",
    ]
    assert listed["openrouter"]["default"] and not listed["auto"]["default"]
