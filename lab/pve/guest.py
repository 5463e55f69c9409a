"""Setting a container's guest up the way `pct` does, writing into its rootfs from the host.

Every write goes through GuestFS, which refuses paths that leave the rootfs (guest-controlled symlinks)
and gives files the container's (shifted) ownership.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from lab.pve.lxc import run
from lab.pve.tasks import TaskFailed


def setup_guest(rootfs: Path, conf: dict[str, Any], nets: dict[str, dict[str, Any]], shift: int) -> None:
    """Write what PVE's setup writes on every start: hostname, hosts, interfaces, resolv.conf."""
    hostname = conf.get("hostname", f"CT{conf['vmid']}")
    guest = GuestFS(rootfs, shift)
    guest.write("etc/hostname", hostname + "\n")
    guest.write(
        "etc/hosts",
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    lines = ["auto lo", "iface lo inet loopback", ""]
    for key in sorted(nets):
        net = nets[key]
        name, ip = net["name"], net.get("ip", "manual")
        lines.append(f"auto {name}")
        if ip in ("dhcp", "manual"):
            lines.append(f"iface {name} inet {ip}")
        else:
            lines += [f"iface {name} inet static", f"\taddress {ip}"]
            if net.get("gw"):
                lines.append(f"\tgateway {net['gw']}")
        lines.append("")
    guest.write("etc/network/interfaces", "\n".join(lines))
    if (
        conf.get("nameserver")
        or conf.get("searchdomain")
        or not any(n.get("ip") == "dhcp" for n in nets.values())
    ):
        servers = conf.get("nameserver", "10.87.0.1").replace(",", " ").replace(";", " ").split()
        text = "".join(f"nameserver {s}\n" for s in servers)
        if conf.get("searchdomain"):
            text = f"search {conf['searchdomain']}\n" + text
        guest.write("etc/resolv.conf", text, replace_link=True)


async def generate_host_keys(workdir: Path) -> Path:
    """SSH host keys for a new container, made in `workdir` (in parallel with the extraction)."""
    await asyncio.to_thread((workdir / "etc" / "ssh").mkdir, parents=True, exist_ok=True)
    await run("ssh-keygen", "-A", "-f", str(workdir))
    return workdir / "etc" / "ssh"


async def first_boot_setup(
    rootfs: Path, ssh_keys: str | None, password: str | None, shift: int, host_keys: Path
) -> None:
    """Create-time only: root's authorized_keys, root password, fresh SSH host keys, machine-id."""
    guest = GuestFS(rootfs, shift)
    if ssh_keys:
        guest.mkdir("root/.ssh", 0o700)
        guest.write("root/.ssh/authorized_keys", ssh_keys.strip() + "\n", mode=0o600)
    if password:
        hashed = await run("openssl", "passwd", "-6", "-stdin", stdin=password.encode() + b"\n")
        shadow = guest.read("etc/shadow").splitlines()
        shadow = [
            f"root:{hashed}:" + ":".join(s.split(":")[2:]) if s.startswith("root:") else s for s in shadow
        ]
        guest.write("etc/shadow", "\n".join(shadow) + "\n", mode=0o640, gid=42)
    guest.write("etc/machine-id", "", mode=0o444)
    await asyncio.to_thread(_install_host_keys, guest, host_keys)


def _install_host_keys(guest: GuestFS, host_keys: Path) -> None:
    for key in sorted(host_keys.glob("ssh_host_*")):
        mode = 0o600 if key.suffix != ".pub" else 0o644
        guest.write(f"etc/ssh/{key.name}", key.read_text(), mode=mode)


class GuestFS:
    """Writes into a container's rootfs without following guest-controlled symlinks out of it."""

    def __init__(self, rootfs: Path, shift: int) -> None:
        self.root = rootfs.resolve()
        self.shift = shift

    def _path(self, rel: str) -> Path:
        path = self.root / rel
        parent = path.parent.resolve()
        if parent != self.root and self.root not in parent.parents:
            raise TaskFailed(f"refusing to write {rel}: path leaves the container root")
        return parent / path.name

    def read(self, rel: str) -> str:
        return self._path(rel).read_text()

    def mkdir(self, rel: str, mode: int) -> None:
        path = self._path(rel)
        path.mkdir(mode=mode, exist_ok=True)
        os.chown(path, self.shift, self.shift)
        path.chmod(mode)

    def write(self, rel: str, text: str, mode: int = 0o644, gid: int = 0, replace_link: bool = False) -> None:
        path = self._path(rel)
        if path.is_symlink():
            if not replace_link:
                raise TaskFailed(f"refusing to write {rel}: it is a symlink")
            path.unlink()
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        fd = os.open(path, flags, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chown(path, self.shift, self.shift + gid)
        path.chmod(mode)
