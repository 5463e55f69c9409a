"""Create + start of a Debian 12 container from the cached template, through the PVE emulator.

Drives the lab's API with proxmoxer (token auth, TLS verified with the lab CA) the way a module does:
POST /nodes/pve1/lxc with start=1, poll the UPID, then wait until the container's sshd answers on its
DHCP address. Prints per-run and median figures; target: create+start < 20 s (printed, not asserted).
Uses vmid 9099 (the lab/pve range) and removes it after each run.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VMID = 9099
TARGET_S = 20.0


def lab_client():
    from proxmoxer import ProxmoxAPI

    from lab import config

    subprocess.run([sys.executable, "-m", "lab", "up"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    pve = config.load()["pve"]
    return ProxmoxAPI(
        "127.0.0.1",
        port=pve["port"],
        user=pve["user"],
        token_name=pve["token_id"],
        token_value=pve["token_secret"],
        backend="https",
        verify_ssl=str(config.ca_path()),
        timeout=30,
    )


def wait_task(node, upid: str) -> dict:
    while (status := node.tasks(upid).status.get())["status"] == "running":
        time.sleep(0.1)
    return status


def wait_ssh(node, vmid: int, limit_s: float = 60) -> float:
    """Seconds until eth0 has an IPv4 address and port 22 accepts a connection."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for iface in node.lxc(vmid).interfaces.get():
            if iface["name"] == "eth0" and iface.get("inet"):
                try:
                    with socket.create_connection((iface["inet"].split("/")[0], 22), timeout=0.5):
                        return time.monotonic()
                except OSError:
                    pass
        time.sleep(0.1)
    raise RuntimeError(f"CT {vmid}: sshd not reachable within {limit_s:.0f}s")


def remove(node, vmid: int) -> None:
    if vmid in [c["vmid"] for c in node.lxc.get()]:
        wait_task(node, node.lxc(vmid).delete(force=1, purge=1))


def one_run(node, template: str) -> tuple[float, float]:
    started = time.monotonic()
    upid = node.lxc.post(
        vmid=VMID,
        ostemplate=template,
        hostname="bench-pve",
        storage="local-lvm",
        memory=256,
        cores=1,
        net0="name=eth0,bridge=vmbr0,ip=dhcp",
        unprivileged=1,
        start=1,
    )
    status = wait_task(node, upid)
    if status["exitstatus"] != "OK":
        raise RuntimeError(f"create failed: {status['exitstatus']}")
    # start=1 runs as its own vzstart task after the create task (as on PVE): wait for it too.
    for task in node.tasks.get(vmid=VMID, typefilter="vzstart"):
        if wait_task(node, task["upid"])["exitstatus"] != "OK":
            raise RuntimeError(f"start failed: {task['upid']}")
    running = time.monotonic()
    ssh_ready = wait_ssh(node, VMID)
    return running - started, ssh_ready - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    px = lab_client()
    node = px.nodes("pve1")
    template = next(
        item["volid"]
        for item in node.storage("local").content.get(content="vztmpl")
        if "debian-12-standard" in item["volid"]
    )
    remove(node, VMID)
    create_start, to_ssh = [], []
    for run in range(1, args.runs + 1):
        try:
            a, b = one_run(node, template)
        finally:
            remove(node, VMID)
        create_start.append(a)
        to_ssh.append(b)
        print(f"run {run}: create+start task {a:5.2f} s   until sshd answers {b:5.2f} s")
    med = statistics.median(create_start)
    print(f"create+start (task OK, container running): median {med:.2f} s  (min {min(create_start):.2f})")
    print(f"create+start until sshd answers on DHCP IP: median {statistics.median(to_ssh):.2f} s")
    verdict = "meets" if med < TARGET_S else "MISSES"
    print(f"target < {TARGET_S:.0f} s: {verdict} the target ({med / TARGET_S:.0%} of the budget)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
