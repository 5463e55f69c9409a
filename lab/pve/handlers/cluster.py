"""/version, /cluster/nextid, /cluster/resources."""

from __future__ import annotations

import os
from typing import Any

from lab.pve.api import Call, route
from lab.pve.errors import ApiError
from lab.pve.schema import ParamError
from lab.pve.storage import STORAGES, content_string

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
        # pve-manager API2/Cluster.pm resources: guests without VM.Audit are left out, nodes without
        # Sys.Audit are listed without their figures, storages without Datastore.Audit are left out.
        visible = [
            c for c in pve.state.containers.values() if call.perms.check(f"/vms/{c.vmid}", ["VM.Audit"], True)
        ]
        online = [c for c in visible if pve.node_status(c.node, call.user) == "online"]
        for ct in sorted((c for c in visible if c not in online), key=lambda c: c.vmid):
            # No status from an offline node: PVE lists the guest as `unknown` (from the cluster's vmlist).
            name = ct.conf.get("hostname", f"CT{ct.vmid}")
            out.append(
                {"id": f"lxc/{ct.vmid}", "type": "lxc", "node": ct.node, "vmid": ct.vmid, "name": name}
                | {"status": "unknown", "template": 0}
            )
        for ct, st in await pve.statuses(online):
            entry = {"id": f"lxc/{ct.vmid}", "type": "lxc", "node": ct.node, "maxcpu": st["cpus"]}
            entry.update({k: st[k] for k in RESOURCE_KEYS if k in st})
            out.append(entry)
    if kind in (None, "node"):
        for node in pve.nodes:
            entry = {
                "id": f"node/{node}",
                "type": "node",
                "node": node,
                "status": pve.node_status(node, call.user),
            }
            if call.perms.check(f"/nodes/{node}", ["Sys.Audit"], True) and entry["status"] == "online":
                stats = {"maxcpu": os.cpu_count() or 1, "cpu": 0, "level": "", **_host_memory()}
                entry.update(stats)
            entry["cgroup-mode"] = 1
            out.append(entry)
    if kind in (None, "storage"):
        for sid, (plugintype, _content) in STORAGES.items():
            if not call.perms.check(f"/storage/{sid}", ["Datastore.Audit"], True):
                continue
            for node, store in pve.storages.items():
                use = store.usage()
                out.append(
                    {
                        "id": f"storage/{node}/{sid}",
                        "type": "storage",
                        "storage": sid,
                        "node": node,
                        "status": "available" if pve.node_status(node, call.user) == "online" else "unknown",
                        "plugintype": plugintype,
                        "content": content_string(sid),
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
