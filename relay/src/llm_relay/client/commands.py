"""`llm-relay ask` and `llm-relay embed`: one request through the relay with the official OpenAI SDK."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from .config import Profile
from .factory import openai_client


def _messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}]


def ask(
    profile: Profile,
    prompt: str,
    *,
    model: str | None,
    system: str | None,
    stream: bool,
    as_json: bool,
    max_tokens: int | None,
    out: TextIO = sys.stdout,
) -> int:
    client = openai_client(profile)
    extra: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
    kwargs = {"model": model or profile.model, "messages": _messages(prompt, system), **extra}
    if not stream:
        completion = client.chat.completions.create(**kwargs)
        if as_json:
            out.write(completion.model_dump_json(indent=2) + "\n")
        else:
            out.write((completion.choices[0].message.content or "") + "\n")
        return 0
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if as_json:
            out.write(chunk.model_dump_json() + "\n")  # JSON lines, one per streamed chunk
        elif chunk.choices and chunk.choices[0].delta.content:
            out.write(chunk.choices[0].delta.content)
        out.flush()
    if not as_json:
        out.write("\n")
    return 0


def embed(
    profile: Profile, texts: list[str], *, model: str | None, as_json: bool, out: TextIO = sys.stdout
) -> int:
    client = openai_client(profile)
    result = client.embeddings.create(model=model or profile.embedding_model, input=texts)
    if as_json:
        out.write(result.model_dump_json(indent=2) + "\n")
    else:
        for item in result.data:
            out.write(json.dumps(item.embedding) + "\n")
    return 0
