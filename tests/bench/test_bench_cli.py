"""`python -m bench NAME --flag ...` passes the flags to the benchmark (the commands in performance.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_flags_after_the_name_reach_the_benchmark():
    done = bench("relay_throughput", "--relay-python", "deployed", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: python -m bench relay_throughput" in done.stdout and "--relay-python" in done.stdout
    assert "unknown benchmark" not in done.stderr


def test_flags_without_a_benchmark_name_are_refused():
    done = bench("--seconds", "1")
    assert done.returncode == 2 and "flags need the benchmark" in done.stderr


def test_unknown_benchmark_names_are_refused():
    done = bench("no_such_bench", "--seconds", "1")
    assert done.returncode == 2 and "unknown benchmark(s): no_such_bench" in done.stderr
