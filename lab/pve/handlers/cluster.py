"""/version, /cluster/nextid, /cluster/resources."""

from __future__ import annotations

import os
from typing import Any

from lab.pve.api import Call, route
from lab.pve.errors import ApiError
from lab.pve.schema import ParamError

# What a container's cluster/resources entry shares with its status/current.
RESOURCE_KEYS = (
    "vmid",
    "name",
    "status",
    "uptime",
    "cpu",
    "maxmem",
    "mem",
    "maxdisk",
    "disk",
    "netin",
    "netout",
)
RESOURCE_KEYS += ("diskread", "diskwrite", "template", "tags", "lock")


@route("GET", "/version")
async def version(call: Call) -> dict[str, Any]:
    cfg = call.pve.cfg
    return {
        "version": cfg.get("version", "9.1.1"),
        "release": cfg.get("release", "9.1"),
        "repoid": cfg["repoid"],
    }


@route("GET", "/cluster/nextid")
async def nextid(call: Call) -> str:
    taken = call.pve.state.containers
    wanted = call.params.get("vmid")
    if wanted is not None:
        if wanted in taken:
            raise ParamError({"vmid": f"VM {wanted} already exists"})
        return str(wanted)
    vmid = 100
    while vmid in taken:
        vmid += 1
    if vmid > 999999999:
        raise ApiError(500, "unable to get any free VMID in range [100, 999999999]")
    return str(vmid)


@route("GET", "/cluster/resources")
async def resources(call: Call) -> list[dict[str, Any]]:
    pve, kind = call.pve, call.params.get("type")
    out: list[dict[str, Any]] = []
    if kind in (None, "vm"):
        for ct, st in await pve.statuses(list(pve.state.containers.values())):
            entry = {"id": f"lxc/{ct.vmid}", "type": "lxc", "node": ct.node, "maxcpu": st["cpus"]}
            entry.update({k: st[k] for k in RESOURCE_KEYS if k in st})
            out.append(entry)
    if kind in (None, "node"):
        for node in pve.nodes:
            out.append(
                {
                    "id": f"node/{node}",
                    "type": "node",
                    "node": node,
                    "status": "online",
                    "maxcpu": os.cpu_count() or 1,
                    "cpu": 0,
                    "level": "",
                    "cgroup-mode": 1,
                    **_host_memory(),
                }
            )
    if kind in (None, "storage"):
        for node, store in pve.storages.items():
            use = store.usage()
            out.append(
                {
                    "id": f"storage/{node}/{store.id}",
                    "type": "storage",
                    "storage": store.id,
                    "node": node,
                    "status": "available",
                    "plugintype": "dir",
                    "content": "vztmpl,rootdir,iso,backup,images",
                    "shared": 0,
                    "maxdisk": use["total"],
                    "disk": use["used"],
                }
            )
    return out


def _host_memory() -> dict[str, int]:
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    return {"maxmem": info["MemTotal"], "mem": info["MemTotal"] - info.get("MemAvailable", 0)}
