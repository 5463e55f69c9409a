"""The fake upstream's model catalogue, in the shape of OpenRouter's `GET /api/v1/models`."""

from __future__ import annotations

from typing import Any

DEFAULT_CHAT_MODELS = ["openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet", "lab/echo"]
DEFAULT_EMBEDDING_MODELS = ["openai/text-embedding-3-small"]
CREATED = 1735689600  # fixed, so the catalogue is byte-stable between runs


def model_entry(model_id: str, *, embedding: bool = False) -> dict[str, Any]:
    output = ["embeddings"] if embedding else ["text"]
    return {
        "id": model_id,
        "canonical_slug": model_id,
        "name": f"Lab: {model_id}",
        "created": CREATED,
        "description": "Deterministic lab stand-in; answers are derived from the request.",
        "context_length": 128000,
        "architecture": {
            "modality": f"text->{output[0]}",
            "input_modalities": ["text"],
            "output_modalities": output,
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
        "top_provider": {"context_length": 128000, "max_completion_tokens": 16384, "is_moderated": False},
        "per_request_limits": None,
        "supported_parameters": [] if embedding else ["max_tokens", "temperature", "stream", "stop"],
    }


def catalogue(chat_models: list[str], embedding_models: list[str]) -> dict[str, Any]:
    entries = [model_entry(m) for m in chat_models]
    entries += [model_entry(m, embedding=True) for m in embedding_models]
    return {"data": entries}
