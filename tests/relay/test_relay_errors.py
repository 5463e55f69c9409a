"""Every error the relay answers itself: status, OpenAI-shaped body, and the right code."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from relay_support import CHAT, bearer, provider_toml, raw_exchange, status_of


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def expect_error(resp: aiohttp.ClientResponse, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    doc = await resp.json()
    assert set(doc["error"]) == {"message", "type", "code"} and doc["error"]["code"] == code
    return doc


async def test_401_missing_and_unknown_token(relay, http, upstream):
    async with http.post(relay.url + "/v1/chat/completions", json=CHAT) as r:
        await expect_error(r, 401, "missing_token")
    async with http.post(
        relay.url + "/v1/chat/completions", json=CHAT, headers=bearer("lrt_" + "x" * 43)
    ) as r:
        await expect_error(r, 401, "invalid_token")
    async with http.get(relay.url + "/t/not-a-token/v1/models") as r:
        await expect_error(r, 401, "invalid_token")
    assert not upstream.state.requests  # nothing reached the provider


async def test_400_malformed_json(relay, http):
    headers = {**bearer(relay.token), "Content-Type": "application/json"}
    async with http.post(relay.url + "/v1/chat/completions", data=b'{"model": ', headers=headers) as r:
        await expect_error(r, 400, "invalid_json")
    async with http.post(relay.url + "/relay", data=b"[1, 2]", headers=headers) as r:
        await expect_error(r, 400, "invalid_json")
    # Dot segments would climb out of the provider's base path: refused (raw requests, since HTTP clients
    # normalise them away before sending).
    port = int(relay.url.rsplit(":", 1)[1])
    for target in ("/v1/../../_lab/requests", "/v1/%2e%2e/%2E%2E/_lab/requests"):
        head = (
            f"GET {target} HTTP/1.1\r\nHost: x\r\nX-Relay-Token: {relay.token}\r\nConnection: close\r\n\r\n"
        )
        raw = await raw_exchange(port, head.encode())
        assert status_of(raw) == 400 and b'"invalid_path"' in raw


async def test_404_unknown_provider_and_route(relay, http):
    async with http.get(relay.url + "/nope/v1/models", headers=bearer(relay.token)) as r:
        await expect_error(r, 404, "unknown_provider")
    async with http.get(relay.url + "/api/v2/models", headers=bearer(relay.token)) as r:
        await expect_error(r, 404, "unknown_route")
    async with http.get(relay.url + f"/t/{relay.token}", headers=bearer(relay.token)) as r:
        await expect_error(r, 404, "unknown_route")


async def test_413_body_over_the_configured_limit(relay_factory, http):
    relay = await relay_factory(extra_server="max_body_bytes = 1000")
    async with http.post(relay.url + "/v1/embeddings", data=b"x" * 1001, headers=bearer(relay.token)) as r:
        await expect_error(r, 413, "body_too_large")

    async def chunked():
        for _ in range(20):
            yield b"y" * 100

    async with http.post(relay.url + "/v1/embeddings", data=chunked(), headers=bearer(relay.token)) as r:
        await expect_error(r, 413, "body_too_large")


async def test_429_per_token_rate_limit_with_retry_after(relay_factory, http):
    relay = await relay_factory(rate_limit=3)
    statuses = []
    for _ in range(4):
        async with http.get(relay.url + "/v1/models", headers=bearer(relay.token)) as r:
            statuses.append(r.status)
            if r.status == 429:
                await expect_error(r, 429, "rate_limited")
                assert int(r.headers["Retry-After"]) >= 1
    assert statuses == [200, 200, 200, 429]
    async with http.get(relay.url + "/v1/models", headers=bearer(relay.other_token)) as r:
        assert r.status == 200  # the limit is per token


async def test_502_unreachable_and_reset(relay_factory, upstream, http):
    relay = await relay_factory(extra=provider_toml("dead", f"http://127.0.0.1:{free_port()}/v1"))
    async with http.get(relay.url + "/dead/v1/models", headers=bearer(relay.token)) as r:
        await expect_error(r, 502, "connect")
    upstream.state.add_fault({"path": "chat", "disconnect_after_tokens": 0})
    async with http.post(relay.url + "/v1/chat/completions", json=CHAT, headers=bearer(relay.token)) as r:
        await expect_error(r, 502, "reset")
    upstream.state.clear_faults()
    metrics = await (await http.get(relay.metrics_url + "/metrics")).text()
    assert 'llm_relay_upstream_errors_total{provider="dead",kind="connect"} 1' in metrics
    assert 'llm_relay_upstream_errors_total{provider="openrouter",kind="reset"}' in metrics


async def test_504_upstream_timeout(relay_factory, upstream, http):
    relay = await relay_factory(extra=provider_toml("slow", upstream.base, response_timeout=0.3))
    upstream.state.add_fault({"path": "models", "latency_ms": 1500, "times": 1})
    async with http.get(relay.url + "/slow/v1/models", headers=bearer(relay.token)) as r:
        await expect_error(r, 504, "timeout")


async def test_mid_stream_reset_truncates_the_client_stream(relay, upstream, http):
    upstream.state.add_fault({"path": "chat", "disconnect_after_tokens": 2})
    body = {**CHAT, "stream": True}
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(relay.url + "/v1/chat/completions", json=body, headers=bearer(relay.token)) as r:
            assert r.status == 200
            await r.read()
    await asyncio.sleep(0.05)
    assert '"upstream_error":"reset"' in relay.log.lines[-1]


async def test_408_slow_body(relay, http):
    async def trickle():
        yield b'{"model":'
        await asyncio.sleep(3)  # body_timeout is 2 s in the test config
        yield b"1}"

    headers = {**bearer(relay.token), "Content-Type": "application/json"}
    async with http.post(relay.url + "/v1/chat/completions", data=trickle(), headers=headers) as r:
        await expect_error(r, 408, "body_timeout")
