"""What the relay's own answers show: a client's /metrics holds only its own lines, /v1/providers no
credentials from a base_url, and a buffered answer each CORS header once (browsers refuse a doubled
Access-Control-Allow-Origin)."""

from __future__ import annotations

from relay_support import CHAT, bearer, provider_toml

ORIGIN = "https://tool.example"


async def test_main_listener_metrics_show_only_the_callers_lines(relay, http):
    for token in (relay.token, relay.other_token):
        async with http.post(relay.url + "/v1/chat/completions", json=CHAT, headers=bearer(token)) as r:
            assert r.status == 200
    async with http.get(relay.url + "/metrics", headers=bearer(relay.token)) as r:
        mine = await r.text()
    assert 'token="alice"' in mine and 'client="alice"' in mine
    assert "bob" not in mine  # neither bob's name nor his counts and tokens
    assert "llm_relay_request_duration_seconds_count" in mine  # unlabelled aggregates stay
    async with http.get(relay.metrics_url + "/metrics") as r:
        everything = await r.text()  # the localhost listener Prometheus scrapes: all clients
    assert 'token="bob"' in everything and 'client="bob"' in everything


async def test_providers_list_shows_no_userinfo_of_a_base_url(relay_factory, http):
    relay = await relay_factory(
        extra=provider_toml("corp", "https://svc-user:s3cr3t-pass@llm.corp.example/v1")
    )
    async with http.get(relay.url + "/v1/providers", headers=bearer(relay.token)) as r:
        text = await r.text()
    assert "s3cr3t-pass" not in text and "svc-user" not in text
    assert "https://llm.corp.example/v1" in text


async def test_a_buffered_answer_carries_each_cors_header_once(relay_factory, http):
    relay = await relay_factory(extra=f'\n[cors]\nallow_origins = ["{ORIGIN}"]\n')
    headers = {**bearer(relay.token), "Origin": ORIGIN}
    async with http.post(relay.url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 200
        assert r.headers.getall("Access-Control-Allow-Origin") == [ORIGIN]
        assert len(r.headers.getall("Access-Control-Expose-Headers")) == 1
        assert [v for v in r.headers.getall("Vary") if "Origin" in v] == ["Origin"]
    async with http.post(
        relay.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
    ) as r:
        await r.read()
        assert r.headers.getall("Access-Control-Allow-Origin") == [ORIGIN]  # streams: once as before
