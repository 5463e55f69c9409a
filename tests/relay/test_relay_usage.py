"""Token usage per client, provider and model: /metrics, /v1/usage and the daily budget."""

from __future__ import annotations

import json

from relay_support import CHAT, bearer, metric

from lab.upstream import answers, responses


async def completions(relay, http, token: str) -> None:
    async with http.post(relay.url + "/v1/chat/completions", json=CHAT, headers=bearer(token)) as r:
        assert r.status == 200
    body = {**CHAT, "stream": True}
    async with http.post(relay.url + "/v1/chat/completions", json=body, headers=bearer(token)) as r:
        assert r.status == 200
        await r.read()


async def test_json_and_streamed_usage_show_in_metrics_under_the_client(relay, http):
    await completions(relay, http, relay.token)
    expected = answers.usage(CHAT, answers.chat_answer(CHAT)[0])
    async with http.get(relay.metrics_url + "/metrics") as r:
        text = await r.text()
    labels = {"client": "alice", "provider": "openrouter", "model": CHAT["model"]}
    assert metric(text, "llm_relay_tokens_total", **labels, kind="prompt") == 2 * expected["prompt_tokens"]
    assert (
        metric(text, "llm_relay_tokens_total", **labels, kind="completion")
        == 2 * expected["completion_tokens"]
    )


async def test_responses_api_usage_json_and_streamed(relay, http):
    """OpenAI's Responses API (Codex): usage in the JSON answer and in `response.completed`'s response."""
    body = {"model": "lab/echo", "input": [{"role": "user", "content": "count me"}]}
    for stream in (False, True):
        sent = {**body, "stream": stream}
        async with http.post(relay.url + "/v1/responses", json=sent, headers=bearer(relay.token)) as r:
            assert r.status == 200
            raw = await r.read()
    assert b"response.completed" in raw  # the second answer was the stream
    _, usage, _ = responses.answer(body)
    async with http.get(relay.metrics_url + "/metrics") as r:
        text = await r.text()
    labels = {"client": "alice", "provider": "openrouter", "model": "lab/echo"}
    assert metric(text, "llm_relay_tokens_total", **labels, kind="prompt") == 2 * usage["input_tokens"]
    assert metric(text, "llm_relay_tokens_total", **labels, kind="completion") == 2 * usage["output_tokens"]


async def test_a_client_sees_only_its_own_usage(relay, http):
    await completions(relay, http, relay.token)
    async with http.get(relay.url + "/v1/usage", headers=bearer(relay.other_token)) as r:
        mine = await r.json()
    assert mine["client"] == "bob" and mine["since_start"] == [] and mine["today_tokens"] == 0
    async with http.get(relay.url + "/v1/usage", headers=bearer(relay.token)) as r:
        alice = await r.json()
    total = answers.usage(CHAT, answers.chat_answer(CHAT)[0])["total_tokens"]
    assert alice["today_tokens"] == 2 * total and alice["daily_token_budget"] is None
    assert alice["since_start"][0]["model"] == CHAT["model"]


async def test_a_spent_budget_answers_429_with_a_clear_message(relay_factory, upstream, http):
    relay = await relay_factory(
        extra="\n[usage]\ndaily_token_budget = 1000000\nclient_budgets = { alice = 30 }\n"
    )
    # max_tokens 1: it reserves 1 + (body bytes / 4), about 26 of alice's 30 (server/token_budget.py).
    small = {**CHAT, "max_tokens": 1}
    async with http.post(relay.url + "/v1/chat/completions", json=small, headers=bearer(relay.token)) as r:
        assert r.status == 200  # its reservation fitted; its reported usage is counted when it ends
    async with http.get(relay.url + "/v1/usage", headers=bearer(relay.token)) as r:
        total = (await r.json())["today_tokens"]  # what the provider reported for it
    assert 0 < total < 30
    before = len(upstream.state.requests)
    async with http.post(relay.url + "/v1/chat/completions", json=small, headers=bearer(relay.token)) as r:
        assert r.status == 429 and int(r.headers["Retry-After"]) > 0
        err = (await r.json())["error"]
    assert err["code"] == "token_budget_exhausted" and "alice" in err["message"]
    assert f"{total} are used" in err["message"] and "may use up to" in err["message"]
    assert "resets at 00:00 UTC" in err["message"] and len(upstream.state.requests) == before
    async with http.get(relay.url + "/v1/usage", headers=bearer(relay.token)) as r:
        usage = await r.json()  # still answered: a client can see why it is refused
    assert usage["daily_token_budget"] == 30 and usage["today_tokens"] == total
    async with http.post(
        relay.url + "/v1/chat/completions", json=CHAT, headers=bearer(relay.other_token)
    ) as r:
        assert r.status == 200  # bob's budget is the default one
    assert json.loads(relay.log.lines[-1])["token"] == "bob"
