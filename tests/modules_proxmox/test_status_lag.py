"""proxmox_lxc against PVE's lagging cluster view: /cluster/resources shows a guest's status as its node's
pvestatd last broadcast it (every 10 s), so right after a start it can still say `stopped`. The lab holds
the container's entry at its last round (/_lab/status_hold) so the lag is there whatever the round's
phase; `state: stopped` must still stop the container. vmid used: 9120.
"""

from __future__ import annotations

import time

import pytest
import requests

from .test_lxc_playbooks import _wait, recap, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.slow]
VMID = 9120


def hold(lab, seconds: float) -> dict:
    r = requests.post(
        f"https://127.0.0.1:{lab.pve_port}/_lab/status_hold",
        json={"vmids": [VMID, VMID], "seconds": seconds},
        verify=str(lab.ca_path),
        timeout=10,
    )
    r.raise_for_status()
    return r.json()


def cluster_row(pve) -> dict:
    return next(r for r in pve.cluster.resources.get(type="vm") if r["vmid"] == VMID)


@pytest.fixture
def stopped_ct(lab):
    pve = lab.proxmox()
    node = pve.nodes(lab.nodes[0])
    content = node.storage(lab.pve_storage).content.get(content="vztmpl")
    template = sorted(c["volid"] for c in content if "debian-12" in c["volid"])[-1]
    _wait(
        pve,
        lab.nodes[0],
        node.lxc.post(
            vmid=VMID,
            ostemplate=template,
            hostname="t-lxc-lag",
            storage="local-lvm",
            net0="name=eth0,bridge=vmbr0,ip=dhcp",
        ),
    )
    try:
        # Wait for a status round that carries it (stopped, named), then keep that entry.
        deadline = time.monotonic() + float(lab.config["pve"].get("status_interval", 10)) + 5
        while cluster_row(pve).get("status") != "stopped":
            assert time.monotonic() < deadline, cluster_row(pve)
            time.sleep(0.5)
        assert VMID in hold(lab, 120)["held"]
        yield pve, node
    finally:
        hold(lab, 0)
        if node.lxc(VMID).status.current.get()["status"] == "running":
            _wait(pve, lab.nodes[0], node.lxc(VMID).status.stop.post())
        _wait(pve, lab.nodes[0], node.lxc(VMID).delete(purge=1))


def test_state_stopped_right_after_a_start_stops_the_container(lab, stopped_ct, tmp_path):
    pve, node = stopped_ct
    _wait(pve, lab.nodes[0], node.lxc(VMID).status.start.post())
    # The lag: the container runs, the cluster's view still says stopped.
    assert node.lxc(VMID).status.current.get()["status"] == "running"
    assert cluster_row(pve)["status"] == "stopped"
    proc = run_playbook("status_lag.yml", lab, "unused", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert recap(proc)["changed"] == 1
    assert lab.pve_token_secret not in proc.stdout + proc.stderr
    assert node.lxc(VMID).status.current.get()["status"] == "stopped"
