"""/nodes and /nodes/{node}/status: both lab nodes report this machine."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from lab.pve.api import Call, route
from lab.pve.handlers.cluster import _host_memory

_CPUINFO = Path("/proc/cpuinfo").read_text()


def _uptime() -> int:
    with open("/proc/uptime") as fh:
        return int(float(fh.read().split()[0]))


@route("GET", "/nodes")
async def nodes(call: Call) -> list[dict[str, Any]]:
    """pve-manager API2/Nodes.pm index: every node, its figures only with Sys.Audit on it (and online)."""
    out = []
    for node in call.pve.nodes:
        entry: dict[str, Any] = {"node": node, "status": call.pve.node_status(node, call.user)}
        if entry["status"] == "online" and call.perms.check(f"/nodes/{node}", ["Sys.Audit"], True):
            entry.update(
                cpu=round(os.getloadavg()[0] / (os.cpu_count() or 1), 4),
                maxcpu=os.cpu_count() or 1,
                uptime=_uptime(),
                level="",
                **_host_memory(),
            )
        out.append(entry)
    return out


@route("GET", "/nodes/{node}/status")
async def node_status(call: Call) -> dict[str, Any]:
    mem = _host_memory()
    st = os.statvfs("/")
    uname = platform.uname()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in _CPUINFO.splitlines() if ln.startswith("model name")),
        "unknown",
    )
    ncpu = os.cpu_count() or 1
    cfg = call.pve.cfg
    return {
        "uptime": _uptime(),
        "time": int(time.time()),
        "cpu": round(os.getloadavg()[0] / ncpu, 4),
        "loadavg": [f"{x:.2f}" for x in os.getloadavg()],
        "cpuinfo": {"cores": ncpu, "cpus": ncpu, "sockets": 1, "model": model},
        "memory": {
            "total": mem["maxmem"],
            "used": mem["mem"],
            "free": mem["maxmem"] - mem["mem"],
            "available": mem["maxmem"] - mem["mem"],
        },
        "rootfs": {
            "total": st.f_blocks * st.f_frsize,
            "free": st.f_bfree * st.f_frsize,
            "avail": st.f_bavail * st.f_frsize,
            "used": (st.f_blocks - st.f_bfree) * st.f_frsize,
        },
        "boot-info": {"mode": "legacy-bios"},
        "current-kernel": {
            "sysname": uname.system,
            "release": uname.release,
            "version": uname.version,
            "machine": uname.machine,
        },
        "kversion": f"{uname.system} {uname.release} {uname.version}",
        "pveversion": f"pve-manager/{cfg.get('version', '9.1.1')}/{cfg['repoid']}",
    }
