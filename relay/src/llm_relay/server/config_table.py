"""What every part of the config parser shares: the error type and typed access to one TOML table."""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """Invalid configuration or secret file; the message is safe to log."""


class Table:
    """Typed access to one TOML table, rejecting unknown keys so typos do not pass silently."""

    def __init__(self, data: Any, name: str, known: set[str]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"[{name}] must be a table")
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"[{name}] unknown keys: {', '.join(sorted(unknown))}")
        self.data, self.name = data, name

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.data.get(key, default)
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, float, (int, float)))
        if not ok:
            raise ConfigError(f"[{self.name}] {key} has the wrong type ({type(value).__name__})")
        return value

    def number(self, key: str, default: float, minimum: float = 0) -> float:
        value = self.get(key, (int, float), default)
        if value < minimum:
            raise ConfigError(f"[{self.name}] {key} must be >= {minimum}")
        return value
