"""The controller's Debian packages, proved without trusting this machine's hand-installed state.

- Every program the lab, tests and benchmarks run on the host is listed in lab/preflight.py (found by
  reading the sources, not from a hand-kept list alone).
- Every listed command and host file belongs, per the package database (`dpkg -S`), to the package the
  preflight names, and that package is installed by lab/host-deps.sh (its `packages` list), pulled in by
  one of those, or part of Debian's base system (Priority: required).
- lab/host-deps.sh, run in a fresh Debian 12 root (mmdebstrap minbase + python3), makes the preflight pass;
  with a package it installs removed, the preflight fails and names it.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import preflight
from lab.template.build import MIRRORS

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("lab", "tests", "bench", "molecule")
# Words that stand first in an argv list in the sources but are not host programs: commands run inside a
# lab container (over ssh or lxc-attach), subcommands of our own CLIs, HTTP methods of request tuples.
NOT_HOST_PROGRAMS = {
    "apt-get": "run inside lab containers (tests/lab_edge/test_e2e_lab.py)",
    "systemctl": "run inside lab containers",
    "install": "an apt-get subcommand",
    "service": "an ingress rule key in test data",
    # The project's own entry points: `make venv` installs them into .venv/bin (on PATH in `make test`).
    "llm-relay": "the relay package's client command (tests/collection/test_version.py)",
    "llm-relay-server": "the relay package's server command",
}
# Files copied into the containers and run there, not on the host.
IN_CONTAINERS = ("molecule/default/files/",)


def host_packages() -> list[str]:
    """What lab/host-deps.sh installs, as it prints it (`--list`)."""
    argv = ["bash", str(REPO / "lab" / "host-deps.sh"), "--list"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()


def argv_heads() -> dict[str, set[str]]:
    """The program of every argv in the sources: the first string of a list or tuple literal passed to a
    call or bound to a name like `cmd`/`argv`, and the first argument of which()/run()/exec calls."""
    heads: dict[str, set[str]] = {}
    for root in SCANNED:
        for path in (REPO / root).rglob("*.py"):
            if str(path.relative_to(REPO)).startswith(IN_CONTAINERS) or "node_modules" in path.parts:
                continue  # run elsewhere, or third-party code (make real-clients) that the tests do not run
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                for first in _argv_starts(node):
                    word = first.value if isinstance(first, ast.Constant) else None
                    if isinstance(word, str) and re.fullmatch(r"[a-z][a-z0-9_.+-]*", word):
                        heads.setdefault(word, set()).add(str(path.relative_to(REPO)))
    return heads


ARGV_NAMES = re.compile(r"(cmd|argv|command|args|base|prefix)$", re.I)
RUNNERS = re.compile(r"(run|exec|popen|check_output|check_call|which)$", re.I)


def _argv_starts(node: ast.AST) -> list[ast.AST]:
    lists: list[ast.AST] = []
    if isinstance(node, ast.Call):
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        lists += [a for a in node.args if isinstance(a, ast.List | ast.Tuple)]
        lists += [a.left for a in node.args if isinstance(a, ast.BinOp)]
        if RUNNERS.search(name) and node.args:
            lists.append(ast.List(elts=[node.args[0]]))
    elif isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(isinstance(t, ast.Name) and ARGV_NAMES.search(t.id) for t in targets):
            value = node.value.left if isinstance(node.value, ast.BinOp) else node.value
            lists.append(value)
    return [x.elts[0] for x in lists if isinstance(x, ast.List | ast.Tuple) and x.elts]


FIELDS = ("${Package}", "${Status}", "${Priority}", "${Pre-Depends}, ${Depends}", "${Provides}")


def installed() -> dict[str, tuple[str, list[str]]]:
    """Installed packages: name -> (priority, dependency alternatives groups), plus virtual names."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=" + "\t".join(FIELDS) + "\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    packages: dict[str, tuple[str, list[str]]] = {}
    provides: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, status, priority, depends, provided = line.split("\t")
        if not status.endswith(" installed"):
            continue
        groups = [g.strip() for g in depends.split(",") if g.strip()]
        packages[name] = (priority, groups)
        for virtual in provided.split(","):
            if virtual.strip():
                provides.setdefault(virtual.split()[0], []).append(name)
    for virtual, real in provides.items():
        packages.setdefault(virtual, ("virtual", [" | ".join(real)]))
    return packages


def allowed_packages() -> set[str]:
    """host-deps.sh's packages and everything they pull in (Pre-Depends/Depends), plus the base system."""
    db = installed()
    allowed = {name for name, (priority, _) in db.items() if priority == "required"}
    todo = list(host_packages())
    while todo:
        name = todo.pop()
        if name in allowed and name not in host_packages():
            continue
        allowed.add(name)
        for group in db.get(name, ("", []))[1]:
            for alt in group.split("|"):
                dep = alt.split("(")[0].split(":")[0].strip()
                if dep in db and dep not in allowed:
                    todo.append(dep)
    return allowed


def owner(path: Path) -> str | None:
    """The package that ships `path` (tries the /usr-merged spellings too)."""
    candidates = {str(path), str(path.resolve())}
    candidates |= {c.removeprefix("/usr") for c in list(candidates) if c.startswith("/usr/")}
    for candidate in sorted(candidates):
        out = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            return out.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def test_every_program_the_sources_run_is_in_the_preflight():
    unlisted = {
        word: sorted(files)
        for word, files in argv_heads().items()
        if word not in preflight.COMMANDS
        and word not in preflight.OPTIONAL
        and word not in NOT_HOST_PROGRAMS
        and preflight._which(word)  # a word that names a program on PATH
    }
    assert not unlisted, f"add these to lab/preflight.py COMMANDS (and their package): {unlisted}"


def test_preflight_lists_the_programs_the_lab_backend_runs():
    heads = argv_heads()
    for program in ("lxc-start", "lxc-info", "lxc-usernsexec", "mmdebstrap", "dnsmasq", "iptables", "squid"):
        assert program in heads, f"{program} no longer run by the sources: drop it from the preflight"
        assert program in preflight.COMMANDS


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="needs a Debian host")
def test_each_command_and_file_comes_from_a_package_host_deps_installs():
    allowed = allowed_packages()
    wrong, outside, absent = [], [], []
    things = {Path(p): pkg for cmd, pkg in preflight.COMMANDS.items() if (p := preflight._which(cmd))}
    things |= dict(preflight.FILES)
    absent = [c for c in preflight.COMMANDS if not preflight._which(c)]
    absent += [str(f) for f in preflight.FILES if not f.exists()]
    for path, declared in things.items():
        real = owner(path)
        if real != declared:
            wrong.append(f"{path}: dpkg says {real}, preflight says {declared}")
        elif real not in allowed:
            outside.append(f"{path} ({real})")
    assert not absent, f"missing on this host, run lab/host-deps.sh: {absent}"
    assert not wrong, wrong
    assert not outside, f"not installed by lab/host-deps.sh nor the base system: {outside}"


def test_lxc_configs_include_only_files_the_preflight_checks():
    source = (REPO / "lab" / "pve" / "lxc.py").read_text()
    assert "/usr/share/" not in source, "host paths belong in lab/preflight.py"
    for include in (preflight.LXC_COMMON, preflight.LXC_USERNS, preflight.LXC_NESTING):
        assert include in preflight.FILES


def test_preflight_names_the_missing_file_and_its_package(tmp_path, monkeypatch):
    gone = tmp_path / "debian.common.conf"
    monkeypatch.setattr(preflight, "FILES", {gone: "lxc-templates"})
    monkeypatch.setattr(preflight, "COMMANDS", {"no-such-lab-command": "some-package"})
    problems = preflight.missing()
    assert f"file {gone} not found (Debian package lxc-templates)" in problems
    assert "command 'no-such-lab-command' not found (Debian package some-package)" in problems
    assert preflight.explain_missing_includes([gone]).startswith(
        f"the LXC config includes missing host file(s): {gone} (Debian package lxc-templates)"
    )


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("mmdebstrap"), reason="needs mmdebstrap (lab/host-deps.sh)")
def test_host_deps_in_a_fresh_debian_12_root(tmp_path):
    """mmdebstrap a minimal Debian 12 (+ python3, as a fresh machine has), run host-deps.sh in it: the
    preflight passes; purge one package host-deps installed: the preflight fails naming it."""
    root = tmp_path / "root"
    hooks = [
        'mkdir -p "$1"/root/lab',
        "copy-in lab/host-deps.sh lab/preflight.py /root/lab/",
        'chroot "$1" bash /root/lab/host-deps.sh',
        'chroot "$1" python3 /root/lab/preflight.py && echo PREFLIGHT-PASSED',
        'chroot "$1" dpkg --purge lxc-templates >/dev/null',
        '! chroot "$1" python3 /root/lab/preflight.py',
    ]
    cmd = ["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase", "--include=python3"]
    cmd += [f"--customize-hook={hook}" for hook in hooks]
    cmd += ["bookworm", str(root), MIRRORS[0]]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    log = out.stdout + out.stderr
    shutil.rmtree(root, ignore_errors=True)
    assert out.returncode == 0, log[-4000:]
    assert "PREFLIGHT-PASSED" in log
    assert "file /usr/share/lxc/config/debian.common.conf not found (Debian package lxc-templates)" in log


def test_preflight_runs_with_the_standard_library_only():
    """It runs before the venv exists: nothing but the standard library may be imported."""
    tree = ast.parse((REPO / "lab" / "preflight.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
