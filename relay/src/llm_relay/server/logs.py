"""Structured logging: one JSON object per line on stderr (journald keeps each line as one entry).

The access line carries the token *name*, provider, method, path (without query string and without a
path token), status, duration and byte counts. Never a token, key, header value or body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import time
from json.encoder import encode_basestring_ascii as _quote  # C-accelerated JSON string quoting
from typing import Any, TextIO

# A path segment after a `t` segment (the /t/<token>/ channel, wherever it appears: `//t/...`,
# `/x/t/...`), and anything shaped like a client token.
_PATH_TOKEN = re.compile(r"(?<=/t/)[^/]+|lrt_[^/]*")
LOG_PATH_MAX = 256


def log_path(path: str) -> str:
    """`path` as the access log may hold it: no query (the caller drops it), no token in any form.

    The HTTP server turns absolute-form targets into origin-form before the handler sees them, so a path
    here starts with "/" unless the target was `*` or unusable; anything else is logged as "-"."""
    if path[:1] != "/":
        return "*" if path == "*" else "-"
    if "/t/" in path or "lrt_" in path:
        path = _PATH_TOKEN.sub("***", path)
    return path[:LOG_PATH_MAX]


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
    """Access lines, written directly (no logging machinery on the hot path) and batched.

    Lines are buffered for at most `flush_interval` seconds (or 64 KiB) and written in one call: one write
    per request was a measurable share of the relay's CPU. `flush()` runs at shutdown, so nothing is lost
    on a clean exit; a crash loses at most the last `flush_interval`.
    """

    def __init__(
        self, stream: TextIO | None = None, enabled: bool = True, flush_interval: float = 0.0
    ) -> None:
        self.stream = stream
        self.enabled = enabled
        self.flush_interval = flush_interval
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode
        self._pending: list[str] = []
        self._size = 0
        self._scheduled = False

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        fields["ts"] = round(time.time(), 3)
        self._add(self._dumps(fields) + "\n")

    def request(
        self,
        token: str,
        provider: str,
        method: str,
        path: str,
        status: int,
        duration_s: float,
        bytes_in: int,
        bytes_out: int,
        envelope: bool,
        stream: bool,
        upstream_error: str = "",
        fallbacks: list[str] | None = None,
    ) -> None:
        """The access line of one answered request: the same JSON object as `write()` would produce for
        these fields, formatted directly (a dict + the generic encoder was ~10 % of a request's CPU)."""
        if not self.enabled:
            return
        error = f',"upstream_error":{_quote(upstream_error)}' if upstream_error else ""
        if fallbacks:  # the providers given up before this one answered, as "provider:reason"
            error += ',"fallback":[' + ",".join(_quote(f) for f in fallbacks) + "]"
        self._add(
            f'{{"event":"request","token":{_quote(token)},"provider":{_quote(provider)},'
            f'"method":{_quote(method)},"path":{_quote(path)},"status":{status:d},'
            f'"duration_ms":{duration_s * 1000:.3f},"bytes_in":{bytes_in:d},"bytes_out":{bytes_out:d},'
            f'"envelope":{"true" if envelope else "false"},"stream":{"true" if stream else "false"}'
            f'{error},"ts":{time.time():.3f}}}\n'
        )

    def _add(self, line: str) -> None:
        if not self.flush_interval:
            self._emit(line)
            return
        self._pending.append(line)
        self._size += len(line)
        if self._size >= 65536:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._pending:
            text, self._pending, self._size = "".join(self._pending), [], 0
            self._emit(text)

    def _emit(self, text: str) -> None:
        stream = self.stream or sys.stderr
        with contextlib.suppress(OSError, ValueError):  # a broken log pipe must not fail the request
            stream.write(text)
            if self.flush_interval:
                stream.flush()
