"""The collection as a user gets it: `make release`'s tarball of the checkout (ansible-galaxy collection build
of the collection plus the relay's wheel), installed into an empty path, and the environment of a project
that has only that path (no checkout, no link).

Shared by tests/collection (the artifact, ansible-doc) and tests/site (site.yml run from the installed
collection against the lab).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a user's own project would set; the checkout's ansible.cfg is deliberately not used.
USER_CONFIG = """\
[defaults]
interpreter_python = auto_silent
forks = 10
host_key_checking = true
retry_files_enabled = false

[ssh_connection]
pipelining = true
ssh_args = -o ControlMaster=auto -o ControlPersist=60s
"""


def build(out_dir: Path) -> Path:
    """The collection tarball as `make release` builds it from the checkout (the collection plus the relay's
    wheel, tools/build_collection.py), into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_collection.py"), "--output-path", str(out_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tarball,) = out_dir.glob("llm_relay-homelab-*.tar.gz")
    return tarball


def install(tarball: Path, project: Path) -> Path:
    """Install the tarball into project/collections (empty before) as a user would; returns that path and
    writes the project's ansible.cfg."""
    collections = project / "collections"
    assert not collections.exists() or not any(collections.iterdir())
    proc = subprocess.run(
        [
            str(BIN / "ansible-galaxy"),
            "collection",
            "install",
            "--offline",
            str(tarball),
            "-p",
            str(collections),
        ],
        cwd=project,
        env=user_env(project),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return collections


def user_env(project: Path) -> dict[str, str]:
    """Environment of a project outside the checkout: its own ansible.cfg and collections path only."""
    project.mkdir(parents=True, exist_ok=True)
    config = project / "ansible.cfg"
    config.write_text(USER_CONFIG, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_COLLECTIONS_PATH=str(project / "collections"),
        ANSIBLE_LOCAL_TEMP=str(project / ".ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    return env
