"""Runs every molecule scenario (`molecule test -s NAME`) against the lab.

Each scenario creates its own LXC container through the PVE emulator (vmids 9300-9399), converges the
roles twice (idempotence: the second run must change nothing), verifies the result from inside the
container and through the lab edge, and destroys what it made. The assertions live in the scenario's
verify.yml; this test fails with the tail of molecule's output when any step fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))


@pytest.mark.lab
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(lab, scenario: str, tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
    }
    log = tmp_path / f"molecule-{scenario}.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "molecule", "test", "--scenario-name", scenario],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-120:])
        pytest.fail(f"molecule test -s {scenario} failed (exit {proc.returncode}); full log {log}\n{tail}")
