"""The access line's fast formatter writes exactly what the generic JSON writer would, quoting included."""

from __future__ import annotations

import io
import json

import pytest
from llm_relay.server.logs import AccessLog, log_path

CASES = [
    ("bench", "openrouter", "POST", "/v1/chat/completions", 200, 0.0012345, 116, 275, False, False, ""),
    ("-", "-", "GET", '/v1/"quoted"\\back\nslash\u00e9\u2028', 404, 0.0, 0, 0, False, False, ""),
    ("laptop", "lab", "POST", "/t/***/v1/chat/completions", 502, 12.5, 10, 3, True, True, "reset"),
]


@pytest.mark.parametrize("case", CASES)
def test_request_line_matches_the_generic_encoder(case):
    sink = io.StringIO()
    log = AccessLog(stream=sink)
    log.request(*case)
    line = sink.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1  # one journald entry, whatever the path holds
    doc = json.loads(line)
    token, provider, method, path, status, duration, bytes_in, bytes_out, envelope, stream, error = case
    expected = {
        "event": "request",
        "token": token,
        "provider": provider,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(duration * 1000, 3),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "envelope": envelope,
        "stream": stream,
    }
    if error:
        expected["upstream_error"] = error
    assert list(doc)[:-1] == list(expected)  # same field order as before, "ts" last
    assert {k: v for k, v in doc.items() if k != "ts"} == expected
    assert isinstance(doc["ts"], float)


def test_disabled_log_writes_nothing():
    sink = io.StringIO()
    AccessLog(stream=sink, enabled=False).request(*CASES[0])
    assert sink.getvalue() == ""


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/t/lrt_secret/v1/models", "/t/***/v1/models"),
        ("//t/lrt_secret/v1/models", "//t/***/v1/models"),
        ("/v1/t/notatoken/x", "/v1/t/***/x"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/x/lrt_AbC-_9/y", "/x/***/y"),
        ("http://host/t/lrt_secret/v1", "-"),  # the server passes origin-form; anything else is not logged
        ("*", "*"),
        ("", "-"),
    ],
)
def test_log_path_never_holds_a_token(path, logged):
    assert log_path(path) == logged
