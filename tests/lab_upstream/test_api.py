"""The fake upstream answers in OpenRouter's shapes, through the official openai SDK and raw HTTP."""

from __future__ import annotations

import json

import openai
import pytest

from lab.upstream import answers

from .conftest import KEY, OTHER_KEY

AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping over the tunnel"}]


def sdk(upstream, key=KEY):
    return openai.AsyncOpenAI(base_url=upstream.base, api_key=key, max_retries=0)


def sse_events(raw: str) -> list[str]:
    """Each SSE event (data payload, or the comment line) in order."""
    return [block for block in raw.split("\n\n") if block]


async def test_json_completion_is_deterministic_and_records_key(upstream):
    result = await sdk(upstream).chat.completions.create(model="lab/echo", messages=MESSAGES)
    expected, finish = answers.chat_answer({"messages": MESSAGES})
    assert result.choices[0].message.content == expected
    assert expected.startswith("lab-echo: ping over the tunnel [")
    assert result.choices[0].finish_reason == finish == "stop"
    assert result.object == "chat.completion" and result.id.startswith("gen-")
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    entry = upstream.state.requests[-1]
    assert (entry["key"], entry["authorized"]) == (KEY, True)
    assert (entry["model"], entry["stream"]) == ("lab/echo", False)


async def test_different_requests_get_different_answers(upstream):
    client = sdk(upstream, OTHER_KEY)
    one = await client.chat.completions.create(model="lab/echo", messages=[{"role": "user", "content": "a"}])
    two = await client.chat.completions.create(model="lab/echo", messages=[{"role": "user", "content": "b"}])
    assert one.choices[0].message.content != two.choices[0].message.content
    assert upstream.state.keys_seen() == [OTHER_KEY, OTHER_KEY]


async def test_stream_through_sdk_concatenates_to_json_answer(upstream):
    stream = await sdk(upstream).chat.completions.create(model="lab/echo", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answers.chat_answer({"messages": MESSAGES})[0]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(answers.tokenize(text))


async def test_stream_raw_framing_is_openrouter_sse(upstream):
    body = {"model": "lab/echo", "messages": MESSAGES, "stream": True}
    resp = await upstream.post("/api/v1/chat/completions", json=body, headers=AUTH)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(await resp.text())
    assert events[0] == ": OPENROUTER PROCESSING"
    assert events[-1] == "data: [DONE]"
    # processing_comment_every=3 in the fixture: comments are interleaved between data events.
    assert events.count(": OPENROUTER PROCESSING") > 1
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1] if e.startswith("data: ")]
    assert all(p["object"] == "chat.completion.chunk" and p["provider"] == "Lab" for p in payloads)
    assert payloads[-1]["choices"] == [] and set(payloads[-1]["usage"]) >= {"prompt_tokens", "total_tokens"}


async def test_max_tokens_truncates_with_length(upstream):
    result = await sdk(upstream).chat.completions.create(model="lab/echo", messages=MESSAGES, max_tokens=2)
    assert result.choices[0].finish_reason == "length"
    assert result.choices[0].message.content == "lab-echo: ping "


@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "No auth credentials found"), ({"Authorization": "Bearer sk-or-v1-wrong"}, "User not found.")],
)
async def test_missing_or_wrong_key_is_401_openrouter_shape(upstream, headers, message):
    resp = await upstream.post("/api/v1/chat/completions", json={"messages": MESSAGES}, headers=headers)
    assert resp.status == 401
    assert await resp.json() == {"error": {"code": 401, "message": message}}
    assert upstream.state.requests[-1]["authorized"] is False


async def test_sdk_sees_authentication_error(upstream):
    with pytest.raises(openai.AuthenticationError):
        await sdk(upstream, "sk-or-v1-wrong").chat.completions.create(model="lab/echo", messages=MESSAGES)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "lab/echo"}, 'Input required: specify "prompt" or "messages"'),
        ({"model": "nope/none", "messages": MESSAGES}, "nope/none is not a valid model ID"),
        (
            {"messages": [{"role": "wizard", "content": "x"}]},
            "Invalid messages: each message needs a valid role",
        ),
    ],
)
async def test_bad_chat_body_is_400(upstream, body, message):
    resp = await upstream.post("/api/v1/chat/completions", json=body, headers=AUTH)
    assert resp.status == 400
    assert await resp.json() == {"error": {"code": 400, "message": message}}


async def test_embeddings_are_deterministic(upstream):
    client = sdk(upstream)
    result = await client.embeddings.create(model="openai/text-embedding-3-small", input=["alpha", "beta"])
    assert [d.embedding for d in result.data] == [answers.embedding("alpha"), answers.embedding("beta")]
    assert result.usage.prompt_tokens == 2
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="lab/echo", input="alpha")


async def test_models_catalogue_is_public_and_lists_configured_models(upstream):
    resp = await upstream.get("/api/v1/models")
    assert resp.status == 200
    ids = [m["id"] for m in (await resp.json())["data"]]
    assert "lab/echo" in ids and "openai/text-embedding-3-small" in ids
    listed = [m.id async for m in sdk(upstream).models.list()]
    assert listed == ids


async def test_requests_endpoint_exposes_the_keys(upstream):
    await sdk(upstream, OTHER_KEY).chat.completions.create(model="lab/echo", messages=MESSAGES)
    logged = (await (await upstream.get("/_lab/requests")).json())["requests"]
    assert [(r["path"], r["key"]) for r in logged] == [("/api/v1/chat/completions", OTHER_KEY)]
    assert (await upstream.delete("/_lab/requests")).status == 200
    assert upstream.state.keys_seen() == []
