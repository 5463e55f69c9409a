"""Run Ansible's command-line tools the way users do: from this venv, in the repo, with its ansible.cfg.

Shared by the suites that drive ansible-playbook / ansible-doc directly (no colour, bounded time; the
caller asserts on the completed process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_ansible(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`tool` (e.g. "ansible-playbook") with `args`; output captured as text, exit status not checked."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1"}
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
