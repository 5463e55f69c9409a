"""Token usage: read from provider answers, counted per client, provider and model, checked against budgets.

Where the numbers come from (nothing is estimated, only what the provider reports):
- JSON answers: the top-level `usage` object (OpenAI/OpenRouter `prompt_tokens`/`completion_tokens`,
  Anthropic `input_tokens` (+ `cache_creation_input_tokens`, `cache_read_input_tokens`)/`output_tokens`);
- SSE streams: every `data:` event that carries a non-null `usage` (OpenAI's final usage chunk,
  Anthropic's `message_start` and `message_delta`, whose `output_tokens` is cumulative): the last value of
  each field wins.
The relay never adds `stream_options.include_usage` to a request: see relay/docs/config.md (`[usage]`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections import Counter
from typing import Any

MAX_EVENT_BYTES = 1024 * 1024  # an SSE line longer than this is not inspected (usage events are small)
_PROMPT_FIELDS = ("prompt_tokens", "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class Usage:
    """What one answer reported: model and token counts (None = not reported)."""

    __slots__ = ("completion", "model", "prompt")

    def __init__(self) -> None:
        self.model = ""
        self.prompt: int | None = None
        self.completion: int | None = None

    @property
    def reported(self) -> bool:
        return self.prompt is not None or self.completion is not None

    def update(self, doc: Any) -> None:
        """Take `usage` (and `model`) from one JSON document: an answer or one stream event."""
        if not isinstance(doc, dict):
            return
        message = doc.get("message")  # Anthropic's message_start wraps the message
        if isinstance(message, dict) and "usage" in message:
            doc = message
        model = doc.get("model")
        if isinstance(model, str) and model:
            self.model = model[:128]
        usage = doc.get("usage")
        if not isinstance(usage, dict):
            return
        base = usage.get("prompt_tokens", usage.get("input_tokens"))
        if _count(base):  # cache counts alone (without input_tokens) do not replace an earlier total
            self.prompt = sum(usage[k] for k in _PROMPT_FIELDS if _count(usage.get(k)))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        if _count(completion):
            self.completion = completion


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def from_json(body: bytes, usage: Usage) -> None:
    if b'"usage"' not in body:
        return
    with contextlib.suppress(ValueError, RecursionError):  # not JSON after all: nothing to count
        usage.update(json.loads(body))


class StreamTap:
    """Watches an SSE byte stream go by (without changing it) and keeps the usage its events report."""

    __slots__ = ("_partial", "usage")

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk if self._partial else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._partial = data if len(data) <= MAX_EVENT_BYTES else b""
            return
        self._partial = data[end + 1 :] if len(data) - end <= MAX_EVENT_BYTES else b""
        if b'"usage"' not in data:
            return
        for line in data[:end].split(b"\n"):
            if line.startswith(b"data:") and b'"usage"' in line and b'"usage":null' not in line:
                try:
                    self.usage.update(json.loads(line[5:]))
                except (ValueError, RecursionError):
                    continue


def utc_day(now: datetime.datetime | None = None) -> str:
    return (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d")


def seconds_to_midnight(now: datetime.datetime | None = None) -> int:
    now = now or datetime.datetime.now(datetime.UTC)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()))


class UsageLedger:
    """Token totals since the relay started, and today's (UTC) total per client for the budget.

    Kept in memory, like the other counters: a restart starts from zero (Prometheus keeps the history);
    a SIGHUP reload keeps them.
    """

    def __init__(self) -> None:
        self.tokens: Counter[tuple[str, str, str, str]] = Counter()  # (client, provider, model, kind)
        self.day = utc_day()
        self.today: Counter[str] = Counter()  # client -> prompt + completion tokens today

    def _roll(self) -> None:
        day = utc_day()
        if day != self.day:
            self.day, self.today = day, Counter()

    def record(self, client: str, provider: str, usage: Usage) -> None:
        if not usage.reported:
            return
        self._roll()
        model = usage.model or "-"
        for kind, value in (("prompt", usage.prompt), ("completion", usage.completion)):
            if value:
                self.tokens[(client, provider, model, kind)] += value
                self.today[client] += value

    def used_today(self, client: str) -> int:
        self._roll()
        return self.today[client]

    def report(self, client: str, budget: int) -> dict[str, Any]:
        """What `GET /v1/usage` shows a client: its own numbers, nobody else's."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for (who, provider, model, kind), n in sorted(self.tokens.items()):
            if who == client:
                row = rows.setdefault(
                    (provider, model), {"provider": provider, "model": model, "prompt": 0, "completion": 0}
                )
                row[kind] += n
        used = self.used_today(client)
        return {
            "object": "usage",
            "client": client,
            "day": self.day,
            "today_tokens": used,
            "daily_token_budget": budget or None,
            "remaining_today": max(0, budget - used) if budget else None,
            "since_start": list(rows.values()),
        }
