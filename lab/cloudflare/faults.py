"""Fault injection and the call log of the Cloudflare emulator (lab control, outside `/client/v4`).

POST   /_lab/faults   {"path": "/accounts/*/cfd_tunnel", "method": "POST", "mode": "429",
                       "count": 2, "retry_after": 1}
    mode "429"  -> 429 + Retry-After (seconds), code 971 "Please wait and consider throttling your
                   request speed", as the live API answers;
    mode "5xx"  -> `status` (500-599, default 503), code 10502 (lab-chosen; envelope intact);
    mode "hang" -> the answer is held `hang_seconds` (default 60) before a 504, so clients time out.
    `path` is a glob (fnmatch) against the path after /client/v4; `method` optional; `count` = how many
    matching calls are affected (default 1).
GET    /_lab/faults   pending rules;  DELETE /_lab/faults  clear them
GET    /_lab/requests every API call (method, path, query, status, token name);  DELETE clears it
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

MODES = ("429", "5xx", "hang")


class FaultRuleError(ValueError):
    pass


def parse_rule(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise FaultRuleError("a fault rule must be a JSON object")
    known = {"path", "method", "mode", "count", "status", "retry_after", "hang_seconds"}
    if set(raw) - known:
        raise FaultRuleError(f"unknown fault fields {sorted(set(raw) - known)}; known: {sorted(known)}")
    if not isinstance(raw.get("path"), str) or not raw["path"].startswith("/"):
        raise FaultRuleError("'path' (a glob starting with /, relative to /client/v4) is required")
    if raw.get("mode") not in MODES:
        raise FaultRuleError(f"'mode' must be one of {MODES}")
    rule = {"path": raw["path"], "method": str(raw.get("method", "")).upper(), "mode": raw["mode"]}
    for name, default in (("count", 1), ("retry_after", 1), ("status", 503)):
        value = raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FaultRuleError(f"'{name}' must be a non-negative integer")
        rule[name] = value
    if rule["mode"] == "5xx" and not 500 <= rule["status"] <= 599:
        raise FaultRuleError("'status' must be 500-599 for mode 5xx")
    hang = raw.get("hang_seconds", 60)
    if isinstance(hang, bool) or not isinstance(hang, int | float) or hang < 0:
        raise FaultRuleError("'hang_seconds' must be a non-negative number")
    rule["hang_seconds"] = hang
    return rule


@dataclass
class FaultBook:
    rules: list[dict[str, Any]] = field(default_factory=list)
    calls: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5000))
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def add(self, raw: Any) -> dict[str, Any]:
        rule = parse_rule(raw)
        self.rules.append(rule)
        return rule

    def take(self, method: str, path: str) -> dict[str, Any] | None:
        """The first rule matching this call, consuming one of its `count`."""
        for rule in self.rules:
            if rule["method"] in ("", method) and fnmatchcase(path, rule["path"]):
                rule["count"] -= 1
                if rule["count"] <= 0:
                    self.rules.remove(rule)
                return rule
        return None

    def log(self, method: str, path: str, query: str, status: int, token_name: str | None) -> None:
        self.calls.append(
            {
                "seq": next(self._seq),
                "time": time.time(),
                "method": method,
                "path": path,
                "query": query,
                "status": status,
                "token": token_name,
            }
        )
