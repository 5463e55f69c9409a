"""Faults injected through POST /_lab/faults reach clients the way a real provider failure does."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import aiohttp
import openai
import pytest

from lab.upstream import answers

from .conftest import KEY

AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES = [{"role": "user", "content": "one two three four five six"}]
CHAT = "/api/v1/chat/completions"


async def add_fault(upstream, **rule):
    resp = await upstream.post("/_lab/faults", json=rule)
    assert resp.status == 201, await resp.text()


async def test_429_carries_retry_after_and_rate_limit_headers_then_clears(upstream):
    await add_fault(upstream, path="chat/completions", status=429, retry_after=7, times=1)
    resp = await upstream.post(CHAT, json={"messages": MESSAGES}, headers=AUTH)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7" and resp.headers["X-RateLimit-Remaining"] == "0"
    assert int(resp.headers["X-RateLimit-Reset"]) > time.time() * 1000
    assert (await resp.json())["error"]["code"] == 429
    # times=1: consumed, the next call succeeds.
    assert (await upstream.post(CHAT, json={"messages": MESSAGES}, headers=AUTH)).status == 200
    assert (await (await upstream.get("/_lab/faults")).json()) == {"faults": []}


async def test_5xx_until_cleared_and_sdk_sees_it(upstream):
    await add_fault(upstream, status=502)
    client = openai.AsyncOpenAI(base_url=upstream.base, api_key=KEY, max_retries=0)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="lab/echo", messages=MESSAGES)
        assert caught.value.status_code == 502
    await upstream.delete("/_lab/faults")
    assert (await client.chat.completions.create(model="lab/echo", messages=MESSAGES)).choices


async def test_fault_path_filter_leaves_other_routes_alone(upstream):
    await add_fault(upstream, path="/embeddings", status=503)
    assert (await upstream.post(CHAT, json={"messages": MESSAGES}, headers=AUTH)).status == 200
    body = {"model": "openai/text-embedding-3-small", "input": "x"}
    assert (await upstream.post("/api/v1/embeddings", json=body, headers=AUTH)).status == 503


async def test_mid_stream_error_event_ends_the_stream(upstream):
    await add_fault(upstream, error_after_tokens=2, message="provider fell over")
    resp = await upstream.post(CHAT, json={"messages": MESSAGES, "stream": True}, headers=AUTH)
    assert resp.status == 200
    data = [e.removeprefix("data: ") for e in (await resp.text()).split("\n\n") if e.startswith("data: ")]
    assert "[DONE]" not in data
    events = [json.loads(d) for d in data]
    assert [e["choices"][0]["delta"]["content"] for e in events[:2]] == ["lab-echo: ", "one "]
    assert events[-1]["error"] == {"code": "server_error", "message": "provider fell over"}
    assert events[-1]["choices"][0]["finish_reason"] == "error"


async def test_abrupt_disconnect_mid_stream(upstream):
    await add_fault(upstream, disconnect_after_tokens=3)
    resp = await upstream.post(CHAT, json={"messages": MESSAGES, "stream": True}, headers=AUTH)
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


async def test_disconnect_before_any_byte(upstream):
    await add_fault(upstream, disconnect_after_tokens=0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await upstream.post(CHAT, json={"messages": MESSAGES}, headers=AUTH)


async def test_latency_and_token_delay_pace_the_stream(upstream):
    await add_fault(upstream, latency_ms=200, token_delay_ms=60)
    started = time.monotonic()
    resp = await upstream.post(CHAT, json={"messages": MESSAGES, "stream": True}, headers=AUTH)
    assert time.monotonic() - started >= 0.2
    arrivals, text = [], ""
    async for line in resp.content:
        if line.startswith(b"data: {"):
            arrivals.append(time.monotonic())
            choices = json.loads(line[6:])["choices"]
            text += choices[0]["delta"].get("content", "") if choices else ""
    assert text == answers.chat_answer({"messages": MESSAGES})[0]
    gaps = [b - a for a, b in itertools.pairwise(arrivals[:6])]
    assert min(gaps) >= 0.05  # each content chunk left the server on its own, not buffered


@pytest.mark.parametrize(
    "rule",
    [{"status": 200}, {"bogus": 1}, {"latency_ms": -5}, {"times": "twice"}, ["status", 500]],
)
async def test_malformed_fault_rule_is_refused(upstream, rule):
    resp = await upstream.post("/_lab/faults", json=rule)
    assert resp.status == 400 and "error" in await resp.json()
    await asyncio.sleep(0)
    assert upstream.state.faults == []


async def test_client_going_away_mid_stream_is_recorded(upstream):
    await add_fault(upstream, token_delay_ms=50)
    resp = await upstream.post(CHAT, json={"messages": MESSAGES, "stream": True}, headers=AUTH)
    await resp.content.readuntil(b"lab-echo")
    resp.close()  # drop the connection while the upstream is still producing
    for _ in range(100):
        if upstream.state.requests[-1].get("outcome"):
            break
        await asyncio.sleep(0.05)
    assert upstream.state.requests[-1]["outcome"] == "client_disconnected"


async def test_outcomes_are_logged(upstream):
    await upstream.post(CHAT, json={"messages": MESSAGES}, headers=AUTH)
    await upstream.post(CHAT, json={"messages": MESSAGES})
    await add_fault(upstream, status=503, times=1)
    await upstream.post(CHAT, json={"messages": MESSAGES}, headers=AUTH)
    await add_fault(upstream, error_after_tokens=1, times=1)
    await (await upstream.post(CHAT, json={"messages": MESSAGES, "stream": True}, headers=AUTH)).read()
    await upstream.post(CHAT, json={"model": "lab/echo"}, headers=AUTH)
    outcomes = [r["outcome"] for r in upstream.state.requests]
    assert outcomes == ["completed", "unauthorized", "fault_status", "fault_error_event", "refused"]


async def test_unknown_api_path_is_a_json_404(upstream):
    resp = await upstream.get("/api/v1/nothing", headers=AUTH)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == 404
