"""Deterministic answers of the fake upstream, derived only from the request.

Tests on the far side of the relay (edge, tunnel, envelope crypto) import these functions to compute what
the upstream must have said, so a byte changed anywhere on the way shows up as a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

ANSWER_PREFIX = "lab-echo: "
EMBEDDING_DIMENSIONS = 8
# One "token" = a run of non-space characters with the spaces that follow it: splitting and re-joining
# is lossless, so a streamed answer concatenates back to exactly the JSON answer.
_TOKEN_RE = re.compile(r"\S+\s*|\s+")


def message_text(content: Any) -> str:
    """Text of an OpenAI message `content`: a string or a list of typed parts (only `text` parts count)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def request_digest(body: dict[str, Any]) -> str:
    """Short stable digest of the whole conversation, so two different requests never share an answer."""
    canonical = json.dumps(body.get("messages", []), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def chat_answer(body: dict[str, Any]) -> tuple[str, str]:
    """(content, finish_reason) for a chat completion request; `max_tokens` truncates like a real model."""
    full = f"{ANSWER_PREFIX}{last_user_text(body['messages'])} [{request_digest(body)}]"
    tokens = tokenize(full)
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(limit, int) and 0 < limit < len(tokens):
        return "".join(tokens[:limit]), "length"
    return full, "stop"


def prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(tokenize(message_text(m.get("content")))) + 1 for m in body.get("messages", []))


def usage(body: dict[str, Any], content: str) -> dict[str, int]:
    prompt, completion = prompt_tokens(body), len(tokenize(content))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def embedding(text: str) -> list[float]:
    """A unit-free vector in [-1, 1) derived from the text's SHA-256: equal texts, equal vectors."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 128.0 - 1.0, 6) for b in digest[:EMBEDDING_DIMENSIONS]]
