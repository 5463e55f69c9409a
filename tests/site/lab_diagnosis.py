"""What the lab's containers look like from the host, for the message of a playbook run that could not reach
its hosts: every LXC container under the lab's lxcpath with its state, its IPv4 addresses and the keys in
root's authorized_keys (fingerprints), addresses held by more than one container, and the DHCP leases.

A host that answers SSH but refuses the deployment's key is either another container holding the same
address or a container whose authorized_keys is not the one site.yml passed: this tells which, after the fact,
on a CI machine nobody can log in to.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

from lab import config, net


def _out(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    return (done.stdout + done.stderr).strip()


def _rootfs(container_dir: Path) -> Path | None:
    for line in (container_dir / "config").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "lxc.rootfs.path":
            return Path(value.strip().removeprefix("dir:"))
    return None


def _key_fingerprints(rootfs: Path | None) -> str:
    keys = rootfs / "root" / ".ssh" / "authorized_keys" if rootfs else None
    if keys is None or not keys.exists():
        return "no authorized_keys"
    return "; ".join(_out("ssh-keygen", "-l", "-f", str(keys)).splitlines())


def describe(key_file: Path | None = None) -> str:
    lxcpath = config.lxc_path()
    lines = [f"LXC containers under {lxcpath}:"]
    holders: dict[str, list[str]] = defaultdict(list)
    for entry in sorted(lxcpath.iterdir()) if lxcpath.is_dir() else []:
        if not (entry / "config").exists():
            continue
        state = _out("lxc-info", "-P", str(lxcpath), "-n", entry.name, "-s", "-H")
        addresses = _out("lxc-info", "-P", str(lxcpath), "-n", entry.name, "-i", "-H").split()
        for address in addresses:
            holders[address].append(entry.name)
        fingerprints = _key_fingerprints(_rootfs(entry))
        lines.append(f"  {entry.name}: {state.lower()} {' '.join(addresses) or '-'} keys: {fingerprints}")
    if key_file is not None and key_file.with_suffix(".pub").exists():
        lines.append(f"deployment key: {_out('ssh-keygen', '-l', '-f', str(key_file.with_suffix('.pub')))}")
    shared = {a: names for a, names in holders.items() if len(names) > 1}
    lines.append(f"addresses held by more than one container: {shared or 'none'}")
    lines.append("DHCP leases: " + ", ".join(f"{x['ip']} {x['mac']} {x['hostname']}" for x in net.leases()))
    return "\n".join(lines)
