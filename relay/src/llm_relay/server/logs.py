"""Structured logging: one JSON object per line on stderr (journald keeps each line as one entry).

The access line carries the token *name*, provider, method, path (without query string and without a
path token), status, duration and byte counts. Never a token, key, header value or body.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from typing import Any, TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            doc.update(extra)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("llm_relay")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class AccessLog:
    """Writes access lines directly (no logging machinery on the hot path)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        fields["ts"] = round(time.time(), 3)
        stream = self.stream or sys.stderr
        with contextlib.suppress(OSError, ValueError):  # a broken log pipe must not fail the request
            stream.write(self._dumps(fields) + "\n")
