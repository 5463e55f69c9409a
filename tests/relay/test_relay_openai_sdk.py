"""The official `openai` SDK, unmodified, against the relay: only base_url (and api_key) change."""

from __future__ import annotations

import openai
import pytest
from relay_support import CHAT

from lab.upstream import answers


def client(base_url: str, api_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)


async def test_plain_bearer(relay, upstream):
    async with client(relay.url + "/v1", relay.token) as sdk:
        done = await sdk.chat.completions.create(model=CHAT["model"], messages=CHAT["messages"])
        models = await sdk.models.list()
    assert done.choices[0].message.content == answers.chat_answer(CHAT)[0]
    assert any(m.id == CHAT["model"] for m in models.data)
    assert upstream.state.requests[-1]["authorized"]


async def test_path_token_when_every_header_is_stripped(relay, upstream):
    # What a header-stripping proxy leaves: the SDK's Authorization is junk, the token rides in the path.
    async with client(f"{relay.url}/t/{relay.token}/v1", "stripped-by-proxy") as sdk:
        done = await sdk.chat.completions.create(model=CHAT["model"], messages=CHAT["messages"])
        emb = await sdk.embeddings.create(model="openai/text-embedding-3-small", input="hi")
    assert done.choices[0].message.content == answers.chat_answer(CHAT)[0]
    assert emb.data[0].embedding == answers.embedding("hi")
    assert "stripped-by-proxy" not in {r["key"] for r in upstream.state.requests}


async def test_stream(relay):
    async with client(relay.url + "/lab/v1", relay.token) as sdk:
        stream = await sdk.chat.completions.create(
            model=CHAT["model"],
            messages=CHAT["messages"],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            if chunk.usage:
                usage = chunk.usage
    assert "".join(parts) == answers.chat_answer(CHAT)[0]
    assert usage is not None and usage.completion_tokens > 0


async def test_sdk_sees_relay_errors_as_openai_errors(relay):
    async with client(relay.url + "/v1", "lrt_" + "q" * 43) as sdk:
        with pytest.raises(openai.AuthenticationError) as err:
            await sdk.models.list()
    assert err.value.status_code == 401 and err.value.body["code"] == "invalid_token"
