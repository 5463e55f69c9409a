"""A client nobody here wrote, against the emulator: the proxmoxer calls community.proxmox makes (its
plugins/module_utils/proxmox.py and plugins/modules/proxmox.py for LXC, proxmox_storage_info,
proxmox_node_info), in its order, with what real PVE answers them (pve-manager, pve-container,
pve-storage, pve-http-server source).

Why proxmoxer-level calls rather than the collection itself: community.proxmox reaches PVE only through
proxmoxer 2.3.0 (which this suite already installs), so the wire is the same; running the collection
would need the 50 MB `ansible` package in a second environment for no call these do not make.
"""

from __future__ import annotations

import time

import pytest
import requests
from proxmoxer.core import ResourceException
from pve_support import wait_task

pytestmark = pytest.mark.lab
NET0 = "name=eth0,bridge=vmbr0,ip=dhcp"


def hold(lab, vmid: int, seconds: float) -> None:
    requests.post(
        f"https://127.0.0.1:{lab.pve_port}/_lab/status_hold",
        json={"vmids": [vmid, vmid], "seconds": seconds},
        verify=str(lab.ca_path),
        timeout=10,
    ).raise_for_status()


def api_task_ok(px, node: str, taskid: str) -> bool:
    """community.proxmox ProxmoxAnsible.api_task_ok."""
    status = px.nodes(node).tasks(taskid).status.get()
    exitstatus = status.get("exitstatus") or ""
    return status["status"] == "stopped" and (exitstatus == "OK" or exitstatus.startswith("WARN"))


def handle_api_timeout(px, node: str, taskid: str, timeout: int = 120) -> None:
    """community.proxmox's wait: poll the task once a second until it is OK, or fail with its log."""
    while timeout > 0:
        if api_task_ok(px, node, taskid):
            return
        timeout -= 1
        time.sleep(1)
    raise AssertionError(px.nodes(node).tasks(taskid).log.get()[:1])


def get_vmid(px, name: str) -> list[int]:
    """community.proxmox ProxmoxAnsible.get_vmid: by name in /cluster/resources."""
    return [vm["vmid"] for vm in px.cluster.resources.get(type="vm") if vm.get("name") == name]


def test_lxc_lifecycle_as_community_proxmox_drives_it(px, lab, vmid, template_volid):
    node = lab.nodes[0]
    assert px.version.get()["release"]
    assert next(n for n in px.nodes.get() if n["node"] == node)["status"] == "online"
    assert isinstance(px.cluster.nextid.get(), str)
    content = px.nodes(node).storage(lab.pve_storage).content().get(content="vztmpl", vmid=None)
    assert template_volid in [c["volid"] for c in content]

    # Keep the cluster view at its last round for this vmid, which has none yet: what a client sees
    # between the create and the next pvestatd round (PVE/API2Tools.pm extract_vm_stats).
    hold(lab, vmid, 120)
    try:
        taskid = px.nodes(node).lxc.create(
            vmid=vmid,
            ostemplate=template_volid,
            hostname="t-third-party",
            storage="local-lvm",
            net0=NET0,
            description="made by\na third-party client",
        )
        handle_api_timeout(px, node, taskid)
        row = next(r for r in px.cluster.resources.get(type="vm") if r["vmid"] == vmid)
        assert row["status"] == "unknown" and "name" not in row
        assert get_vmid(px, "t-third-party") == []  # a lookup by name misses it until the next round
    finally:
        hold(lab, vmid, 0)

    ct = px.nodes(node).lxc(vmid)
    # update_lxc_instance repeats the path's vmid and node in the body: the same values are no conflict.
    assert ct.config.put(vmid=vmid, node=node, memory=256) is None
    config = ct.config.get()
    assert config["memory"] == 256
    assert config["description"] == "made by\na third-party client\n"  # LXC/Config.pm, a newline per line

    handle_api_timeout(px, node, ct.status.start.post())
    assert ct.status.current.get()["status"] == "running"  # get_lxc_status reads status/current
    handle_api_timeout(px, node, ct.status.shutdown.post(forceStop=1, timeout=30))
    assert ct.status.current.get()["status"] == "stopped"
    taskid = px.nodes(node).lxc.delete(vmid, purge=1, **{"destroy-unreferenced-disks": 1})
    handle_api_timeout(px, node, taskid)
    assert vmid not in [r["vmid"] for r in px.cluster.resources.get(type="vm")]


def test_error_paths_a_third_party_client_meets(px, lab, vmid):
    node = lab.nodes[0]
    with pytest.raises(ResourceException) as err:
        px.nodes("pve9").lxc.get()
    assert err.value.status_code == 500
    lookup = "hostname lookup 'pve9' failed - failed to get address info for: pve9:"
    assert err.value.content.startswith(lookup)

    # A template that is not there: accepted, the task fails (api_task_failed reads status and log).
    volid = "local:vztmpl/debian-13-standard_13.1-1_amd64.tar.zst"
    taskid = px.nodes(node).lxc.create(vmid=vmid, ostemplate=volid, storage="local-lvm", net0=NET0)
    status = wait_task(px.nodes(node), taskid)
    assert status["exitstatus"] == f"unable to create CT {vmid} - volume '{volid}' does not exist"
    assert px.nodes(node).tasks(taskid).log.get()[-1]["t"].startswith("TASK ERROR: unable to create CT")
    assert not api_task_ok(px, node, taskid)

    with pytest.raises(ResourceException) as err:
        px.nodes(node).lxc(vmid).config.put(vmid=vmid + 1, memory=256)
    assert err.value.status_code == 400
    conflict = "duplicate parameter (already defined in URI) with conflicting values!"
    assert err.value.errors == {"vmid": conflict}

    with pytest.raises(ResourceException) as err:
        px.nodes(node).tasks("UPID:nope").status.get()
    assert err.value.errors == {"upid": "unable to parse worker upid"}


def test_the_info_modules_calls(px, lab):
    """proxmox_storage_info (GET /storage, /storage/{id}), proxmox_node_info (GET /nodes), and the
    cluster status and qemu list a playbook reads beside them."""
    storages = px.storage.get(type="dir")
    assert [s["storage"] for s in storages] == [lab.pve_storage]
    assert px.storage(lab.pve_storage).get()["content"] == "backup,iso,vztmpl"
    nodes = px.nodes.get()
    assert {n["node"] for n in nodes} == set(lab.nodes)
    assert all({"id", "type", "maxdisk", "ssl_fingerprint", "uptime"} <= set(n) for n in nodes)
    assert px.cluster.status.get()[0]["type"] == "cluster"
    assert px.nodes(lab.nodes[0]).qemu.get() == []
