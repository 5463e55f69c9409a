"""End to end through proxmoxer: create → start → SSH with the injected key → systemd up → stop →
delete → nothing left (no LXC, no rootfs directory, no DHCP lease)."""

from __future__ import annotations

import subprocess
import time

import pytest
from pve_support import container_ipv4, wait_task

from lab import config, net

pytestmark = [pytest.mark.lab, pytest.mark.slow]


SSH_OPTIONS = [
    *("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
    *("-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"),
]


def ssh(key, ip: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(key), *SSH_OPTIONS, f"root@{ip}", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_systemd(key, ip: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        result = ssh(key, ip, "systemctl is-system-running --wait")
        state = result.stdout.strip()
        if result.returncode in (0, 1) and state in ("running", "degraded"):
            return state
        time.sleep(1)
    raise AssertionError(f"systemd never settled: {state!r}")


def test_container_lifecycle_leaves_nothing_behind(lab, px, vmid, template_volid, ssh_key):
    node = px.nodes(lab.nodes[0])
    pubkey = ssh_key.with_suffix(".pub").read_text()
    upid = node.lxc.post(
        vmid=vmid,
        ostemplate=template_volid,
        hostname="lifecycle",
        storage="local-lvm",
        memory=256,
        swap=128,
        cores=1,
        net0="name=eth0,bridge=vmbr0,ip=dhcp",
        features="nesting=1",
        unprivileged=1,
        tags="lab;pve-test",
        **{"ssh-public-keys": pubkey},
    )
    assert upid.startswith(f"UPID:{lab.nodes[0]}:") and f":vzcreate:{vmid}:" in upid
    status = wait_task(node, upid)
    assert status["exitstatus"] == "OK", node.tasks(upid).log.get()

    lxc_dir = config.lxc_path() / str(vmid)
    assert (lxc_dir / "config").is_file()
    lxc_conf = (lxc_dir / "config").read_text()
    assert "lxc.cgroup.memory.limit_in_bytes = 268435456" in lxc_conf
    assert "lxc.idmap = u 0 100000 65536" in lxc_conf

    assert wait_task(node, node.lxc(vmid).status.start.post())["exitstatus"] == "OK"
    assert node.lxc(vmid).status.current.get()["status"] == "running"
    ip = container_ipv4(node, vmid)
    assert ip.startswith("10.87.0.")

    assert wait_systemd(ssh_key, ip) in ("running", "degraded")
    inside = ssh(ssh_key, ip, "hostname; cat /proc/self/uid_map; command -v python3 || echo no-python")
    host_name, uid_map, python = inside.stdout.split("\n")[:3]
    assert host_name == "lifecycle"
    assert uid_map.split() == ["0", "100000", "65536"]  # really unprivileged
    assert python == "no-python"  # like debian-12-standard: the playbook bootstraps Python
    mac = next(i["hwaddr"] for i in node.lxc(vmid).interfaces.get() if i["name"] == "eth0")
    assert any(lease["mac"] == mac.lower() for lease in net.leases())

    assert wait_task(node, node.lxc(vmid).status.stop.post())["exitstatus"] == "OK"
    assert node.lxc(vmid).status.current.get()["status"] == "stopped"
    assert wait_task(node, node.lxc(vmid).delete(purge=1))["exitstatus"] == "OK"

    assert vmid not in [c["vmid"] for c in node.lxc.get()]
    assert not lxc_dir.exists()
    assert not list((config.state_dir() / "pve" / "storage").glob(f"*/*/images/{vmid}"))
    listed = subprocess.run(["lxc-ls", "-P", str(config.lxc_path())], capture_output=True, text=True)
    assert str(vmid) not in listed.stdout.split()
    assert not any(lease["mac"] == mac.lower() for lease in net.leases())
