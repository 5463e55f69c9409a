"""Run `ansible-test` on the collection the checkout is (llm_relay.homelab), offline.

ansible-test only works from inside `.../ansible_collections/<namespace>/<name>/` and tests what it finds
there, so this copies what the built collection ships (galaxy.yml's `build_ignore` decides, as
`ansible-galaxy collection build` does) plus tests/unit and tests/sanity into a staging tree under /tmp,
and runs ansible-test in it with the arguments given.

ansible-test builds one virtual environment per sanity test from its own pinned requirements, whatever
venv it is started from, and bootstraps pip into each with a get-pip.py it downloads from
ci-files.testing.ansible.com (not reachable from here). So its home is project-local
(.ansible/ansible-test/home) and `prime` (run by `make setup`) builds those venvs once: pip's wheel from
PyPI, run by a stand-in for get-pip.py (tools/get_pip_standin.py), then `ansible-test sanity
--prime-venvs`. Every other run sets PIP_NO_INDEX, so nothing is downloaded at test time.

Usage: python tools/run_ansible_test.py prime | sanity ... | units ...
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / ".ansible" / "ansible-test" / "home"  # git-ignored; holds the primed venvs
# Outside the repository: inside it, ansible-test would list the stage's files with the checkout's git
# (which ignores them) and find no targets.
STAGE = Path(tempfile.gettempdir()) / f"llm-relay-ansible-test-{hashlib.sha256(bytes(REPO)).hexdigest()[:8]}"
ALWAYS_IGNORED = (".git", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "tests/output")
TEST_TREES = ("tests/unit", "tests/sanity")


def collection_name() -> tuple[str, str, list[str]]:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))
    return galaxy["namespace"], galaxy["name"], list(galaxy.get("build_ignore") or [])


def ignored(rel: str, patterns: list[str]) -> bool:
    """Matched like ansible-galaxy's build_ignore: fnmatch on the path relative to the collection root."""
    return any(fnmatch.fnmatch(rel, p) for p in patterns)


def wanted(rel: str, build_ignore: list[str]) -> bool:
    if ignored(rel, [*ALWAYS_IGNORED, *(f"*/{p}" for p in ALWAYS_IGNORED)]):
        return False
    if rel == "tests" or rel.startswith("tests/"):  # the artifact ships no tests; ansible-test needs these
        return rel == "tests" or any(rel == t or rel.startswith(t + "/") for t in TEST_TREES)
    return not ignored(rel, build_ignore)


def stage() -> Path:
    """A fresh copy of the collection's content at .../ansible_collections/<ns>/<name>."""
    namespace, name, build_ignore = collection_name()
    root = STAGE / "ansible_collections" / namespace / name
    shutil.rmtree(root, ignore_errors=True)
    for dirpath, dirnames, filenames in os.walk(REPO):
        base = Path(dirpath).relative_to(REPO).as_posix()
        prefix = "" if base == "." else base + "/"
        dirnames[:] = [d for d in dirnames if wanted(prefix + d, build_ignore)]
        for filename in filenames:
            rel = prefix + filename
            if wanted(rel, build_ignore):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, root / rel, follow_symlinks=False)
    return root


def ansible_test_env(offline: bool) -> dict[str, str]:
    env = dict(os.environ, HOME=str(HOME), ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("ANSIBLE_CONFIG", None)  # the checkout's ansible.cfg is for playbooks, not for ansible-test
    if offline:
        env["PIP_NO_INDEX"] = "1"
    return env


def prime() -> int:
    """Build the sanity venvs once (the only step that downloads: pip's wheel and the pinned packages)."""
    from ansible_test._internal.python_requirements import get_venv_packages

    class Python:  # get_venv_packages only reads .version
        version = f"{sys.version_info.major}.{sys.version_info.minor}"

    pip_version = get_venv_packages(Python())["pip"]
    cache = HOME / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / f"pip-{pip_version}-py3-none-any.whl"
    if not wheel.exists():
        download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache)]
        subprocess.run([*download, f"pip=={pip_version}"], check=True)
    standin = cache / f"get_pip_{pip_version.replace('.', '_')}.py"  # where ansible-test caches get-pip.py
    shutil.copyfile(REPO / "tools" / "get_pip_standin.py", standin)
    return run(["sanity", "--prime-venvs", *python_args()], offline=False)


def python_args() -> list[str]:
    return ["--python", f"{sys.version_info.major}.{sys.version_info.minor}"]


def run(args: list[str], offline: bool = True) -> int:
    root = stage()
    binary = Path(sys.executable).parent / "ansible-test"
    env = ansible_test_env(offline)
    return subprocess.run([str(binary), *args], cwd=root, env=env, check=False).returncode


def main(argv: list[str]) -> int:
    if argv[:1] == ["prime"]:
        return prime()
    return run(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
