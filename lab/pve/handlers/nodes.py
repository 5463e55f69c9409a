"""/nodes and /nodes/{node}/status: both lab nodes report this machine."""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path
from typing import Any

from lab import config
from lab.pve.api import Call, route
from lab.pve.handlers.cluster import _host_memory

_CPUINFO = Path("/proc/cpuinfo").read_text()


def _uptime() -> int:
    with open("/proc/uptime") as fh:
        return int(float(fh.read().split()[0]))


@functools.cache
def ssl_fingerprint() -> str:
    """SHA-256 of the node's certificate, colon-separated (pve-cluster PVE/Cluster.pm
    get_node_fingerprint): both lab nodes serve the lab's one server certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate((config.ca_path().parent / "server.crt").read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


@route("GET", "/nodes")
async def nodes(call: Call) -> list[dict[str, Any]]:
    """pve-manager API2/Nodes.pm index with PVE/API2Tools.pm extract_node_stats: every node, its
    figures only with Sys.Audit on it (and online), and its certificate's fingerprint."""
    out = []
    for node in call.pve.nodes:
        status = call.pve.node_status(node, call.user)
        entry: dict[str, Any] = {"id": f"node/{node}", "node": node, "type": "node", "status": status}
        if call.perms.check(f"/nodes/{node}", ["Sys.Audit"], True):
            st = os.statvfs("/")
            if status == "online":
                entry.update(
                    uptime=_uptime(),
                    cpu=round(os.getloadavg()[0] / (os.cpu_count() or 1), 4),
                    mem=_host_memory()["mem"],
                    disk=(st.f_blocks - st.f_bfree) * st.f_frsize,
                )
            entry.update(
                maxcpu=os.cpu_count() or 1, maxmem=_host_memory()["maxmem"], maxdisk=st.f_blocks * st.f_frsize
            )
        entry["level"] = ""
        entry["ssl_fingerprint"] = ssl_fingerprint()
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
