"""/nodes/{node}/lxc...: list, create, read/update config, status, lifecycle, interfaces, delete."""

from __future__ import annotations

from typing import Any

from lab.pve.api import Call, route
from lab.pve.errors import ApiError
from lab.pve.lxc import validate_ssh_keys

BASE = "/nodes/{node}/lxc/{vmid}"


def _ct(call: Call):
    return call.pve.container(call.params["node"], call.params["vmid"])


@route("GET", "/nodes/{node}/lxc")
async def list_containers(call: Call) -> list[dict[str, Any]]:
    pve = call.pve
    out = []
    for _ct, st in await pve.statuses(pve.state.on_node(call.params["node"])):
        st.pop("ha")
        out.append(st)
    return out


@route("POST", "/nodes/{node}/lxc")
async def create(call: Call) -> str:
    if call.params.get("ssh-public-keys"):
        await validate_ssh_keys(call.params["ssh-public-keys"])
    return call.pve.create(call.params["node"], call.params, call.user).upid


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
    pve, ct = call.pve, _ct(call)
    state, _ = await pve.ct_state(ct.vmid)
    if state == "running" and not call.params.get("force"):
        raise ApiError(500, f"CT {ct.vmid} is running - destroy failed")
    return pve.destroy(ct, call.user, bool(call.params.get("force"))).upid


@route("GET", BASE + "/config")
async def get_config(call: Call) -> dict[str, Any]:
    if call.params.get("snapshot"):
        raise ApiError(500, f"snapshot '{call.params['snapshot']}' does not exist")
    return call.pve.config_view(_ct(call), current=bool(call.params.get("current")))


@route("PUT", BASE + "/config")
async def put_config(call: Call) -> None:
    pve, ct = call.pve, _ct(call)
    pve.check_unlocked(ct)
    await pve.update_config(ct, call.params)
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
