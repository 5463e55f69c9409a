"""Daily token budgets that hold (server/token_budget.py): concurrent requests reserve before they run, a
cut stream is charged what it reserved, and usage is read from gzipped and from large (6 MiB) answers."""

from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from llm_relay import envelope as env
from llm_relay import envelope_v2 as v2
from llm_relay.server.token_budget import estimate
from relay_support import CHAT, bearer, provider_toml

BUDGET = 1000
STREAM = {**CHAT, "stream": True, "max_tokens": 100}


async def usage_of(http, relay, token: str) -> dict:
    async with http.get(relay.url + "/v1/usage", headers=bearer(token)) as r:
        return await r.json()


async def until_charged(http, relay, token: str) -> int:
    for _ in range(200):  # the charge lands when the relay finishes the request, just after the client
        used = (await usage_of(http, relay, token))["today_tokens"]
        if used:
            return used
        await asyncio.sleep(0.01)
    raise AssertionError("nothing was charged")


async def test_twenty_concurrent_streams_get_no_more_than_the_budget_allows(relay_factory, upstream, http):
    relay = await relay_factory(extra=f"\n[usage]\ndaily_token_budget = {BUDGET}\n")
    upstream.state.add_fault({"path": "chat", "token_delay_ms": 40})  # streams overlap: ~0.3 s each
    body = json.dumps(STREAM).encode()
    reservation = estimate(body, STREAM, 1024)
    headers = {**bearer(relay.token), "Content-Type": "application/json"}

    async def one() -> int:
        async with http.post(relay.url + "/v1/chat/completions", data=body, headers=headers) as r:
            await r.read()
            return r.status

    statuses = await asyncio.gather(*(one() for _ in range(20)))
    upstream.state.clear_faults()
    admitted = statuses.count(200)
    print(f"\n20 concurrent streams, budget {BUDGET}, {reservation} reserved each: {admitted} admitted")
    assert 1 <= admitted <= BUDGET // reservation and statuses.count(429) == 20 - admitted
    used = (await usage_of(http, relay, relay.token))["today_tokens"]
    assert 0 < used <= BUDGET  # settled on what the provider reported


async def test_a_stream_cut_before_its_usage_event_is_charged_its_reservation(relay_factory, upstream, http):
    relay = await relay_factory(extra=f"\n[usage]\ndaily_token_budget = {BUDGET}\n")
    body = json.dumps(STREAM).encode()
    reservation = estimate(body, STREAM, 1024)
    headers = {**bearer(relay.token), "Content-Type": "application/json"}
    upstream.state.add_fault({"path": "chat", "disconnect_after_tokens": 2, "times": 1})
    async with http.post(relay.url + "/v1/chat/completions", data=body, headers=headers) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()  # the relay cuts the client's stream too: no clean end
    assert await until_charged(http, relay, relay.token) == reservation
    # The client going away mid-stream is charged the same way (bob: a fresh counter).
    upstream.state.add_fault({"path": "chat", "token_delay_ms": 100, "times": 1})
    other = {**bearer(relay.other_token), "Content-Type": "application/json"}
    async with http.post(relay.url + "/v1/chat/completions", data=body, headers=other) as r:
        assert r.status == 200
        await r.content.readany()
        r.close()
    assert await until_charged(http, relay, relay.other_token) == reservation


BIG_PROMPT_TOKENS = 4321
SEEN = web.AppKey("accept_encodings_seen", list)


async def odd_provider() -> TestServer:
    """A provider that gzips JSON whatever the request says, and answers embeddings with 6 MiB."""
    seen: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        doc = {"model": "gz/model", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 22}}
        body = gzip.compress(json.dumps(doc).encode())
        return web.Response(body=body, content_type="application/json", headers={"Content-Encoding": "gzip"})

    async def embeddings(request: web.Request) -> web.Response:
        vector = [0.123456] * (6 * 1024 * 1024 // 9)
        doc = {"object": "list", "data": [{"embedding": vector}], "model": "e", "usage": {}}
        doc["usage"] = {"prompt_tokens": BIG_PROMPT_TOKENS, "total_tokens": BIG_PROMPT_TOKENS}
        return web.Response(body=json.dumps(doc).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app[SEEN] = seen
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return server


async def test_usage_is_read_from_gzip_and_from_a_6_mib_answer(relay_factory, http):
    provider = await odd_provider()
    try:
        relay = await relay_factory(extra=provider_toml("odd", str(provider.make_url("/v1"))))
        headers = {**bearer(relay.token), "Accept-Encoding": "gzip, deflate"}  # as the OpenAI SDK sends
        async with http.post(relay.url + "/odd/v1/chat/completions", json=CHAT, headers=headers) as r:
            assert r.status == 200 and (await r.json())["usage"]["completion_tokens"] == 22
        assert provider.app[SEEN] == ["identity"]  # the relay asks for identity in both modes
        assert (await usage_of(http, relay, relay.token))["today_tokens"] == 33  # the ignored ask: gunzipped
        embed = {"model": "e", "input": "x"}
        async with http.post(relay.url + "/odd/v1/embeddings", json=embed, headers=bearer(relay.token)) as r:
            raw = await r.read()
        assert r.status == 200 and len(raw) > 6_000_000  # streamed through (over the 4 MiB buffer)
        assert (await usage_of(http, relay, relay.token))["today_tokens"] == 33 + BIG_PROMPT_TOKENS
        # The same answer sealed in an envelope v2 (buffered to seal it) is counted too.
        key = v2.ClientKey(relay.client_key())
        inner = env.InnerRequest(
            "POST", "/odd/v1/embeddings", "", {"Content-Type": "application/json"}, json.dumps(embed).encode()
        )
        inner = env.InnerRequest(**{**inner.__dict__, "token": relay.token, "epoch": relay.epoch})
        data, nonce = v2.seal_request(key, inner)
        async with http.post(relay.url + "/", data=data, headers={"Content-Type": v2.CONTENT_TYPE}) as r:
            sealed = await r.read()
        opener = v2.ReplyOpener(key, nonce)
        opener.feed(sealed)
        opener.close()
        assert opener.head[0] == 200
        assert (await usage_of(http, relay, relay.token))["today_tokens"] == 33 + 2 * BIG_PROMPT_TOKENS
    finally:
        await provider.close()


async def test_the_per_client_concurrency_cap_refuses_what_is_over_it(relay_factory, upstream, http):
    relay = await relay_factory(extra="\n[usage]\nmax_concurrent_per_client = 2\n")  # no token budget
    # ~1 s per stream: the other requests certainly arrive while the first two still run
    upstream.state.add_fault({"path": "chat", "token_delay_ms": 150})
    body = json.dumps(STREAM).encode()

    async def one(token: str) -> tuple[int, str]:
        headers = {**bearer(token), "Content-Type": "application/json"}
        async with http.post(relay.url + "/v1/chat/completions", data=body, headers=headers) as r:
            raw = await r.read()
            return r.status, (json.loads(raw)["error"]["code"] if r.status != 200 else "")

    alice = await asyncio.gather(*(one(relay.token) for _ in range(5)), one(relay.other_token))
    upstream.state.clear_faults()
    assert sorted(alice[:5]) == [(200, ""), (200, "")] + [(429, "too_many_in_flight")] * 3
    assert alice[5] == (200, "")  # bob's requests are his own
    assert (await one(relay.token))[0] == 200  # released when they ended
