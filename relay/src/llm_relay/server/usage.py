"""Token usage: read from provider answers, counted per client, provider and model, checked against budgets.

Where the numbers come from (nothing is estimated, only what the provider reports):
- JSON answers: the top-level `usage` object (OpenAI/OpenRouter `prompt_tokens`/`completion_tokens`,
  Anthropic `input_tokens` (+ `cache_creation_input_tokens`, `cache_read_input_tokens`)/`output_tokens`);
- SSE streams: every `data:` event that carries a non-null `usage` (OpenAI's final usage chunk,
  Anthropic's `message_start` and `message_delta`, whose `output_tokens` is cumulative, the Responses
  API's `response.completed`/`response.incomplete`, whose `response` holds it): the last value of each
  field wins.
The relay never adds `stream_options.include_usage` to a request: see relay/docs/config.md (`[usage]`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import zlib
from collections import Counter
from typing import Any

MAX_EVENT_BYTES = 1024 * 1024  # an SSE line longer than this is not inspected (usage events are small)
MAX_GUNZIP = 80 * 1024 * 1024  # a compressed answer is inflated up to this size to read its usage
_GZIP_MAGIC = b"\x1f\x8b"
# The top-level usage object of a JSON answer too large to buffer (streamed through in chunks): it comes
# last in OpenAI's and Anthropic's answers and holds no nested object but Anthropic's cache fields.
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}]|\{[^{}]*\})*\})')
JSON_TAIL = 64 * 1024  # bytes of a streamed JSON answer kept to find its usage object
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
        for wrapper in ("message", "response"):  # Anthropic's message_start, the Responses API's events
            inner = doc.get(wrapper)
            if isinstance(inner, dict) and "usage" in inner:
                doc = inner
                break
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
    if body[:2] == _GZIP_MAGIC:
        body = _gunzip(body)
    if b'"usage"' not in body:
        return
    with contextlib.suppress(ValueError, RecursionError):  # not JSON after all: nothing to count
        usage.update(json.loads(body))


def _gunzip(body: bytes) -> bytes:
    """A gzipped answer's text, up to MAX_GUNZIP bytes (the relay asks for identity encoding, but a
    provider may compress anyway; a bomb stops at the bound, its usage then unread)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        text = inflater.decompress(body, MAX_GUNZIP)
    except zlib.error:
        return b""
    return b"" if inflater.unconsumed_tail else text


class StreamTap:
    """Watches an SSE byte stream go by (without changing it) and keeps the usage its events report.

    A JSON answer too large to buffer (an embeddings answer over 4 MiB) passes through here too, from
    somewhere in its middle (the relay buffered its start): until a line starting with `data:` shows the
    answer is SSE (raw JSON never holds one: its strings escape newlines), its last JSON_TAIL bytes are
    also searched for the usage object, which such answers put last."""

    __slots__ = ("_json", "_partial", "_tail", "usage")

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self._partial = b""
        self._tail = b""
        self._json = True  # maybe JSON, until an SSE data line shows up

    def feed(self, chunk: bytes) -> None:
        if self._json:
            if chunk.startswith(b"data:") or b"\ndata:" in chunk:
                self._json, self._tail = False, b""
            else:
                self._feed_json(chunk)
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

    def _feed_json(self, chunk: bytes) -> None:
        tail = (self._tail + chunk)[-JSON_TAIL:]
        self._tail = tail
        if b'"usage"' not in chunk and b'"usage"' not in tail[-len(chunk) - 16 :]:
            return
        matches = list(_USAGE_OBJECT.finditer(tail))  # the last one is the answer's (nested ones first)
        if matches:
            found = matches[-1]
            with contextlib.suppress(ValueError, RecursionError):
                self.usage.update({"usage": json.loads(found.group(1))})


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
        self.running: Counter[str] = Counter()  # client -> requests admitted and not finished
        self.reserved: Counter[str] = Counter()  # client -> tokens those requests may still use

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

    def charge(self, client: str, tokens: int) -> None:
        """Count `tokens` against today's budget only (not as tokens a provider reported)."""
        self._roll()
        self.today[client] += tokens

    # hold/release run once per request: dict.get/pop instead of Counter's `+=` on a missing key and `del`,
    # which are Python-level methods (__missing__, __delitem__): the same counts, fewer calls.
    def hold(self, client: str, amount: int) -> None:
        self.running[client] = self.running.get(client, 0) + 1
        self.reserved[client] = self.reserved.get(client, 0) + amount

    def release(self, client: str, amount: int) -> None:
        running = self.running.get(client, 0) - 1
        if running <= 0:
            self.running.pop(client, None)
            self.reserved.pop(client, None)
        else:
            self.running[client] = running
            self.reserved[client] = self.reserved.get(client, 0) - amount

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
