"""Client side of llm-relay: configuration, transports, and ready-made OpenAI SDK clients.

from llm_relay.client import openai_client
client = openai_client()                  # default profile, from ~/.config/llm-relay/config.toml + env
client = openai_client("work", encrypt=True)
client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
"""

from __future__ import annotations

import importlib
from typing import Any

# Where each public name lives; imported on first use so `llm-relay keygen` does not load the HTTP stack.
_EXPORTS = {
    "ConfigError": "config",
    "Profile": "config",
    "default_config_path": "config",
    "load_profile": "config",
    "async_http_client": "factory",
    "async_openai_client": "factory",
    "http_client": "factory",
    "openai_client": "factory",
    "AsyncFailoverTransport": "failover",
    "FailoverTransport": "failover",
    "AsyncRelayTransport": "transport",
    "RelayTransport": "transport",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
