"""The official `anthropic` SDK, unmodified, through the relay to an Anthropic-style provider.

The provider table is the issue's: `auth = "x-api-key"` plus a fixed `anthropic-version`. The fake
upstream's `/v1/messages` refuses anything but the key in `x-api-key`, so an answer proves the relay put
it there; its request log proves the client's token never travelled.
"""

from __future__ import annotations

import json

import anthropic
import pytest
from relay_support import UPSTREAM_KEYS, metric

from lab.upstream import messages

MODEL = "claude-sonnet-4-5"
QUESTION = [{"role": "user", "content": "hello from the anthropic sdk"}]


def anthropic_table(upstream_base: str) -> str:
    root = upstream_base.removesuffix("/api/v1")
    return f"""
[providers.anthropic]
base_url = "{root}/v1"
keys_file = "openrouter-keys"
auth = "x-api-key"
headers = {{ "anthropic-version" = "2023-06-01" }}
"""


@pytest.fixture
async def relay_a(relay_factory, upstream):
    return await relay_factory(extra=anthropic_table(upstream.base))


def assert_upstream_saw_only_the_provider_key(upstream, token: str) -> None:
    seen = upstream.state.requests[-1]
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["path"] == "/v1/messages" and seen["authorized"]
    assert headers["x-api-key"] in UPSTREAM_KEYS and headers["anthropic-version"] == "2023-06-01"
    assert token not in json.dumps(seen["headers"]) and "authorization" not in headers


@pytest.mark.parametrize("stream", [False, True])
async def test_sdk_with_token_in_base_url(relay_a, upstream, stream):
    # What a header-stripping proxy leaves: the token rides in the base URL, the SDK's key is junk.
    sdk = anthropic.AsyncAnthropic(
        base_url=f"{relay_a.url}/t/{relay_a.token}/anthropic", api_key="junk", max_retries=0, timeout=10
    )
    expected, stop = messages.answer({"messages": QUESTION, "max_tokens": 64})
    if stream:
        async with sdk.messages.stream(model=MODEL, max_tokens=64, messages=QUESTION) as events:
            pieces = [text async for text in events.text_stream]
            final = await events.get_final_message()
        assert len(pieces) > 3 and "".join(pieces) == expected
    else:
        final = await sdk.messages.create(model=MODEL, max_tokens=64, messages=QUESTION)
    assert final.content[0].text == expected and final.stop_reason == stop
    assert_upstream_saw_only_the_provider_key(upstream, relay_a.token)
    assert "junk" not in json.dumps(upstream.state.requests[-1]["headers"])


@pytest.mark.parametrize("channel", ["x-api-key", "bearer"])
async def test_sdk_sending_the_token_as_its_api_key(relay_a, upstream, channel):
    # Older SDKs and Claude Code (ANTHROPIC_API_KEY) send x-api-key; this SDK sends Authorization: Bearer.
    if channel == "x-api-key":
        options = {"api_key": None, "default_headers": {"x-api-key": relay_a.token}}
    else:
        options = {"api_key": relay_a.token}
    sdk = anthropic.AsyncAnthropic(base_url=f"{relay_a.url}/anthropic", max_retries=0, timeout=10, **options)
    final = await sdk.messages.create(model=MODEL, max_tokens=16, messages=QUESTION)
    assert final.content[0].text
    assert_upstream_saw_only_the_provider_key(upstream, relay_a.token)
    assert json.loads(relay_a.log.lines[-1])["token"] == "alice"


async def test_unknown_token_in_x_api_key_is_refused(relay_a, upstream):
    sdk = anthropic.AsyncAnthropic(
        base_url=f"{relay_a.url}/anthropic",
        api_key=None,
        default_headers={"x-api-key": "lrt_" + "z" * 43},
        max_retries=0,
    )
    before = len(upstream.state.requests)
    with pytest.raises(anthropic.AuthenticationError):
        await sdk.messages.create(model=MODEL, max_tokens=16, messages=QUESTION)
    assert len(upstream.state.requests) == before


async def test_query_auth_style_puts_the_key_in_the_query(relay_factory, upstream, http):
    # Gemini-style `key=`: the relay replaces any client value under that name, never forwards it.
    extra = f"""
[providers.gem]
base_url = "{upstream.base}"
keys_file = "openrouter-keys"
auth = "query:key"
"""
    relay = await relay_factory(extra=extra)
    headers = {"Authorization": f"Bearer {relay.token}"}
    async with http.get(relay.url + "/gem/v1/models?key=client-junk&x=1", headers=headers) as r:
        assert r.status == 200
    seen = upstream.state.requests[-1]
    assert seen["key"] is None and "authorization" not in {k.lower() for k in seen["headers"]}
    assert seen["query"] in (f"x=1&key={k}" for k in UPSTREAM_KEYS)
    assert relay.token not in json.dumps(seen["headers"]) and "client-junk" not in seen["query"]


async def test_anthropic_usage_is_counted_from_json_and_stream_events(relay_a, http):

    sdk = anthropic.AsyncAnthropic(base_url=f"{relay_a.url}/anthropic", api_key=relay_a.token, max_retries=0)
    one = await sdk.messages.create(model=MODEL, max_tokens=64, messages=QUESTION)
    async with sdk.messages.stream(model=MODEL, max_tokens=64, messages=QUESTION) as events:
        two = await events.get_final_message()
    async with http.get(relay_a.metrics_url + "/metrics") as r:
        text = await r.text()
    labels = {"client": "alice", "provider": "anthropic", "model": MODEL}
    prompt = one.usage.input_tokens + two.usage.input_tokens
    completion = one.usage.output_tokens + two.usage.output_tokens
    assert metric(text, "llm_relay_tokens_total", **labels, kind="prompt") == prompt > 0
    assert metric(text, "llm_relay_tokens_total", **labels, kind="completion") == completion > 0
