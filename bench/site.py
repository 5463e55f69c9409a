"""site.yml wall time on the lab: cold (from nothing), second run (no change), warm (containers exist).

One deployment of 1 replica for bench.lab.test (container bench-1), so the figures measure the playbook and
one container's bootstrap rather than how many replicas share this machine's cores:
  cold    destroy.yml first, then site.yml: container create + boot, apt (python3) through NAT, Python
          wheels copied, both services, tunnel, DNS, end-to-end check. The lab's LXC template and the
          controller's wheel cache are kept across runs (as in CI), so "cold" means no deployment, not
          empty caches;
  second  site.yml again right after: every task finds its state in place (changed=0 expected);
  warm    the tunnel and DNS record deleted (destroy.yml --tags tunnel,dns), containers kept: site.yml
          makes a new tunnel and re-points the running connectors at it.
destroy.yml runs at the end. Run: `python -m bench site` (the lab is brought up first).
"""

from __future__ import annotations

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
HOSTNAME, PREFIX, REPLICAS = "bench.lab.test", "bench-", 1
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class Playbooks:
    def __init__(self, workdir: Path) -> None:
        self.extra = {
            "relay_public_hostname": HOSTNAME,
            "relay_public_url": f"https://{HOSTNAME}:9443",
            "relay_hostname_prefix": PREFIX,
            "relay_replicas": REPLICAS,
            "relay_artifacts_dir": str(workdir / "artifacts"),
            "relay_controller_secrets_dir": str(workdir / "secrets"),
        }
        self.env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
        }

    def run(self, playbook: str, *args: str) -> tuple[float, dict[str, int]]:
        """Wall seconds and changed count per host; exits with the output when the playbook fails."""
        argv = [str(BIN / "ansible-playbook"), playbook, "-e", json.dumps(self.extra), *args]
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if proc.returncode:
            sys.exit(f"{playbook} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout[-5000:]}")
        return seconds, {m[1]: int(m[3]) for m in RECAP.finditer(proc.stdout)}


def main() -> int:
    subprocess.run([sys.executable, "-m", "lab", "up"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    print(f"site.yml against the lab, {REPLICAS} replica ({HOSTNAME}); 2 shared cores, so figures vary")
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        books = Playbooks(Path(tmp))
        destroy = ("playbooks/destroy.yml", "-e", "confirm=yes")
        books.run(*destroy)
        try:
            cold, _ = books.run("site.yml")
            second, changed = books.run("site.yml")
            books.run(*destroy, "--tags", "tunnel,dns")
            warm, _ = books.run("site.yml")
        finally:
            books.run(*destroy)
    print(f"  cold   (from nothing)                 {cold:7.1f} s")
    print(f"  warm   (containers exist, new tunnel) {warm:7.1f} s")
    print(f"  second (nothing to change)            {second:7.1f} s  changed per host: {changed}")
    print(f"  ratios: second/cold {second / cold:.2f}, warm/cold {warm / cold:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
