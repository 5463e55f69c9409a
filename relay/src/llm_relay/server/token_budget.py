"""Daily token budgets that hold under concurrency, aborted streams and answers whose usage is missing.

Checking "used < budget" when a request starts admits any number of concurrent requests while the first
ones are still running (20 streams against a 1,000-token budget were all admitted, and counted 40 M
tokens). So every admitted request reserves what it may cost, and is refused when the client's tokens used
today plus those reserved by its requests in flight plus this one exceed the budget:

    reservation = completion cap x n + prompt estimate
    completion cap = max_tokens / max_completion_tokens / max_output_tokens, else `[usage] reserve_tokens`
    prompt estimate = request body bytes / 4 (about 4 bytes per token of English; JSON overhead and
                      images make it an overestimate, which the settlement corrects)

When the request ends, the reservation is released and the client is charged what the provider reported.
Where the report is missing or cut short, the reservation stands in for it (bound by construction: no way
around the budget by dropping the usage event):
- a request whose client went away, or a stream the provider cut: max(reported, reservation);
- a successful answer that reported no usage (a stream without `stream_options.include_usage`): the
  reservation.
Provider errors (4xx/5xx) that reported nothing are charged nothing: the provider generated nothing.

`[usage] max_concurrent_per_client` also caps a client's requests in flight (429 `too_many_in_flight`).
Both are per relay process, like the counters they extend (relay/docs/config.md).
"""

from __future__ import annotations

import re
from typing import Any

from .errors import RelayError
from .usage import UsageLedger, seconds_to_midnight

_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_CAP_BYTES = re.compile(rb'"(?:max_tokens|max_completion_tokens|max_output_tokens)"\s*:\s*(\d{1,9})')
MAX_N = 128  # completions per request counted at most (n): beyond, providers refuse anyway
_RESERVED = "token_reservation"


def estimate(body: bytes, doc: dict | None, default_cap: int) -> int:
    """The tokens a request may cost (see the module docstring)."""
    if doc is not None:  # once per request: a plain loop, not a generator (fewer calls, same result)
        cap = default_cap
        for key in _CAPS:
            if _count(value := doc.get(key)):
                cap = value
                break
        n = doc.get("n")
        copies = min(n, MAX_N) if n is not None and _count(n) and n >= 1 else 1
    else:
        # Not parsed (too large to parse on the event loop, or not JSON): the largest cap named anywhere
        # in it, never less than the default. A number inside a message can only raise the reservation.
        cap = max([default_cap, *(int(m) for m in _CAP_BYTES.findall(body))])
        copies = 1
    return cap * copies + len(body) // 4


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def reserve(
    ledger: UsageLedger, settings: Any, client: str, body: bytes, doc: dict | None, outcome: Any
) -> None:
    """Admit the request against the client's budget and concurrency cap, or raise 429."""
    cap = settings.max_concurrent_per_client
    if cap and ledger.running[client] >= cap:
        raise RelayError(
            429,
            "too_many_in_flight",
            f"client {client!r} already has {cap} requests in flight (max_concurrent_per_client)",
            {"Retry-After": "1"},
        )
    amount = estimate(body, doc, settings.reserve_tokens)
    budget = settings.budget_of(client)
    if budget:
        used, held = ledger.used_today(client), ledger.reserved[client]
        if used + held + amount > budget:
            raise RelayError(
                429,
                "token_budget_exhausted",
                f"this request may use up to {amount} tokens (its max_tokens, or {settings.reserve_tokens}, "
                f"plus about 1 per 4 bytes of request); of client {client!r}'s daily budget of {budget}, "
                f"{used} are used and {held} reserved by requests in flight. It resets at 00:00 UTC",
                {"Retry-After": str(seconds_to_midnight()) if used + amount > budget else "1"},
            )
    ledger.hold(client, amount)
    setattr(outcome, _RESERVED, (client, amount))


def settle(ledger: UsageLedger, client: str, outcome: Any, status: int) -> None:
    """At the end of every request: release its reservation, count what the provider reported, and
    charge the reservation where the report is missing (module docstring)."""
    usage = outcome.usage
    if outcome.provider:
        ledger.record(client, outcome.provider, usage)
    reservation = getattr(outcome, _RESERVED, None)
    if reservation is None:
        return
    owner, amount = reservation
    ledger.release(owner, amount)
    reported = (usage.prompt or 0) + (usage.completion or 0)
    if outcome.client_gone or (outcome.streamed and outcome.upstream_error):
        extra = amount - reported
    elif not usage.reported and status < 300:
        extra = amount
    else:
        extra = 0
    if extra > 0:
        ledger.charge(owner, extra)
