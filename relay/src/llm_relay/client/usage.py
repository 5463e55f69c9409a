"""`llm-relay usage`: this client's own token usage and daily budget, as the relay counts them.

The relay answers `GET /v1/usage` itself (sealed when encrypting) with the caller's numbers only; it
never shows another client's.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from . import access
from ._http import httpx
from .codec_v2 import EnvelopeRefused
from .config import Profile
from .factory import http_client


class UsageError(Exception):
    """The relay did not give the usage report; the message says why."""


def fetch(profile: Profile) -> dict[str, Any]:
    with http_client(profile) as client:
        try:
            response = client.get(profile.root + "/v1/usage")
        except httpx.HTTPError as exc:
            raise UsageError(
                str(exc) if isinstance(exc, EnvelopeRefused) else f"cannot reach the relay: {exc!r}"
            ) from None
    refused = access.refusal_message(response, response.content) or access.relay_denied_message(
        response.content
    )
    if refused is not None:
        raise UsageError(refused)
    if response.status_code != 200:
        raise UsageError(f"the relay answered {response.status_code}: {response.text[:200]}")
    return response.json()


def render(report: dict[str, Any]) -> str:
    budget = report.get("daily_token_budget")
    lines = [
        f"client {report['client']}: {report['today_tokens']} tokens today ({report['day']}, UTC)"
        + (f" of a daily budget of {budget} ({report['remaining_today']} left)" if budget else ""),
    ]
    rows = report.get("since_start") or []
    if not rows:
        lines.append("no usage counted since the relay started")
    else:
        lines.append(
            f"since the relay started:\n  {'provider':<16} {'model':<40} {'prompt':>10} {'completion':>10}"
        )
        for row in rows:
            lines.append(
                f"  {row['provider']:<16} {row['model']:<40} {row['prompt']:>10} {row['completion']:>10}"
            )
    return "\n".join(lines) + "\n"


def usage(profile: Profile, *, as_json: bool, out: TextIO) -> int:
    report = fetch(profile)
    out.write(json.dumps(report, indent=2) + "\n" if as_json else render(report))
    return 0
