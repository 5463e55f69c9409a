"""site.yml wall time on the lab, per task: cold (from nothing) and re-run (nothing to change).

For 1 and 2 replicas (hostname bench.lab.test, containers bench-N on pve1/pve2):
  cold    destroy.yml first, then site.yml: container create + boot, apt inside the containers through NAT,
          Python wheels copied, both services, tunnel, DNS, end-to-end check. The lab's LXC template and the
          controller's wheel cache are kept across runs (as in CI), so "cold" means no deployment, not
          empty caches;
  re-run  site.yml again right after: every task finds its state in place (changed=0 expected).
Each run is timed per task by the collection's callback llm_relay.homelab.task_timing (header to next
header, as a person reading the output would time it); the slowest tasks are printed with their share of
the run. destroy.yml runs at the end.

Run: `python -m bench site [--replicas 1,2] [--top 12]` (the lab is brought up first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOSTNAME, PREFIX = "bench.lab.test", "bench-"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class Run:
    def __init__(self, seconds: float, changed: dict[str, int], tasks: list[dict]) -> None:
        self.seconds, self.changed, self.tasks = seconds, changed, tasks

    def top(self, count: int) -> list[tuple[float, str]]:
        """The slowest tasks (a task name repeated in a run, e.g. an included file, is summed)."""
        totals: dict[str, float] = {}
        for entry in self.tasks:
            totals[entry["task"]] = totals.get(entry["task"], 0.0) + entry["seconds"]
        return sorted(((s, t) for t, s in totals.items()), reverse=True)[:count]


class Playbooks:
    def __init__(self, workdir: Path, replicas: int) -> None:
        self.workdir = workdir
        self.extra = {
            "relay_public_hostname": HOSTNAME,
            "relay_public_url": f"https://{HOSTNAME}:9443",
            "relay_hostname_prefix": PREFIX,
            "relay_replicas": replicas,
            "relay_artifacts_dir": str(workdir / "artifacts"),
            "relay_controller_secrets_dir": str(workdir / "secrets"),
        }
        self.env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_CALLBACKS_ENABLED": "llm_relay.homelab.task_timing",
        }

    def run(self, playbook: str, *args: str) -> Run:
        """Wall seconds, changed count per host and per-task timings; exits with the output on failure."""
        timing = self.workdir / "timing.json"
        timing.unlink(missing_ok=True)
        argv = [str(BIN / "ansible-playbook"), playbook, "-e", json.dumps(self.extra), *args]
        env = {**self.env, "LLM_RELAY_TASK_TIMING_FILE": str(timing)}
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if proc.returncode:
            sys.exit(f"{playbook} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout[-5000:]}")
        tasks = json.loads(timing.read_text()) if timing.exists() else []
        return Run(seconds, {m[1]: int(m[3]) for m in RECAP.finditer(proc.stdout)}, tasks)


def measure(replicas: int) -> tuple[Run, Run]:
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        books = Playbooks(Path(tmp), replicas)
        destroy = ("playbooks/destroy.yml", "-e", "confirm=yes")
        books.run(*destroy)
        try:
            cold = books.run("site.yml")
            rerun = books.run("site.yml")
        finally:
            books.run(*destroy)
    return cold, rerun


def show(title: str, run: Run, top: int) -> None:
    print(f"  {title}: {run.seconds:6.1f} s, {len(run.tasks)} tasks, changed per host {run.changed}")
    for seconds, task in run.top(top):
        print(f"      {seconds:6.1f} s  {100 * seconds / run.seconds:4.1f} %  {task}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench site", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1,2", help="comma-separated replica counts (default 1,2)")
    parser.add_argument("--top", type=int, default=12, help="how many of the slowest tasks to print")
    args = parser.parse_args(argv)
    subprocess.run([sys.executable, "-m", "lab", "up"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    load = os.getloadavg()[0]
    print(f"site.yml against the lab ({HOSTNAME}); 2 shared cores, load {load:.1f} at the start")
    for replicas in (int(r) for r in args.replicas.split(",")):
        cold, rerun = measure(replicas)
        print(
            f"\n{replicas} replica(s): cold {cold.seconds:.1f} s, re-run {rerun.seconds:.1f} s, "
            f"re-run/cold {rerun.seconds / cold.seconds:.2f}"
        )
        show("cold", cold, args.top)
        show("re-run", rerun, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
