"""The emulated cluster: nodes, storage, containers (state + LXC backend), tasks and faults."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lab import config as labconfig
from lab import net
from lab.pve import faults, guest, schema
from lab.pve.access import AccessConfig
from lab.pve.auth import Authenticator
from lab.pve.configs import CREATE, ConfigOps, print_property_string, stored_description
from lab.pve.errors import ApiError
from lab.pve.lxc import ID_SHIFT, Backend
from lab.pve.permcheck import Checker
from lab.pve.state import ClusterState, Container
from lab.pve.statuscache import ROUND_KEYS, StatusCache
from lab.pve.storage import STORAGES, NodeStorage
from lab.pve.tasks import Task, TaskFailed, TaskManager

log = logging.getLogger("lab.pve")
DEFAULT_ROOTFS_GIB = 4
NEW_DISK_SIZE = re.compile(r"^\d+(\.\d+)?$")
# Keys accepted at create but never stored in the config (PVE consumes them).
CREATE_ONLY = {
    "ostemplate",
    "password",
    "ssh-public-keys",
    "start",
    "storage",
    "force",
    "unique",
    "restore",
    "ignore-unpack-errors",
    "bwlimit",
    "pool",
    "ha-managed",
    "node",
    "vmid",
}


class Pve(ConfigOps):
    def __init__(self, cfg: dict[str, Any], state_dir: Path) -> None:
        self.cfg = cfg
        self.nodes: list[str] = list(cfg["nodes"])
        self.dir = state_dir / "pve"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.access = AccessConfig(self.dir / "access.json", cfg)
        self.auth = Authenticator(self.access, self.dir / "authkey")
        self.state = ClusterState(self.dir / "cluster.json")
        self.tasks = TaskManager(self.dir / "tasks")
        self.backend = Backend(labconfig.lxc_path())
        self.storage_id: str = cfg.get("storage", "local")  # templates
        self.rootdir_storage: str = cfg.get("rootdir_storage", "local-lvm")  # root disks
        total = cfg.get("storage_total_gib", 100)
        self.storages = {
            n: NodeStorage(
                self.dir / "storage" / n / self.storage_id, self.storage_id, total, self.rootdir_storage
            )
            for n in self.nodes
        }
        self.locks: dict[int, asyncio.Lock] = {}
        self.started = time.time()
        # pve-http-server PVE/APIServer/AnyEvent.pm delays every 401 by 3 s; the lab may shorten it.
        self.auth_failure_delay = float(cfg.get("auth_failure_delay", 3))
        self.status_cache = StatusCache(self.nodes, float(cfg.get("status_interval", 10)), self.round_of)

    async def round_of(self, node: str) -> dict[int, dict[str, Any]]:
        """What node's pvestatd would broadcast now (PVE/Service/pvestatd.pm update_lxc_status): every
        container whose config is on the node, with its status, name and figures."""
        out = {}
        for ct, st in await self.statuses(self.state.on_node(node)):
            out[ct.vmid] = {"maxcpu": st["cpus"], **{k: st[k] for k in ROUND_KEYS if k in st}}
        return out

    async def recover(self) -> None:
        """After a daemon restart: finish what a vanished create/destroy task left half-made."""
        for ct in list(self.state.containers.values()):
            if ct.lock in ("create", "destroyed"):
                log.warning("CT %s was left locked (%s) by a stopped daemon: removing it", ct.vmid, ct.lock)
                await self._discard(ct)

    # --- helpers -------------------------------------------------------------------------------
    def node_status(self, node: str, authid: str) -> str:
        return "offline" if faults.offline(self.state.faults, node, authid) else "online"

    def check_vmid_unused(self, vmid: int) -> None:
        existing = self.state.containers.get(vmid)
        if existing:
            raise ApiError(500, f"CT {vmid} already exists on node '{existing.node}'")

    def check_create_storages(self, node: str, p: dict[str, Any], perms: Checker) -> None:
        """API2/LXC.pm create_vm check_and_activate_storage, for the root disk's storage: it must exist,
        take container directories, and the caller needs Datastore.AllocateSpace on it."""
        sid = p.get("storage", "local")
        if p.get("rootfs"):
            volume = str(schema.property_string(*CREATE, "rootfs", p["rootfs"]).get("volume", ""))
            if ":" in volume:
                sid = volume.partition(":")[0]
            elif volume.startswith("/"):
                return  # a bind mount: root@pam only, refused by the config-key check before
        if sid not in STORAGES:
            raise ApiError(500, f"storage '{sid}' does not exist")
        if "rootdir" not in STORAGES[sid][1]:
            raise schema.ParamError({"storage": f"storage '{sid}' does not support container directories"})
        perms.check(f"/storage/{sid}", ["Datastore.AllocateSpace"])

    def container(self, node: str, vmid: int) -> Container:
        ct = self.state.containers.get(vmid)
        if ct is None or ct.node != node:
            raise ApiError(500, f"Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist")
        return ct

    def lock(self, vmid: int) -> asyncio.Lock:
        return self.locks.setdefault(vmid, asyncio.Lock())

    def check_unlocked(self, ct: Container) -> None:
        """PUT config checks the lock in the request itself: a locked CT is an HTTP 500."""
        if ct.lock:
            raise ApiError(500, f"CT is locked ({ct.lock})")

    def _guarded(
        self,
        ct: Container,
        kind: str,
        user: str,
        work: Callable[[Task], Awaitable[None]],
        skiplock: bool = False,
    ) -> Task:
        """A power/destroy task. PVE checks the config lock inside the worker, so on a locked CT the API
        call succeeds (a UPID) and the *task* fails with "CT is locked (<lock>)"."""

        async def guarded(task: Task) -> None:
            async with self.lock(ct.vmid):
                if ct.lock and not skiplock:
                    raise TaskFailed(f"CT is locked ({ct.lock})")
                await work(task)

        return self.tasks.start(ct.node, kind, str(ct.vmid), user, guarded)

    def unlock(self, vmid: int) -> str | None:
        """`pct unlock VMID` (lab control): drop the config lock; returns the lock that was held."""
        ct = self.state.containers.get(vmid)
        if ct is None:
            raise KeyError(vmid)
        held, ct.lock = ct.lock, None
        self.state.save()
        return held

    def fault(self, name: str, task: str, vmid: int | None = None) -> bool:
        return faults.active(self.state.faults, name, task, vmid)

    async def ct_state(self, vmid: int) -> tuple[str, int | None]:
        return await self.backend.state(vmid)

    # --- create --------------------------------------------------------------------------------
    def create(self, node: str, p: dict[str, Any], user: str) -> Task:
        vmid: int = p["vmid"]
        self.check_vmid_unused(vmid)
        storage = self.storages[node]
        store_id = p.get("storage", "local")
        rootfs = schema.property_string(
            *CREATE, "rootfs", p.get("rootfs", f"{store_id}:{DEFAULT_ROOTFS_GIB}")
        )
        volume = str(rootfs["volume"])
        if NEW_DISK_SIZE.match(volume):  # a bare size: on the default storage, as PVE does
            volume = f"{store_id}:{volume}"
        vol_store, _, size = volume.partition(":")
        if vol_store != self.rootdir_storage:
            raise ApiError(500, f"storage '{vol_store}' does not exist")
        if not size.replace(".", "", 1).isdigit():
            raise ApiError(
                500, f"unable to create CT {vmid} - rootfs: only new volumes STORAGE:SIZE_GiB are supported"
            )
        rootfs.pop("volume")
        rootfs["size"] = f"{size}G"
        conf: dict[str, Any] = {"arch": p.get("arch", "amd64"), "ostype": p.get("ostype", "debian")}
        conf.update({k: v for k, v in p.items() if k not in CREATE_ONLY})
        conf["rootfs"] = storage.volid(vmid) + ("," + print_property_string(rootfs) if rootfs else "")
        conf.setdefault("memory", 512)
        conf.setdefault("swap", 512)
        conf["unprivileged"] = p.get("unprivileged", True)
        conf.setdefault("hostname", f"CT{vmid}")
        if "description" in conf:
            conf["description"] = stored_description(conf["description"])
            if conf["description"] is None:
                del conf["description"]
        for key in [k for k in conf if k.startswith("net")]:
            conf[key] = self.normalize_net(key, conf[key])
        ct = Container(vmid=vmid, node=node, conf=conf, lock="create")
        self.state.containers[vmid] = ct
        self.state.save()

        async def work(task: Task) -> None:
            try:
                template = await asyncio.to_thread(storage.template_file, p["ostemplate"])
                if template is None:
                    # pve-container src/PVE/API2/LXC.pm create_vm: the worker dies "$emsg $err" when the
                    # archive cannot be read.
                    missing = f"volume '{p['ostemplate']}' does not exist"
                    raise TaskFailed(f"unable to create CT {vmid} - {missing}")
                await self._build(task, ct, template, p)
            except BaseException:
                await self._discard(ct)
                raise
            if p.get("start"):
                # Like PVE: the create task ends here and start-after-create runs as its own vzstart task.
                self.start(ct, user)

        return self.tasks.start(node, "vzcreate", str(vmid), user, work)

    async def _build(self, task: Task, ct: Container, template: Path, p: dict[str, Any]) -> None:
        vmid = ct.vmid
        storage = self.storages[ct.node]
        volume = storage.volume_dir(vmid)
        task.log(f"extracting archive '{template}'")
        if self.fault("storage_full", "vzcreate", vmid):
            task.log("tar: ./usr/lib/x86_64-linux-gnu/libc.so.6: Cannot write: No space left on device")
            raise TaskFailed(
                f"unable to create CT {vmid} - command 'tar xpf - --zstd --totals --one-file-system -p "
                f"--sparse --numeric-owner --acls --xattrs' failed: exit code 2"
            )
        unpriv = bool(ct.conf.get("unprivileged"))
        shift = ID_SHIFT if unpriv else 0
        # The vmid is free in the cluster state, so anything still on disk for it is debris of a crash.
        await self.backend.destroy(vmid)
        await asyncio.to_thread(storage.free_volume, vmid)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.dir, prefix=f".keys-{vmid}-") as workdir:
            # Key generation (seconds for RSA on a busy host) overlaps the extraction.
            keygen = asyncio.create_task(guest.generate_host_keys(Path(workdir)))
            try:
                await self.backend.extract(template, volume, unpriv)
            except TaskFailed as exc:
                keygen.cancel()
                raise TaskFailed(f"unable to create CT {vmid} - {exc}") from None
            size = (await asyncio.to_thread(template.stat)).st_size
            task.log(f"Total bytes read: {size} ({time.monotonic() - started:.1f}s)")
            task.log("Detected container architecture: amd64")
            host_keys = await keygen
            for kind in ("rsa", "ecdsa", "ed25519"):
                task.log(f"Creating SSH host key 'ssh_host_{kind}_key' - this may take some time ...")
            await guest.first_boot_setup(
                volume, p.get("ssh-public-keys"), p.get("password"), shift, host_keys
            )
        await asyncio.to_thread(self._write, ct)
        ct.lock = None
        self.state.save()

    def _write(self, ct: Container) -> None:
        conf = dict(ct.conf, vmid=ct.vmid, _features=self.features(ct.conf))
        nets = self.nets(ct.conf)
        volume = self.storages[ct.node].volume_dir(ct.vmid)
        shift = ID_SHIFT if ct.conf.get("unprivileged") else 0
        guest.setup_guest(volume, conf, nets, shift)
        self.backend.write_config(ct.vmid, conf, nets, volume)

    async def _discard(self, ct: Container) -> None:
        """Remove everything a container owns: LXC, volume, leases, state entry."""
        await self.backend.destroy(ct.vmid)
        await asyncio.to_thread(self.storages[ct.node].free_volume, ct.vmid)
        for spec in self.nets(ct.conf).values():
            await asyncio.to_thread(net.release_lease, spec["hwaddr"])
        self.state.containers.pop(ct.vmid, None)
        self.state.save()

    # --- lifecycle -----------------------------------------------------------------------------
    async def _start(self, task: Task, ct: Container) -> None:
        for key, spec in self.nets(ct.conf).items():
            bridge = spec.get("bridge")
            if not bridge:
                raise TaskFailed(f"missing 'bridge' option for {key}")
            if not await asyncio.to_thread(Path(f"/sys/class/net/{bridge}/bridge").exists):
                raise TaskFailed(f"bridge '{bridge}' does not exist")
        self.apply_pending(ct)
        await asyncio.to_thread(self._write, ct)
        await self.backend.start(ct.vmid)

    async def require_state(self, ct: Container, want: str) -> None:
        state, _ = await self.ct_state(ct.vmid)
        if state != want:
            msg = "already running" if state == "running" else "not running"
            raise ApiError(500, f"CT {ct.vmid} {msg}")

    def start(self, ct: Container, user: str, skiplock: bool = False) -> Task:
        async def work(task: Task) -> None:
            await self._start(task, ct)

        return self._guarded(ct, "vzstart", user, work, skiplock)

    def stop(self, ct: Container, user: str, skiplock: bool = False) -> Task:
        async def work(task: Task) -> None:
            await self.backend.stop(ct.vmid)

        return self._guarded(ct, "vzstop", user, work, skiplock)

    def shutdown(self, ct: Container, user: str, timeout: int, force: bool) -> Task:
        async def work(task: Task) -> None:
            try:
                await self.backend.stop(ct.vmid, grace=timeout)
            except TaskFailed:
                if not force:
                    raise TaskFailed("shutdown failed - container did not stop in time") from None
                task.log("shutdown timed out, stopping container (forceStop)")
                await self.backend.stop(ct.vmid)

        return self._guarded(ct, "vzshutdown", user, work)

    def reboot(self, ct: Container, user: str) -> Task:
        async def work(task: Task) -> None:
            await self.backend.stop(ct.vmid, grace=60)
            await self._start(task, ct)

        return self._guarded(ct, "vzreboot", user, work)

    def destroy(self, ct: Container, user: str, force: bool) -> Task:
        """The caller checked the lock and (without force) the running state in the call, as PVE does."""
        ct.lock = "destroyed"

        async def work(task: Task) -> None:
            async with self.lock(ct.vmid):
                if force and (await self.ct_state(ct.vmid))[0] == "running":
                    task.log("force-stopping running container")
                    await self.backend.stop(ct.vmid)
                task.log(f"destroying CT {ct.vmid}")
                await self._discard(ct)
                task.log(f"removed volume {self.storages[ct.node].volid(ct.vmid)}")

        return self.tasks.start(ct.node, "vzdestroy", str(ct.vmid), user, work)

    # --- config --------------------------------------------------------------------------------
    async def statuses(self, containers: list[Container]) -> list[tuple[Container, dict[str, Any]]]:
        """status() of many containers at once (one lxc-info each, run concurrently), by vmid."""
        ordered = sorted(containers, key=lambda c: c.vmid)
        return list(zip(ordered, await asyncio.gather(*(self.status(c) for c in ordered)), strict=True))

    # --- status --------------------------------------------------------------------------------
    async def status(self, ct: Container) -> dict[str, Any]:
        state, pid = await self.ct_state(ct.vmid)
        usage = self.backend.usage(ct.vmid) if state == "running" else {"mem": 0, "swap": 0}
        out: dict[str, Any] = {
            "vmid": ct.vmid,
            "name": ct.conf.get("hostname", f"CT{ct.vmid}"),
            "status": state,
            "uptime": _uptime(pid) if pid else 0,
            "cpus": int(ct.conf.get("cores", 0)) or (os.cpu_count() or 1),
            "cpu": 0,
            "maxmem": int(ct.conf.get("memory", 512)) * 1024**2,
            "maxswap": int(ct.conf.get("swap", 512)) * 1024**2,
            "mem": usage["mem"],
            "maxdisk": size_bytes(ct.conf.get("rootfs", "")),
            "disk": 0,
            "netin": 0,
            "netout": 0,
            "diskread": 0,
            "diskwrite": 0,
            "template": 0,
            "ha": {"managed": 0},
        }
        if ct.conf.get("tags"):
            out["tags"] = ct.conf["tags"]
        if ct.lock:
            out["lock"] = ct.lock
        return out


def size_bytes(rootfs: str) -> int:
    for part in rootfs.split(","):
        if part.startswith("size="):
            value = part[5:]
            units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
            if value[-1] in units:
                return int(float(value[:-1]) * units[value[-1]])
            return int(value)
    return 0


def _uptime(pid: int) -> int:
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = float(Path("/proc/uptime").read_text().split()[0])
        return max(0, int(boot - ticks / os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError):
        return 0
