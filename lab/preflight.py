"""Preflight: every host command and file the lab, tests, molecule and benchmarks rely on, and its package.

Runs before anything else starts (`make setup` runs it after `lab/host-deps.sh`; `python -m lab up` runs it
first), with the system's python3 and the standard library only, so it works before the venv exists.
For each thing missing it names the thing and the Debian package that provides it, instead of letting a
container start fail later with "Failed to load config".

tests/host/ proves these tables against the package database (`dpkg -S`), against the sources (every
program the code runs is listed here) and in a fresh Debian 12 root.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

LXC_SHARE = Path("/usr/share/lxc/config")

# command -> the Debian package that ships it.
COMMANDS: dict[str, str] = {
    "make": "make",
    "bash": "bash",
    "dpkg": "dpkg",
    "dpkg-query": "dpkg",
    "git": "git",
    "lxc-start": "lxc",
    "lxc-stop": "lxc",
    "lxc-info": "lxc",
    "lxc-wait": "lxc",
    "lxc-freeze": "lxc",
    "lxc-cgroup": "lxc",
    "lxc-usernsexec": "lxc",
    "lxc-ls": "lxc",
    "lxc-attach": "lxc",
    "newuidmap": "uidmap",
    "newgidmap": "uidmap",
    "mmdebstrap": "mmdebstrap",
    "dnsmasq": "dnsmasq-base",
    "dhcp_release": "dnsmasq-utils",
    "iptables": "iptables",
    "ip": "iproute2",
    "openssl": "openssl",
    "tar": "tar",
    "zstd": "zstd",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "rsync": "rsync",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "taskset": "util-linux",
    "chrt": "util-linux",
    "nginx": "nginx",
    "wrk": "wrk",
    "valgrind": "valgrind",
    "squid": "squid-openssl",
}

# Optional programs -> what goes without them. Not Debian packages of host-deps.sh: Node.js comes with
# the machine image (NodeSource's build, npm included), and Debian 12's separate `npm` package conflicts
# with that `nodejs`. Their absence is no preflight failure: `make real-clients` says so and the
# real-client tests skip, naming why.
OPTIONAL: dict[str, str] = {
    "npm": "make real-clients (Claude Code and Codex from tests/real_clients/package-lock.json)",
    "node": "Codex's launcher (tests/client/test_real_cli.py)",
}

# Host files the lab includes or reads -> their package. The LXC configs the PVE emulator writes include
# these (lab/pve/lxc.py takes the paths from here, so the two cannot drift apart).
LXC_COMMON = LXC_SHARE / "debian.common.conf"
LXC_USERNS = LXC_SHARE / "debian.userns.conf"
LXC_NESTING = LXC_SHARE / "nesting.conf"
FILES: dict[Path, str] = {
    LXC_COMMON: "lxc-templates",
    LXC_USERNS: "lxc-templates",
    LXC_SHARE / "common.conf": "liblxc-common",
    LXC_SHARE / "userns.conf": "liblxc-common",
    LXC_NESTING: "liblxc-common",
    # squid's certificate minter for TLS inspection (tests/client: the TLS-inspecting corporate proxy)
    Path("/usr/lib/squid/security_file_certgen"): "squid-openssl",
}

# Python modules of the interpreter that builds the venv -> their Debian package (Debian splits them off).
PYTHON_MODULES: dict[str, str] = {"ensurepip": "python3-venv"}

HINT = "install it with `bash lab/host-deps.sh` (as root), which installs the packages it lists"


def _which(command: str) -> str | None:
    # root's PATH may lack /usr/sbin when run from a plain shell; look there too.
    extra = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(command, path=os.environ.get("PATH", "") + os.pathsep + extra)


def missing() -> list[str]:
    """One line per missing command, file or module, naming its package."""
    problems = [f"command '{c}' not found (Debian package {p})" for c, p in COMMANDS.items() if not _which(c)]
    problems += [f"file {p} not found (Debian package {pkg})" for p, pkg in FILES.items() if not p.exists()]
    problems += [
        f"python module '{mod}' missing from {sys.executable} (Debian package {pkg})"
        for mod, pkg in PYTHON_MODULES.items()
        if importlib.util.find_spec(mod) is None
    ]
    return problems


def package_of_file(path: Path) -> str | None:
    """The package a host file belongs to, per FILES (for error messages of the lab)."""
    return FILES.get(Path(path))


def explain_missing_includes(paths: list[Path]) -> str | None:
    """A user-facing cause for an LXC config whose included files are absent, or None if all exist."""
    absent = [p for p in paths if not p.exists()]
    if not absent:
        return None
    named = ", ".join(f"{p} (Debian package {FILES.get(p, 'unknown')})" for p in absent)
    return f"the LXC config includes missing host file(s): {named}; {HINT}"


def main() -> int:
    problems = missing()
    if problems:
        print("preflight: the lab cannot run on this machine yet:", file=sys.stderr)
        for line in problems:
            print(f"  - {line}", file=sys.stderr)
        print(f"preflight: {HINT}", file=sys.stderr)
        return 1
    for command, used_by in OPTIONAL.items():
        if not _which(command):
            print(f"preflight: note: '{command}' not found: {used_by} will be skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
