"""`lab up` from a fresh state and `lab down` leaving nothing, in a private network + mount namespace.

The shared lab stays untouched: the bridge, NAT rules, dnsmasq and the daemon's ports live in their own
network namespace, /etc/hosts is a private bind mount, and the state dir is a temporary one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
VMID = 9096

CREATE = f"""
import json, sys, time
sys.path.insert(0, {str(REPO / "tests")!r})
from conftest import Lab
from lab import config
px = Lab(config.load()).proxmox()
node = px.nodes("pve1")
volid = node.storage("local").content.get(content="vztmpl")[0]["volid"]
upid = node.lxc.post(
    vmid={VMID}, ostemplate=volid, storage="local-lvm", net0="name=eth0,bridge=vmbr0,ip=dhcp", start=1
)
while (st := node.tasks(upid).status.get())["status"] == "running":
    time.sleep(0.2)
print("CREATE", json.dumps(st))
"""

SCRIPT = f"""
set -u
ip link set lo up
cp /etc/hosts "$STATE.hosts" && mount --bind "$STATE.hosts" /etc/hosts
cd {str(REPO)!r}
{sys.executable} -m lab up >/dev/null && echo UP1 ok
{sys.executable} -m lab up >/dev/null && echo UP2 ok
{sys.executable} -c "$CREATE"
{sys.executable} -m lab down >/dev/null && echo DOWN1 ok
{sys.executable} -m lab down >/dev/null && echo DOWN2 ok
echo LINKS $(ip -br link | awk '{{print $1}}' | tr '\\n' ' ')
echo RULES $(iptables-save | grep -c llm-relay-lab)
echo DNSMASQ $(pgrep -f "dnsmasq.*$STATE" | wc -l)
echo LXC $(ls "$STATE/lxc" | wc -l)
echo VOLUMES $(ls "$STATE/pve/storage" 2>/dev/null | wc -l)
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_fresh_up_then_down_leaves_nothing(lab):
    # `lab` (the shared lab, outside the namespace) has built the template; the namespace has no
    # network to build one.
    # Unprivileged containers need a rootfs path their mapped root can traverse (pytest's tmp is 0700).
    base = Path(tempfile.mkdtemp(prefix="lab-fresh-"))
    base.chmod(0o755)
    try:
        _up_create_down(base / "state")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _up_create_down(state: Path) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LAB_STATE_DIR": str(state), "STATE": str(state)}
    env["CREATE"] = CREATE
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "bash", "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    detail = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    assert out.get("UP1") == "ok" and out.get("UP2") == "ok", detail
    created = json.loads(out["CREATE"])
    assert created["exitstatus"] == "OK", detail
    assert out.get("DOWN1") == "ok" and out.get("DOWN2") == "ok", detail
    assert out["LINKS"].split() == ["lo"], detail  # vmbr0 and the container's veth are gone
    assert out["RULES"].strip() == "0", detail
    assert out["DNSMASQ"].strip() == "0", detail
    assert out["LXC"].strip() == "0", detail
    assert out["VOLUMES"].strip() == "0", detail
    assert not (state / "lab.pid").exists()
