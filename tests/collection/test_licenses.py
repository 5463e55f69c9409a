"""What the project ships says under which terms, and names no path of a development machine.

- LICENSE (MIT, as galaxy.yml and the relay package say) at the root; the relay package's LICENSE is a link
  to it, so the wheel carries the same text (tests/collection/test_artifact.py checks the tarball and wheel).
- Every tracked JSON file is data copied from a third party (the API schemas the lab and its tests hold):
  each keeps its own license notice in `<file>.license` beside it, naming its origin and license.
- No tracked file names an absolute path into a development machine's workspace: the project names its own
  relative paths, and ../shared only through LLM_RELAY_SHARED.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# The development machines' workspace roots, spelled so that this file does not name one itself.
WORKSPACE_PATH = re.compile(r"(^|[\s\"'=(:,])/(" + "wo" + "rk|fa" + "rm)/")


def tracked() -> list[str]:
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    return [name for name in proc.stdout.decode().split("\0") if name]


def test_mit_license_at_the_root_and_for_the_relay_package():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in text
    assert yaml.safe_load((REPO / "galaxy.yml").read_text())["license"] == ["MIT"]
    project = tomllib.loads((REPO / "relay" / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    # A copy, not a link: relay/ is copied on its own (molecule's snapshot, a user's relay_source_dir, the
    # role's source digest), where a link to ../LICENSE dangles and the wheel build fails.
    assert not (REPO / "relay" / "LICENSE").is_symlink()
    assert (REPO / "relay" / "LICENSE").read_bytes() == (REPO / "LICENSE").read_bytes()


def test_every_third_party_data_file_keeps_its_license_notice():
    copies = [name for name in tracked() if name.endswith(".json")]
    assert copies, "the API schema copies are tracked JSON files"
    missing, unnamed = [], []
    for name in copies:
        notice = REPO / (name + ".license")
        if not notice.is_file():
            missing.append(name)
        elif not re.search(r"^SPDX-License-Identifier: \S+", notice.read_text(), re.M):
            unnamed.append(name)
    assert not missing, f"add <file>.license (origin, copyright, license) beside: {missing}"
    assert not unnamed, f"these notices name no SPDX-License-Identifier: {unnamed}"


def test_no_tracked_file_names_a_development_machine_path():
    offending = []
    for name in tracked():
        path = REPO / name
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        lines = enumerate(text.splitlines(), 1)
        offending += [f"{name}:{n}" for n, line in lines if WORKSPACE_PATH.search(line)]
    assert not offending, offending
