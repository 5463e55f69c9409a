"""Build the lab's Debian 12 LXC template with mmdebstrap and cache it.

The result mirrors Proxmox's `debian-12-standard` appliance where it matters to the playbook:
systemd as init, openssh-server installed, ifupdown + a DHCP client (Proxmox writes
/etc/network/interfaces), and *no python3*, so Ansible has to bootstrap Python exactly as it would
against a real Proxmox host. Host SSH keys and the machine-id are removed: every container gets its
own at creation, as on Proxmox.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lab import config

MIRRORS = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
PACKAGES = [
    "systemd-sysv",
    "openssh-server",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "iputils-ping",
    "ca-certificates",
    "procps",
    "less",
    "locales",
]
# Run inside the finished tree: strip per-instance identity and caches, prove python3 is absent.
CUSTOMIZE = [
    'rm -f "$1"/etc/ssh/ssh_host_*',
    ': > "$1"/etc/machine-id',
    'rm -f "$1"/var/lib/dbus/machine-id',
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
    'echo "en_US.UTF-8 UTF-8" > "$1"/etc/locale.gen',
    'chroot "$1" locale-gen >/dev/null',
    'printf "auto lo\\niface lo inet loopback\\n" > "$1"/etc/network/interfaces',
    'test ! -e "$1"/usr/bin/python3',
]


def template_dir() -> Path:
    return config.cache_dir() / "templates"


def cached_template() -> Path | None:
    """The newest cached debian-12-standard tarball, if any."""
    found = sorted(template_dir().glob("debian-12-standard_12.*-1_amd64.tar.zst"))
    return found[-1] if found else None


def build(force: bool = False) -> Path:
    """Build the template unless a cached one exists; returns its path."""
    existing = cached_template()
    if existing and not force:
        return existing
    template_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template_dir(), prefix=".build-") as tmp:
        out = Path(tmp) / "rootfs.tar.zst"
        cmd = [
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            "--variant=minbase",
            "--include=" + ",".join(PACKAGES),
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        ]
        cmd += [f"--customize-hook={hook}" for hook in CUSTOMIZE]
        cmd += ["bookworm", str(out), *MIRRORS]
        subprocess.run(cmd, check=True)
        version = _debian_version(out)
        final = template_dir() / f"debian-12-standard_{version}-1_amd64.tar.zst"
        shutil.move(out, final)
    return final


def _debian_version(tarball: Path) -> str:
    """Read /etc/debian_version from the tarball (e.g. "12.12") to name it like the real one."""
    text = subprocess.run(
        ["tar", "-xOf", str(tarball), "./etc/debian_version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    if not text.startswith("12."):
        raise RuntimeError(f"unexpected debian_version {text!r} in {tarball}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.template", description=__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached template exists")
    args = parser.parse_args(argv)
    print(build(force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
