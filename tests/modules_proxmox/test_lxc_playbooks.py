"""proxmox_lxc run by ansible-playbook against the lab's PVE emulator with real LXC containers.

The playbooks under playbooks/ hold the assertions (the way users would write them); these tests run them,
check the recap, and verify independently through proxmoxer that nothing is left behind.
vmids used: 9101 (lifecycle), 9110-9115 (faults).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
OUR_VMIDS = {9101, 9110, 9111, 9112, 9113, 9114, 9115}


@pytest.fixture(scope="module")
def pve(lab):
    return lab.proxmox()


@pytest.fixture(scope="module")
def template(lab, pve):
    node = lab.nodes[0]
    content = pve.nodes(node).storage(lab.pve_storage).content.get(content="vztmpl")
    volids = sorted(c["volid"] for c in content if "debian-12" in c["volid"])
    assert volids, f"the lab has no debian-12 template on {lab.pve_storage}"
    return volids[-1]


@pytest.fixture(scope="module", autouse=True)
def no_leftovers(lab, pve):
    """Whatever a playbook did, our vmids are gone afterwards (the tests check the module removed them)."""
    yield
    for res in pve.cluster.resources.get(type="vm"):
        if res["vmid"] in OUR_VMIDS:
            node, vmid = res["node"], res["vmid"]
            # Its own status: /cluster/resources' can be a status round old.
            if pve.nodes(node).lxc(vmid).status.current.get()["status"] == "running":
                _wait(pve, node, pve.nodes(node).lxc(vmid).status.stop.post())
            _wait(pve, node, pve.nodes(node).lxc(vmid).delete(purge=1))


def _wait(pve, node, upid):
    from proxmoxer.tools import Tasks

    Tasks.blocking_status(pve, upid, timeout=120, polling_interval=0.2)


def run_playbook(name, lab, template, tmp_path):
    """ansible-playbook NAME with the lab's connection in a 0600 vars file; returns the completed process."""
    extra = {
        "pve_host": lab.pve_host,
        "pve_port": lab.pve_port,
        "pve_user": lab.pve_user,
        "pve_password": lab.pve_password,
        "pve_token_id": f"{lab.pve_user}!{lab.pve_token_id}",
        "pve_token_secret": lab.pve_token_secret,
        "pve_ca_path": str(lab.ca_path),
        "pve_node": lab.nodes[0],
        "pve_template": template,
    }
    vars_file = tmp_path / "pve.json"
    vars_file.touch(mode=0o600)
    vars_file.write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), str(PLAYBOOKS / name), "-e", f"@{vars_file}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def recap(proc):
    match = re.search(
        r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout
    )
    assert match, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups()), strict=True))


def test_lifecycle(lab, pve, template, tmp_path):
    proc = run_playbook("lifecycle.yml", lab, template, tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert recap(proc)["failed"] == 0
    assert lab.pve_token_secret not in proc.stdout + proc.stderr
    assert lab.pve_password not in proc.stdout + proc.stderr
    assert 9101 not in {r["vmid"] for r in pve.cluster.resources.get(type="vm")}


def test_faults(lab, pve, template, tmp_path):
    proc = run_playbook("faults.yml", lab, template, tmp_path)
    # The expected failures are ignored inside the playbook; any assert that fails makes the run fail.
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    counts = recap(proc)
    assert counts["failed"] == 0
    assert "ignored=" in proc.stdout
    assert lab.pve_token_secret not in proc.stdout + proc.stderr
    timing = re.search(r"storage-full create failed after [\d.]+ s,.*?\)", proc.stdout, re.S)
    assert timing, proc.stdout[-3000:]
    print(" ".join(timing.group(0).split()))
    left = {r["vmid"] for r in pve.cluster.resources.get(type="vm")} & OUR_VMIDS
    assert not left
