"""/version, /cluster/nextid, /cluster/resources."""

from __future__ import annotations

import os
from typing import Any

from lab.pve.api import Call, route
from lab.pve.auth import CLUSTER_NAME
from lab.pve.errors import ApiError
from lab.pve.schema import ParamError
from lab.pve.storage import STORAGES, content_string


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
        rounds = {}
        for node in {c.node for c in visible}:
            if pve.node_status(node, call.user) == "online":
                rounds[node] = await pve.status_cache.entries(node)
        for ct in sorted(visible, key=lambda c: c.vmid):
            out.append(_guest_entry(ct, rounds.get(ct.node)))
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


def _guest_entry(ct, round_: dict[int, dict[str, Any]] | None) -> dict[str, Any]:
    """PVE/API2Tools.pm extract_vm_stats: id, node and type from the vmlist; status `unknown` until a
    round of the node's pvestatd carried the guest (lab/pve/statuscache.py), then that round's figures;
    `lock` and `tags` from the config itself (PVE::Cluster get_guest_config_properties)."""
    entry: dict[str, Any] = {"id": f"lxc/{ct.vmid}", "vmid": ct.vmid, "node": ct.node, "type": "lxc"}
    if round_ is None:
        # No status from an offline node: PVE lists the guest as `unknown` (from the cluster's vmlist).
        entry.update(status="unknown", name=ct.conf.get("hostname", f"CT{ct.vmid}"), template=0)
    else:
        entry["status"] = "unknown"
        entry.update(round_.get(ct.vmid, {}))
    if ct.conf.get("tags"):
        entry["tags"] = ct.conf["tags"]
    if ct.lock:
        entry["lock"] = ct.lock
    return entry


def _host_memory() -> dict[str, int]:
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    return {"maxmem": info["MemTotal"], "mem": info["MemTotal"] - info.get("MemAvailable", 0)}


@route("GET", "/cluster/status")
async def cluster_status(call: Call) -> list[dict[str, Any]]:
    """pve-manager PVE/API2/Cluster.pm status: the cluster (name, node count, quorum) and each member
    node (its id, whether it answers the call, online, its address, subscription level)."""
    pve = call.pve
    online = [n for n in pve.nodes if pve.node_status(n, call.user) == "online"]
    out: list[dict[str, Any]] = [
        {
            "type": "cluster",
            "id": "cluster",
            "name": CLUSTER_NAME,
            "nodes": len(pve.nodes),
            "version": len(pve.nodes),
            "quorate": int(len(online) * 2 > len(pve.nodes)),
        }
    ]
    for nodeid, node in enumerate(pve.nodes, start=1):
        out.append(
            {
                "type": "node",
                "id": f"node/{node}",
                "name": node,
                "nodeid": nodeid,
                # Both lab nodes are this machine: the first one answers the API.
                "local": int(nodeid == 1),
                "online": int(node in online),
                "ip": "10.87.0.1",
                "level": "",
            }
        )
    return out
