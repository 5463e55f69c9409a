"""/nodes/{node}/lxc...: list, create, read/update config, status, lifecycle, interfaces, delete."""

from __future__ import annotations

from typing import Any

from lab.pve import ctperms
from lab.pve.api import Call, route
from lab.pve.errors import ApiError
from lab.pve.lxc import validate_ssh_keys
from lab.pve.schema import ParamError

BASE = "/nodes/{node}/lxc/{vmid}"


def _ct(call: Call):
    return call.pve.container(call.params["node"], call.params["vmid"])


@route("GET", "/nodes/{node}/lxc")
async def list_containers(call: Call) -> list[dict[str, Any]]:
    pve = call.pve
    out = []
    visible = [
        c
        for c in pve.state.on_node(call.params["node"])
        if call.perms.check(f"/vms/{c.vmid}", ["VM.Audit"], True)
    ]
    for _ct, st in await pve.statuses(visible):
        st.pop("ha")
        out.append(st)
    return out


@route("GET", "/nodes/{node}/qemu")
async def list_vms(call: Call) -> list[dict[str, Any]]:
    """qemu-server PVE/API2/Qemu.pm vmlist: the lab's nodes run containers only, so no VM is listed."""
    return []


@route("POST", "/nodes/{node}/lxc")
async def create(call: Call) -> str:
    """In API2/LXC.pm create_vm's order: privileged needs Sys.Modify, the vmid must be free, keys must
    parse, then VM.Allocate, the config keys' privileges, the template and the storages."""
    p, pve = call.params, call.pve
    if not p.get("unprivileged", True):
        call.perms.check("/", ["Sys.Modify"])
    pve.check_vmid_unused(p["vmid"])
    if p.get("ssh-public-keys"):
        await validate_ssh_keys(p["ssh-public-keys"])
    ctperms.check_create(call.perms, p)
    pve.storages[p["node"]].check_template_volume(p["ostemplate"], call.perms.is_root)
    pve.check_create_storages(p["node"], p, call.perms)
    return pve.create(p["node"], p, call.user).upid


@route("GET", BASE)
async def index(call: Call) -> list[dict[str, str]]:
    _ct(call)
    subdirs = [
        "config",
        "status",
        "vncproxy",
        "termproxy",
        "vncwebsocket",
        "spiceproxy",
        "migrate",
        "clone",
        "rrd",
        "rrddata",
        "firewall",
        "snapshot",
        "resize",
        "interfaces",
        "pending",
    ]
    return [{"subdir": s} for s in subdirs]


@route("DELETE", BASE)
async def destroy(call: Call) -> str:
    """API2/LXC.pm destroy_vm: the lock and (without force) the running state are checked in the call."""
    pve, ct = call.pve, _ct(call)
    pve.check_unlocked(ct)
    state, _ = await pve.ct_state(ct.vmid)
    if state == "running" and not call.params.get("force"):
        raise ApiError(500, f"unable to destroy CT {ct.vmid} - container is running")
    return pve.destroy(ct, call.user, bool(call.params.get("force"))).upid


@route("GET", BASE + "/config")
async def get_config(call: Call) -> dict[str, Any]:
    if call.params.get("snapshot"):
        raise ApiError(500, f"snapshot '{call.params['snapshot']}' does not exist")
    return call.pve.config_view(_ct(call), current=bool(call.params.get("current")))


@route("PUT", BASE + "/config")
async def put_config(call: Call) -> None:
    pve, ct, p = call.pve, _ct(call), call.params
    pve.check_unlocked(ct)
    new = {k: v for k, v in p.items() if k not in ("node", "vmid", "digest", "delete", "revert")}
    deletes = pve.split_deletes(p)
    old = pve.state.with_pending(ct)
    ctperms.check_modify_config(call.perms, ct.vmid, old, new, deletes, bool(old.get("unprivileged")))
    await pve.update_config(ct, p)
    return None


@route("GET", BASE + "/pending")
async def pending(call: Call) -> list[dict[str, Any]]:
    return call.pve.pending_view(_ct(call))


@route("GET", BASE + "/status")
async def status_index(call: Call) -> list[dict[str, str]]:
    _ct(call)
    return [{"subdir": s} for s in ("current", "start", "stop", "shutdown", "reboot", "suspend", "resume")]


@route("GET", BASE + "/status/current")
async def status_current(call: Call) -> dict[str, Any]:
    return await call.pve.status(_ct(call))


async def _ready(call: Call, state: str):
    """The container in `state`, or PVE's error. (The config lock is checked by the task, not here.)"""
    if call.params.get("skiplock") and not call.perms.is_root:
        raise ParamError({"skiplock": "Only root may use this option."})
    pve, ct = call.pve, _ct(call)
    await pve.require_state(ct, state)
    return pve, ct


@route("POST", BASE + "/status/start")
async def start(call: Call) -> str:
    pve, ct = await _ready(call, "stopped")
    return pve.start(ct, call.user, bool(call.params.get("skiplock"))).upid


@route("POST", BASE + "/status/stop")
async def stop(call: Call) -> str:
    pve, ct = await _ready(call, "running")
    return pve.stop(ct, call.user, bool(call.params.get("skiplock"))).upid


@route("POST", BASE + "/status/shutdown")
async def shutdown(call: Call) -> str:
    pve, ct = await _ready(call, "running")
    timeout = int(call.params.get("timeout", 60))
    return pve.shutdown(ct, call.user, timeout, bool(call.params.get("forceStop"))).upid


@route("POST", BASE + "/status/reboot")
async def reboot(call: Call) -> str:
    pve, ct = await _ready(call, "running")
    return pve.reboot(ct, call.user).upid


@route("GET", BASE + "/interfaces")
async def interfaces(call: Call) -> list[dict[str, Any]]:
    pve, ct = call.pve, _ct(call)
    state, pid = await pve.ct_state(ct.vmid)
    if state != "running" or pid is None:
        raise ApiError(500, f"CT {ct.vmid} not running")
    return await pve.backend.interfaces(pid)
