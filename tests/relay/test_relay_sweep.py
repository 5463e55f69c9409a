"""The sweep (issue 25): every route the relay serves x every body shape x with and without a valid
token, all at once on their own connections, against one relay process with a memory budget. The
relay's RSS must grow by less than that budget, and /healthz, probed on another connection throughout,
must answer in under 100 ms. Instead of one test per named attack: what a peer sends cannot make the
relay hold more than its budget, whatever the route or the shape.

Loopback only; bounded by the number of combinations (sweep_load.py), each in bytes and in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from attack_support import HOST, Probe, RelayProcess, SizedUpstream, read_response

pytestmark = pytest.mark.slow
MIB = 1024 * 1024
BUDGET_MIB = 48
ORIGIN = "https://app.example"
SERVER = f"""
memory_budget_bytes = {BUDGET_MIB * MIB}
connection_budget_bytes = {12 * MIB}
send_timeout = 2
"""
EXTRA = f"""
[routes.auto]
providers = [{{ provider = "openrouter" }}, {{ provider = "lab", model = "other/model" }}]

[cors]
allow_origins = ["{ORIGIN}"]
"""


def test_sweep_every_route_every_shape_stays_in_budget(tmp_path):
    with SizedUpstream() as up:
        base = f"http://{HOST}:{up.port}/api/v1"
        with RelayProcess(tmp_path, base, extra_server=SERVER, extra=EXTRA) as relay:
            with relay.connect() as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                read_response(sock, 5)
            before = relay.rss_kb()
            spec = {
                "port": relay.port,
                "metrics_port": relay.metrics_port,
                "token": relay.token,
                "origin": ORIGIN,
                "send_limit": 12 * MIB,
                "time_limit": 6.0,
                "answer_size": 8 * MIB,
            }
            probe = Probe(relay, interval=0.02).start()
            load = subprocess.run(
                [sys.executable, str(Path(__file__).with_name("sweep_load.py")), json.dumps(spec)],
                capture_output=True,
                text=True,
                timeout=90,
            )
            probe.stop()
            assert load.returncode == 0, load.stderr
            results = [json.loads(line) for line in load.stdout.splitlines()]
            line = probe.report(f"sweep of {len(results)} connections", before)
            statuses = Counter((r["route"], r["shape"], r["token"], r["status"]) for r in results)
            for key in sorted(statuses):
                print(key)
            assert relay.alive(), relay.log_text()[-2000:]
            for r in results:  # bodies refused unread where none is taken, and before a token where one is
                if r["route"] in ("healthz", "readyz", "preflight", "metrics"):
                    assert r["status"] == 413, r
                elif r["route"] in ("proxy", "relay", "fallback") and not r["token"]:
                    assert r["status"] == 401, r
            assert probe.failures == 0, line
            # The budget counts payload bytes; the allocator's and interpreter's overhead on them is what
            # the 25 % allows (config.md: RSS ~ baseline + 1.25 x memory_budget_bytes at most).
            assert (probe.rss_peak_kb - before) / 1024 < BUDGET_MIB * 1.25, line
            # The relay's own latency, its waits for a CPU on this shared machine not counted (Probe);
            # p95, not max, as the issue asks; wall-clock figures printed above beside it.
            assert probe.p95_ms() < 100, line
