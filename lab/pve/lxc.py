"""The real backend: LXC containers under the lab's lxcpath, named by vmid.

PVE config (memory, swap, cores, cpulimit, netN, features, unprivileged, ...) is translated into an
LXC config and driven with lxc-start/-stop/-info (the guest itself is set up by lab/pve/guest.py, the
way `pct` does it). Unprivileged containers get a real idmap (root:100000:65536 in /etc/subuid and
/etc/subgid) and a rootfs extracted inside that user namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from lab import preflight
from lab.pve.errors import ApiError
from lab.pve.tasks import TaskFailed

ID_SHIFT = 100000
ID_RANGE = 65536
MEMCG = Path("/sys/fs/cgroup/memory")


async def run(*argv: str, stdin: bytes | Path | None = None, limit: float = 300) -> str:
    """Run a command; raise TaskFailed with its output on failure. `stdin`: bytes, or a file to feed."""
    source = stdin.open("rb") if isinstance(stdin, Path) else None
    feed = source or (asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL)
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=feed,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except FileNotFoundError:
            package = preflight.COMMANDS.get(argv[0], "unknown")
            raise TaskFailed(
                f"command '{argv[0]}' not found on the lab host (Debian package {package}); {preflight.HINT}"
            ) from None
        try:
            data = None if source or stdin is None else stdin
            out, _ = await asyncio.wait_for(proc.communicate(data), limit)  # type: ignore[arg-type]
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise TaskFailed(f"command '{argv[0]}' timed out after {limit:.0f}s") from None
    finally:
        if source:
            source.close()
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise TaskFailed(f"command '{' '.join(argv[:3])} ...' failed: exit code {proc.returncode}: {text}")
    return text


async def validate_ssh_keys(keys: str) -> None:
    """What PVE checks before creating: every key line parses (`ssh-keygen -l`), else a 500."""
    try:
        await run("ssh-keygen", "-l", "-f", "-", stdin=keys.encode() + b"\n", limit=30)
    except TaskFailed:
        raise ApiError(500, "SSH public key validation error") from None


def ensure_subids() -> None:
    """Give root the subordinate id range PVE uses (root:100000:65536), idempotently."""
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        line = f"root:{ID_SHIFT}:{ID_RANGE}"
        text = path.read_text() if path.exists() else ""
        if line not in text.splitlines():
            path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")


class Backend:
    def __init__(self, lxcpath: Path) -> None:
        self.lxcpath = lxcpath
        self.lxcpath.mkdir(parents=True, exist_ok=True)

    def exists(self, vmid: int) -> bool:
        return (self.lxcpath / str(vmid) / "config").exists()

    def _args(self, vmid: int) -> list[str]:
        return ["-P", str(self.lxcpath), "-n", str(vmid)]

    # --- rootfs --------------------------------------------------------------------------------
    async def extract(self, template: Path, rootfs: Path, unprivileged: bool) -> None:
        await asyncio.to_thread(rootfs.mkdir, parents=True)
        # The archive is opened here (as root) and fed on stdin: the unprivileged tar need not reach it.
        tar = ["tar", "--zstd", "-xpf", "-", "-C", str(rootfs), "--numeric-owner", "--exclude=./dev/*"]
        if unprivileged:
            os.chown(rootfs, ID_SHIFT, ID_SHIFT)
            ids = [f"u:0:{ID_SHIFT}:{ID_RANGE}", f"g:0:{ID_SHIFT}:{ID_RANGE}"]
            await run("lxc-usernsexec", "-m", ids[0], "-m", ids[1], "--", *tar, stdin=template)
        else:
            await run(*tar, stdin=template)

    # --- config --------------------------------------------------------------------------------
    def write_config(
        self, vmid: int, conf: dict[str, Any], nets: dict[str, dict[str, Any]], rootfs: Path
    ) -> None:
        unpriv = bool(conf.get("unprivileged"))
        features = conf.get("_features", {})
        lines = [
            f"lxc.uts.name = {conf.get('hostname', f'CT{vmid}')}",
            f"lxc.arch = {conf.get('arch', 'amd64')}",
            f"lxc.include = {preflight.LXC_COMMON}",
        ]
        if unpriv:
            lines += [
                f"lxc.include = {preflight.LXC_USERNS}",
                f"lxc.idmap = u 0 {ID_SHIFT} {ID_RANGE}",
                f"lxc.idmap = g 0 {ID_SHIFT} {ID_RANGE}",
            ]
        if features.get("nesting"):
            lines.append(f"lxc.include = {preflight.LXC_NESTING}")
        lines += [
            f"lxc.rootfs.path = dir:{rootfs}",
            f"lxc.tty.max = {conf.get('tty', 2)}",
            f"lxc.start.auto = {1 if conf.get('onboot') else 0}",
        ]
        lines += _cgroup_lines(conf)
        for key in sorted(nets, key=lambda k: int(k[3:])):
            idx, net = int(key[3:]), nets[key]
            prefix = f"lxc.net.{idx}"
            lines += [
                f"{prefix}.type = veth",
                f"{prefix}.link = {net.get('bridge', 'vmbr0')}",
                f"{prefix}.name = {net['name']}",
                f"{prefix}.hwaddr = {net['hwaddr']}",
                f"{prefix}.veth.pair = veth{vmid}i{idx}",
            ]
            if not net.get("link_down"):
                lines.append(f"{prefix}.flags = up")
            if net.get("mtu"):
                lines.append(f"{prefix}.mtu = {net['mtu']}")
        path = self.lxcpath / str(vmid)
        path.mkdir(exist_ok=True)
        (path / "config").write_text("\n".join(lines) + "\n")

    # --- lifecycle -----------------------------------------------------------------------------
    async def state(self, vmid: int) -> tuple[str, int | None]:
        """('running'|'stopped', init pid). As in PVE, a container with live processes is running:
        STARTING, FROZEN and STOPPING count as running, so nothing treats a live container as gone."""
        if not self.exists(vmid):
            return "stopped", None
        try:
            out = await run("lxc-info", *self._args(vmid), "-s", "-p")
        except TaskFailed:
            # A config LXC cannot load (e.g. an include missing from the host) belongs to no running
            # container: report it stopped, as PVE would, so listings keep working and a start says why.
            return "stopped", None
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        stopped = info.get("State", "").strip() == "STOPPED"
        pid = info.get("PID", "").strip()
        return ("stopped", None) if stopped else ("running", int(pid) if pid.isdigit() else None)

    def includes(self, vmid: int) -> list[Path]:
        """The host files a container's LXC config includes."""
        text = (self.lxcpath / str(vmid) / "config").read_text()
        lines = [line for line in text.splitlines() if line.startswith("lxc.include")]
        return [Path(line.split("=", 1)[1].strip()) for line in lines]

    async def start(self, vmid: int) -> None:
        cause = preflight.explain_missing_includes(await asyncio.to_thread(self.includes, vmid))
        if cause:
            raise TaskFailed(f"startup for container '{vmid}' failed: {cause}")
        log = self.lxcpath / str(vmid) / "start.log"
        try:
            await run("lxc-start", *self._args(vmid), "-d", "-l", "ERROR", "-o", str(log), limit=60)
            await run("lxc-wait", *self._args(vmid), "-s", "RUNNING", "-t", "30", limit=40)
        except TaskFailed as exc:
            detail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise TaskFailed(f"startup for container '{vmid}' failed: {' | '.join(detail) or exc}") from None

    async def stop(self, vmid: int, grace: int | None = None) -> None:
        """Kill (grace None) or clean shutdown within `grace` seconds."""
        if grace is None:
            await run("lxc-stop", *self._args(vmid), "-k", limit=60)
        else:
            await run("lxc-stop", *self._args(vmid), "-t", str(grace), limit=grace + 30)

    async def apply_limits(self, vmid: int, conf: dict[str, Any]) -> None:
        """Hot-plug memory/swap/cpu limits into a running container's cgroups (like PVE)."""
        settings = [line.split(" = ", 1) for line in _cgroup_lines(conf)]
        values = {key.removeprefix("lxc.cgroup."): value for key, value in settings}
        memsw = values.pop("memory.memsw.limit_in_bytes", None)
        memory = values.pop("memory.limit_in_bytes")
        # memsw must stay >= memory: raise it first when growing, lower it last when shrinking.
        order = [("memory.memsw.limit_in_bytes", memsw), ("memory.limit_in_bytes", memory)]
        try:
            for key, value in order:
                if value is not None:
                    await run("lxc-cgroup", *self._args(vmid), key, value)
        except TaskFailed:
            for key, value in reversed(order):
                if value is not None:
                    await run("lxc-cgroup", *self._args(vmid), key, value)
        for key, value in values.items():
            await run("lxc-cgroup", *self._args(vmid), key, value)

    async def reboot(self, vmid: int) -> None:
        await run("lxc-stop", *self._args(vmid), "-r", "-t", "60", limit=90)

    async def destroy(self, vmid: int) -> None:
        """Stop, then remove the LXC directory. Never under a live container: the caller releases its
        address lease next, and a live container would keep answering on an address DHCP hands out
        again (the next container's SSH would reach it and be refused)."""
        if self.exists(vmid) and (await self.state(vmid))[0] == "running":
            with contextlib.suppress(TaskFailed):  # it may have stopped meanwhile: the wait decides
                await self.stop(vmid)
            try:
                await run("lxc-wait", *self._args(vmid), "-s", "STOPPED", "-t", "30", limit=40)
            except TaskFailed as exc:
                raise TaskFailed(f"unable to destroy CT {vmid} - container did not stop: {exc}") from None
        await asyncio.to_thread(shutil.rmtree, self.lxcpath / str(vmid), ignore_errors=True)

    async def interfaces(self, pid: int) -> list[dict[str, Any]]:
        out = await run("nsenter", "-t", str(pid), "-n", "ip", "-j", "addr", "show")
        result = []
        for link in json.loads(out):
            entry: dict[str, Any] = {
                "name": link["ifname"],
                "hwaddr": link.get("address", "00:00:00:00:00:00"),
                "hardware-address": link.get("address", "00:00:00:00:00:00"),
                "ip-addresses": [],
            }
            for addr in link.get("addr_info", []):
                family = "inet" if addr["family"] == "inet" else "inet6"
                entry["ip-addresses"].append(
                    {"ip-address": addr["local"], "ip-address-type": family, "prefix": addr["prefixlen"]}
                )
                entry.setdefault(family, f"{addr['local']}/{addr['prefixlen']}")
            result.append(entry)
        return result

    def usage(self, vmid: int) -> dict[str, int]:
        """Memory/swap use from the container's memory cgroup (v1), 0 when unavailable."""
        base = _payload_memcg(vmid)
        out = {"mem": 0, "swap": 0}
        if base:
            try:
                out["mem"] = int((base / "memory.usage_in_bytes").read_text())
                memsw = base / "memory.memsw.usage_in_bytes"
                if memsw.exists():
                    out["swap"] = max(0, int(memsw.read_text()) - out["mem"])
            except (OSError, ValueError):
                pass
        return out


def _own_memcg() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path.lstrip("/")
    return ""


def _payload_memcg(vmid: int) -> Path | None:
    # LXC nests the payload cgroup under the cgroup of the process that started it.
    for base in (MEMCG / _own_memcg(), MEMCG):
        candidate = base / f"lxc.payload.{vmid}"
        if candidate.is_dir():
            return candidate
    return None


def _cgroup_lines(conf: dict[str, Any]) -> list[str]:
    memory = int(conf.get("memory", 512)) * 1024 * 1024
    swap = int(conf.get("swap", 512)) * 1024 * 1024
    lines = [f"lxc.cgroup.memory.limit_in_bytes = {memory}"]
    if (MEMCG / "memory.memsw.limit_in_bytes").exists():
        lines.append(f"lxc.cgroup.memory.memsw.limit_in_bytes = {memory + swap}")
    if conf.get("cores"):
        ncpu = os.cpu_count() or 1
        lines.append(f"lxc.cgroup.cpuset.cpus = 0-{min(int(conf['cores']), ncpu) - 1}")
    if conf.get("cpulimit"):
        lines += [
            "lxc.cgroup.cpu.cfs_period_us = 100000",
            f"lxc.cgroup.cpu.cfs_quota_us = {int(float(conf['cpulimit']) * 100000)}",
        ]
    lines.append(f"lxc.cgroup.cpu.shares = {int(conf.get('cpuunits', 1024))}")
    return lines
