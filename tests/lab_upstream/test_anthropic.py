"""The fake upstream's Anthropic dialect (`/v1/messages`), through the official `anthropic` SDK and raw HTTP.

Shapes checked against the SDK's own types (it parses every event into its pydantic models) and Anthropic's
documented event order.
"""

from __future__ import annotations

import json

import anthropic
import pytest

from lab.upstream import messages

from .conftest import KEY

MESSAGES = [{"role": "user", "content": "ping the claude dialect"}]
MODEL = "claude-sonnet-4-5"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def sdk(upstream, key=KEY) -> anthropic.AsyncAnthropic:
    # The SDK appends /v1/messages to base_url: the fake's Anthropic API hangs below its root.
    return anthropic.AsyncAnthropic(
        base_url=str(upstream.server.make_url("")), api_key=key, max_retries=0, timeout=10
    )


async def test_json_message_and_key_recorded(upstream):
    # This SDK version sends its api_key as Bearer: raw headers make the x-api-key path explicit.
    client = sdk(upstream)
    client = client.with_options(default_headers={"x-api-key": KEY})
    result = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    text, stop = messages.answer({"messages": MESSAGES, "max_tokens": 64})
    assert result.type == "message" and result.id.startswith("msg_") and result.role == "assistant"
    assert result.content[0].type == "text" and result.content[0].text == text
    assert result.stop_reason == stop == "end_turn" and result.model == MODEL
    assert result.usage.input_tokens > 0 and result.usage.output_tokens == len(text.split())
    entry = upstream.state.requests[-1]
    assert (entry["path"], entry["key"], entry["authorized"]) == ("/v1/messages", KEY, True)
    assert entry["headers"]["anthropic-version"]  # the SDK sends its own API version


async def test_stream_events_in_anthropic_order(upstream):
    client = sdk(upstream).with_options(default_headers={"x-api-key": KEY})
    async with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    text, _ = messages.answer({"messages": MESSAGES, "max_tokens": 64})
    assert final.content[0].text == text and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(text.split()) and final.usage.input_tokens > 0
    raw = [k for k in kinds if k != "text"]  # the helper adds derived "text" events and hides pings
    assert raw[:2] == ["message_start", "content_block_start"]
    assert raw[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_raw_sse_has_named_events(upstream):
    body = {"model": MODEL, "max_tokens": 3, "messages": MESSAGES, "stream": True}
    resp = await upstream.post("/v1/messages", json=body, headers=HEADERS)
    assert resp.headers["Content-Type"].startswith("text/event-stream") and resp.headers["request-id"]
    blocks = [b for b in (await resp.text()).split("\n\n") if b]
    names = [b.split("\n")[0][7:] for b in blocks]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[3:6] == ["content_block_delta"] * 3 and names[6:] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for block in blocks:
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        assert json.loads(data[6:])["type"] == event[7:]
    delta = json.loads(blocks[-2].split("\n")[1][6:])
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["output_tokens"] == 3


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "x-api-key header is required"),
        ({"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}, 401, "x-api-key"),
        ({"x-api-key": "sk-ant-wrong", "anthropic-version": "2023-06-01"}, 401, "invalid x-api-key"),
        ({"x-api-key": KEY}, 400, "anthropic-version: header is required"),
    ],
)
async def test_auth_is_anthropics(upstream, headers, status, message):
    body = {"model": MODEL, "max_tokens": 8, "messages": MESSAGES}
    resp = await upstream.post("/v1/messages", json=body, headers=headers)
    doc = await resp.json()
    assert resp.status == status and doc["type"] == "error" and message in doc["error"]["message"]
    assert doc["request_id"] == resp.headers["request-id"]


async def test_sdk_errors_map_to_anthropic_exceptions(upstream):
    client = sdk(upstream, "sk-ant-wrong").with_options(default_headers={"x-api-key": "sk-ant-wrong"})
    with pytest.raises(anthropic.AuthenticationError) as err:
        await client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
    assert err.value.request_id and err.value.body["error"]["type"] == "authentication_error"
    good = sdk(upstream).with_options(default_headers={"x-api-key": KEY})
    with pytest.raises(anthropic.NotFoundError):
        await good.messages.create(model="gpt-4o", max_tokens=8, messages=MESSAGES)
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        await good.messages.create(model=MODEL, max_tokens=0, messages=MESSAGES)


async def test_fault_status_and_mid_stream_error_in_anthropic_shape(upstream):
    upstream.state.add_fault({"path": "/v1/messages", "status": 529, "times": 1})
    client = sdk(upstream).with_options(default_headers={"x-api-key": KEY})
    with pytest.raises(anthropic.APIStatusError) as err:
        await client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
    assert err.value.status_code == 529 and err.value.body["error"]["type"] == "overloaded_error"
    upstream.state.add_fault({"path": "/v1/messages", "error_after_tokens": 1, "times": 1})
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        async with client.messages.stream(model=MODEL, max_tokens=8, messages=MESSAGES) as stream:
            async for _ in stream:
                pass
