"""llm-relay: an OpenAI-compatible relay that injects upstream keys, streams, and speaks Fernet envelopes."""

__version__ = "0.1.0"
