"""Mutable state of one fake-upstream app: injected faults and the log of requests it received.

Both are reachable in-process (`app[STATE_KEY]`, or `ctx.registry["upstream"]` in the lab daemon) and over
HTTP under `/_lab/` (see app.py), so tests can arrange a fault and then assert which key the relay sent.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

FAULT_FIELDS = {
    "path": str,  # substring of the request path the rule applies to ("" = every API path)
    "times": int,  # how many matching requests it affects; absent/None = until cleared
    "latency_ms": int,  # wait before answering at all
    "token_delay_ms": int,  # wait between streamed chunks
    "status": int,  # answer this HTTP error (OpenRouter error body) instead of a completion
    "retry_after": int,  # seconds, with status 429 (also drives the X-RateLimit-* headers)
    "message": str,  # error message for `status` / the mid-stream error
    "error_after_tokens": int,  # stream: emit an OpenRouter mid-stream error event after N chunks
    "disconnect_after_tokens": int,  # drop the TCP connection after N chunks (0 = before any byte)
}


class FaultError(ValueError):
    """A fault rule posted to /_lab/faults is malformed."""


def parse_fault(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise FaultError("a fault rule must be a JSON object")
    unknown = set(raw) - set(FAULT_FIELDS)
    if unknown:
        raise FaultError(f"unknown fault fields: {sorted(unknown)}; known: {sorted(FAULT_FIELDS)}")
    rule: dict[str, Any] = {}
    for name, value in raw.items():
        kind = FAULT_FIELDS[name]
        if value is None:
            continue
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise FaultError(f"fault field {name!r} must be a non-negative integer")
        if kind is str and not isinstance(value, str):
            raise FaultError(f"fault field {name!r} must be a string")
        rule[name] = value
    if "status" in rule and not 400 <= rule["status"] <= 599:
        raise FaultError("fault field 'status' must be an HTTP error status (400-599)")
    return rule


@dataclass
class UpstreamState:
    """Faults to inject and requests seen. Accessed only from the event loop that serves the app."""

    api_keys: list[str]
    faults: list[dict[str, Any]] = field(default_factory=list)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=2000))
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def add_fault(self, raw: Any) -> dict[str, Any]:
        rule = parse_fault(raw)
        self.faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        self.faults.clear()

    def take_fault(self, path: str) -> dict[str, Any]:
        """The first rule matching `path` (consuming one of its `times`), or an empty rule."""
        for rule in self.faults:
            if rule.get("path", "") in path:
                if "times" in rule:
                    rule["times"] -= 1
                    if rule["times"] <= 0:
                        self.faults.remove(rule)
                return rule
        return {}

    def record(
        self, method: str, path: str, key: str | None, headers: dict[str, str], query: str = ""
    ) -> dict[str, Any]:
        entry = {
            "seq": next(self._seq),
            "time": time.time(),
            "method": method,
            "path": path,
            "query": query,
            "key": key,
            "authorized": key in self.api_keys,
            "headers": headers,
        }
        self.requests.append(entry)
        return entry

    def keys_seen(self) -> list[str | None]:
        """The key of every recorded request, oldest first: its bearer token on /api/v1, its `x-api-key` on
        /v1 (None = none sent)."""
        return [r["key"] for r in self.requests]

    def clear_requests(self) -> None:
        self.requests.clear()
