"""The library API for users' own scripts: `from llm_relay.client import openai_client`."""

from __future__ import annotations

import asyncio

import pytest
from client_harness import client_toml
from llm_relay.client import async_openai_client, load_profile, openai_client

from lab.upstream import answers

MESSAGES = [{"role": "user", "content": "Summarise the Treaty of Westphalia."}]
EXPECTED = answers.chat_answer({"messages": MESSAGES})[0]


@pytest.mark.parametrize("encrypt", [False, True])
def test_openai_client_from_the_config_file(tmp_path, relay, keys, encrypt, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f'default_profile = "home"\n[profiles.home]\n{client_toml(relay.url, keys)}')
    monkeypatch.setenv("LLM_RELAY_CLIENT_CONFIG", str(config))
    client = openai_client(encrypt=encrypt)
    assert (
        client.chat.completions.create(model="lab/echo", messages=MESSAGES).choices[0].message.content
        == EXPECTED
    )
    streamed = client.chat.completions.create(model="lab/echo", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == EXPECTED


def test_async_client_with_an_explicit_profile(relay, keys):
    profile = load_profile(env={}, url=relay.url, token=keys["token"], fernet_key=keys["fernet_key"])
    assert profile.encrypting

    async def main() -> str:
        client = async_openai_client(profile)
        pieces = []
        async for chunk in await client.chat.completions.create(
            model="lab/echo", messages=MESSAGES, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        await client.close()
        return "".join(pieces)

    assert asyncio.run(main()) == EXPECTED
