"""A/B of two relay installs: CPU per request of each, measured in alternating rounds of the same run.

    python -m bench relay_ab --before PYTHON --after PYTHON [--rounds 12] [--seconds 3]

PYTHON: an interpreter whose environment has the relay to measure (e.g. a venv with the previous commit's
`relay[fast]` installed, and `.cache/bench-deployed-venv/bin/python` for the current one). Both relays run
at once, pinned to the same core, against the same fake upstream; each round runs wrk -c32 against one
then the other, the order alternating, so both see the same machine: on a shared machine single runs vary
by ±20 %, the medians of interleaved rounds much less. Printed: every round, both medians, their ratio.

    python -m bench relay_ab --before PYTHON --after PYTHON --instructions [--n1 50] [--n2 250]

counts instructions instead (valgrind's cachegrind, bench/relay_instructions.py): the same figure whatever
else the machine runs, for the plain and the envelope v2 path, with an A/A control line.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench import relay_harness, relay_instructions
from bench.relay_harness import CHAT_BODY, RelaySetup, post_lua, processes, start_fake_upstream, wrk

NEEDS_ARGUMENTS = True  # `python -m bench` (all benchmarks) skips it: it has nothing to compare by default


def run(pythons: dict[str, str], rounds: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-relay-ab-") as tmp, processes() as procs:
        work = Path(tmp)
        up_port, _ = start_fake_upstream(procs, work)
        targets = {}
        for name, python in pythons.items():
            relay_harness.set_relay_python(python)
            directory = work / name
            directory.mkdir()
            relay = RelaySetup(directory, f"http://127.0.0.1:{up_port}/api/v1")
            proc = relay.start(procs)
            auth = {"Content-Type": "application/json", "Authorization": f"Bearer {relay.token}"}
            script = post_lua(directory, "plain", "/v1/chat/completions", CHAT_BODY, auth)
            targets[name] = (f"http://127.0.0.1:{relay.port}", script, proc.pid)
            wrk(targets[name][0], script, 8, 1)  # warm-up
        cpu: dict[str, list[float]] = {name: [] for name in pythons}
        names = list(pythons)
        for number in range(rounds):
            for name in names if number % 2 == 0 else names[::-1]:
                url, script, pid = targets[name]
                result = wrk(url, script, 32, seconds, pid)
                if result["non2xx"] or result["errors"]:
                    raise SystemExit(f"{name}: {result['non2xx']} non-2xx, {result['errors']} errors")
                cpu[name].append(result["cpu_us"])
            figures = ", ".join(f"{n} {cpu[n][-1]:.1f} us/req" for n in names)
            print(f"round {number + 1}: {figures}", flush=True)
        medians = {name: statistics.median(values) for name, values in cpu.items()}
        for name, values in cpu.items():
            print(f"{name}: median {medians[name]:.1f} us/req (min {min(values):.1f}, max {max(values):.1f})")
        print(f"after / before (medians of CPU per request): {medians['after'] / medians['before']:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench relay_ab")
    parser.add_argument("--before", required=True, help="interpreter with the baseline relay installed")
    parser.add_argument("--after", required=True, help='interpreter with the relay to compare, or "deployed"')
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under valgrind instead of timing wrk rounds",
    )
    parser.add_argument("--n1", type=int, default=50, help="--instructions: requests in the smaller runs")
    parser.add_argument("--n2", type=int, default=250, help="--instructions: requests in the larger runs")
    parser.add_argument("--no-control", action="store_true", help="--instructions: skip the A/A runs")
    args = parser.parse_args(argv)
    if args.instructions:
        if not 0 < args.n1 < args.n2:
            parser.error("--n1 and --n2 need 0 < N1 < N2")
        pythons = {"before": args.before, "after": args.after}
        if args.after == "deployed":
            pythons["after"] = relay_harness.deployed_python()
        relay_instructions.run(pythons, args.n1, args.n2, not args.no_control)
        return
    run({"before": args.before, "after": args.after}, args.rounds, args.seconds)


if __name__ == "__main__":
    main()
