"""Client side of llm-relay: configuration, transports, and ready-made OpenAI SDK clients.

from llm_relay.client import openai_client
client = openai_client()                  # default profile, from ~/.config/llm-relay/config.toml + env
client = openai_client("work", encrypt=True)
client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
"""

from __future__ import annotations

from .config import ConfigError, Profile, default_config_path, load_profile
from .factory import async_http_client, async_openai_client, http_client, openai_client
from .transport import AsyncRelayTransport, RelayTransport

__all__ = [
    "AsyncRelayTransport",
    "ConfigError",
    "Profile",
    "RelayTransport",
    "async_http_client",
    "async_openai_client",
    "default_config_path",
    "http_client",
    "load_profile",
    "openai_client",
]
