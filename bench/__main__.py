"""`python -m bench [name ...] [--flag ...]`: run bench/<name>.py (each in its own interpreter), or all.

Arguments from the first one starting with `-` on are passed to every benchmark named, so
`python -m bench relay_throughput --relay-python deployed` runs that benchmark with that flag.

A module counts as a benchmark when it runs as a script (has a `__main__` guard); helpers such as
harnesses are skipped. Exit status is non-zero when any benchmark failed to run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    names = []
    for path in sorted(HERE.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        if 'if __name__ == "__main__"' in path.read_text():
            names.append(path.stem)
    return names


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Benchmark names, then the flags (and their values) meant for the benchmarks themselves."""
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            return argv[:i], argv[i:]
    return argv, []


def main(argv: list[str]) -> int:
    names = available()
    wanted, flags = split_args(argv)
    if flags and not wanted:
        print("flags need the benchmark(s) they are for: python -m bench NAME --flag ...", file=sys.stderr)
        return 2
    if not wanted:  # all of them, except those that only make sense with arguments (relay_ab)
        wanted = [n for n in names if "NEEDS_ARGUMENTS = True" not in (HERE / f"{n}.py").read_text()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    failed = []
    for name in wanted:
        print(f"=== bench {name}", flush=True)
        started = time.monotonic()
        rc = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", *flags], cwd=HERE.parent, check=False
        ).returncode
        print(f"=== bench {name}: exit {rc} after {time.monotonic() - started:.1f}s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
