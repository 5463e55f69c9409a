"""The fake upstream's Responses API (`/api/v1/responses`, what Codex speaks), through the official `openai`
SDK's `client.responses` (it parses every event into its pydantic models, so a wrong shape fails there)
and raw HTTP for the event names and order."""

from __future__ import annotations

import json

import openai
import pytest

from lab.upstream import responses

from .conftest import KEY

MODEL = "openai/gpt-4o-mini"
INPUT = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [{"type": "input_text", "text": "Say hi to the responses dialect"}]},
]


def sdk(upstream) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=upstream.base, api_key=KEY, max_retries=0, timeout=10)


async def test_json_response_with_usage(upstream):
    result = await sdk(upstream).responses.create(model=MODEL, input=INPUT)
    text, usage, status = responses.answer({"input": INPUT})
    assert text.startswith("lab-echo: Say hi to the responses dialect [") and status == "completed"
    assert result.object == "response" and result.id.startswith("resp_") and result.status == "completed"
    assert result.output_text == text and result.model == MODEL
    assert result.output[0].type == "message" and result.output[0].role == "assistant"
    assert result.usage.input_tokens == usage["input_tokens"] > 0
    assert result.usage.output_tokens == len(text.split()) == usage["output_tokens"]
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    entry = upstream.state.requests[-1]
    assert (entry["path"], entry["key"], entry["model"], entry["stream"]) == (
        "/api/v1/responses",
        KEY,
        MODEL,
        False,
    )


async def test_a_plain_string_input_is_one_user_message(upstream):
    result = await sdk(upstream).responses.create(model=MODEL, input="hello there")
    assert result.output_text.startswith("lab-echo: hello there [")


async def test_stream_events_parse_and_end_with_completed_usage(upstream):
    stream = await sdk(upstream).responses.create(model=MODEL, input=INPUT, stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    text, usage, _ = responses.answer({"input": INPUT})
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 3 and "".join(deltas) == text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.status == "completed" and final.output_text == text
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert events[0].response.usage is None  # usage arrives with the last event only


async def test_sdk_stream_helper_gives_the_final_response(upstream):
    async with sdk(upstream).responses.stream(model=MODEL, input=INPUT) as stream:
        final = await stream.get_final_response()
    assert final.output_text == responses.answer({"input": INPUT})[0]


async def test_max_output_tokens_makes_an_incomplete_response(upstream):
    client = sdk(upstream)
    result = await client.responses.create(model=MODEL, input=INPUT, max_output_tokens=2)
    assert result.status == "incomplete" and result.incomplete_details.reason == "max_output_tokens"
    assert len(result.output_text.split()) == 2 and result.usage.output_tokens == 2
    stream = await client.responses.create(model=MODEL, input=INPUT, max_output_tokens=2, stream=True)
    kinds = [e.type async for e in stream]
    assert kinds[-1] == "response.incomplete"


async def test_raw_sse_names_each_event(upstream):
    body = {"model": MODEL, "input": "raw", "stream": True}
    resp = await upstream.post("/api/v1/responses", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    blocks = [b for b in (await resp.text()).split("\n\n") if b]
    for block in blocks:
        name, data = block.split("\n")
        assert name.removeprefix("event: ") == json.loads(data.removeprefix("data: "))["type"]


async def test_mid_stream_error_then_failed(upstream):
    upstream.state.add_fault({"path": "/responses", "error_after_tokens": 2, "times": 1})
    stream = await sdk(upstream).responses.create(model=MODEL, input=INPUT, stream=True)
    events = [event async for event in stream]  # the SDK hands both on as typed events
    assert [e.type for e in events][-4:] == [
        "response.output_text.delta",
        "response.output_text.delta",
        "error",
        "response.failed",
    ]
    assert events[-2].message == "Provider disconnected unexpectedly" and events[-2].code == "server_error"
    assert events[-1].response.status == "failed" and events[-1].response.error.code == "server_error"
    assert upstream.state.requests[-1]["outcome"] == "fault_error_event"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": MODEL}, 'specify "input"'),
        ({"model": MODEL, "input": []}, 'specify "input"'),
        ({"model": MODEL, "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "no/such", "input": "x"}, "not a valid model ID"),
        ({"model": MODEL, "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
async def test_bad_bodies_are_400_with_a_message(upstream, body, message):
    resp = await upstream.post("/api/v1/responses", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status == 400
    assert message in (await resp.json())["error"]["message"]


async def test_needs_the_key(upstream):
    resp = await upstream.post("/api/v1/responses", json={"model": MODEL, "input": "x"})
    assert resp.status == 401
