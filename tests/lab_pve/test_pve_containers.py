"""Container endpoints on one shared running container: list, config GET/PUT (digest, delete),
status, interfaces, shutdown/reboot, and how it shows in storage and cluster resources."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests
from proxmoxer.core import ResourceException
from pve_support import check_keys, container_ipv4, destroy, free_vmid, schema_keys, wait_idle, wait_task

from lab import config

pytestmark = pytest.mark.lab
BASE = "/nodes/{node}/lxc/{vmid}"


@pytest.fixture(scope="module")
def ct(px, lab, template_volid):
    """A running container on the second node (multi-node placement), destroyed at the end."""
    vmid = free_vmid(px)
    node = px.nodes(lab.nodes[1])
    try:  # cleanup even when setup fails half-way (the create may have gone through)
        upid = node.lxc.post(
            vmid=vmid,
            ostemplate=template_volid,
            hostname="shared-ct",
            net0="name=eth0,bridge=vmbr0,ip=10.87.0.250/24,gw=10.87.0.1",
            rootfs="local-lvm:2",
            memory=192,
            cores=1,
            onboot=1,
            tags="alpha;beta",
            password="lab-ct-pass",
            start=1,
        )
        status = wait_task(node, upid)
        assert status["exitstatus"] == "OK", node.tasks(upid).log.get()
        wait_idle(node, vmid)  # start=1 runs as a separate vzstart task, as on PVE
        yield node, vmid
    finally:
        destroy(px, vmid)


def test_create_with_start_runs_it_on_the_requested_node(ct, px, lab):
    node, vmid = ct
    assert node.lxc(vmid).status.current.get()["status"] == "running"
    kinds = [t["type"] for t in node.tasks.get(vmid=vmid)]
    assert "vzcreate" in kinds and "vzstart" in kinds
    assert vmid in [c["vmid"] for c in px.nodes(lab.nodes[1]).lxc.get()]
    assert vmid not in [c["vmid"] for c in px.nodes(lab.nodes[0]).lxc.get()]


def test_list_keys(ct):
    node, vmid = ct
    rows = node.lxc.get()
    for row in rows:
        required, known = schema_keys("/nodes/{node}/lxc")
        assert required <= set(row) and set(row) <= known
    row = next(r for r in rows if r["vmid"] == vmid)
    assert row["name"] == "shared-ct" and row["maxmem"] == 192 * 1024**2 and row["tags"] == "alpha;beta"


def test_index_and_status_current(ct):
    node, vmid = ct
    assert {"subdir": "config"} in node.lxc(vmid).get()
    current = node.lxc(vmid).status.current.get()
    check_keys(BASE + "/status/current", current)
    assert current["vmid"] == vmid and current["uptime"] >= 0 and current["mem"] > 0
    assert current["ha"] == {"managed": 0}


def test_config_get_is_pve_shaped(ct):
    node, vmid = ct
    conf = node.lxc(vmid).config.get()
    check_keys(BASE + "/config", conf)
    assert conf["hostname"] == "shared-ct" and conf["memory"] == 192 and conf["cores"] == 1
    assert conf["unprivileged"] == 1 and conf["onboot"] == 1 and conf["arch"] == "amd64"
    assert conf["rootfs"] == f"local-lvm:vm-{vmid}-disk-0,size=2G"
    assert conf["net0"].startswith("name=eth0,bridge=vmbr0,gw=10.87.0.1,hwaddr=BC:24:11:")
    assert conf["net0"].endswith(",ip=10.87.0.250/24,type=veth")
    assert "password" not in conf and len(conf["digest"]) == 40


def test_limits_are_real_cgroup_settings(ct):
    _, vmid = ct
    lxc_conf = (config.lxc_path() / str(vmid) / "config").read_text()
    assert "lxc.cgroup.memory.limit_in_bytes = 201326592" in lxc_conf
    assert "lxc.cgroup.cpuset.cpus = 0-0" in lxc_conf
    assert "lxc.start.auto = 1" in lxc_conf


def test_interfaces_report_the_static_address(ct):
    node, vmid = ct
    assert container_ipv4(node, vmid) == "10.87.0.250"  # waits for ifupdown inside
    ifaces = node.lxc(vmid).interfaces.get()
    for iface in ifaces:
        check_keys(BASE + "/interfaces", iface)
    eth0 = next(i for i in ifaces if i["name"] == "eth0")
    assert eth0["inet"] == "10.87.0.250/24"
    assert {"ip-address": "10.87.0.250", "ip-address-type": "inet", "prefix": 24} in eth0["ip-addresses"]


def test_config_put_sets_and_deletes_with_digest(ct):
    node, vmid = ct
    before = node.lxc(vmid).config.get()
    assert node.lxc(vmid).config.put(description="lab note", tags="alpha", digest=before["digest"]) is None
    after = node.lxc(vmid).config.get()
    # pve-container LXC/Config.pm gives each description line back with its newline.
    assert after["description"] == "lab note\n" and after["tags"] == "alpha"
    assert after["digest"] != before["digest"]
    node.lxc(vmid).config.put(delete="description")
    assert "description" not in node.lxc(vmid).config.get()


def test_config_put_cannot_set_and_delete_one_option(ct):
    node, vmid = ct
    with pytest.raises(ResourceException) as err:
        node.lxc(vmid).config.put(description="x", delete="description")
    assert err.value.status_code == 400 and "delete" in err.value.errors


def test_config_put_with_stale_digest_is_refused(ct):
    node, vmid = ct
    stale = node.lxc(vmid).config.get()["digest"]
    node.lxc(vmid).config.put(description="changed by someone else")
    with pytest.raises(ResourceException) as err:
        node.lxc(vmid).config.put(description="mine", digest=stale)
    assert err.value.status_code == 500
    assert "detected modified configuration" in err.value.content


def test_config_put_keeps_the_mac_of_an_existing_nic(ct):
    node, vmid = ct
    old = node.lxc(vmid).config.get()["net0"]
    node.lxc(vmid).config.put(net0="name=eth0,bridge=vmbr0,ip=10.87.0.250/24,gw=10.87.0.1,firewall=1")
    new = node.lxc(vmid).config.get()["net0"]
    hwaddr = next(p for p in old.split(",") if p.startswith("hwaddr="))
    assert hwaddr in new and "firewall=1" in new


@pytest.mark.parametrize("param", ["password", "ssh-public-keys"])
def test_config_put_refuses_create_only_params(ct, param):
    node, vmid = ct
    with pytest.raises(ResourceException) as err:
        node.lxc(vmid).config.put(**{param: "secret-value-123"})
    assert err.value.status_code == 400
    assert err.value.errors == {
        param: "property is not defined in schema and the schema does not allow additional properties"
    }


def test_start_of_a_running_container_is_refused(ct):
    node, vmid = ct
    with pytest.raises(ResourceException) as err:
        node.lxc(vmid).status.start.post()
    assert err.value.status_code == 500 and "already running" in err.value.content


def test_delete_of_a_running_container_needs_force(ct):
    node, vmid = ct
    with pytest.raises(ResourceException) as err:
        node.lxc(vmid).delete()
    assert err.value.status_code == 500
    assert err.value.content == f"unable to destroy CT {vmid} - container is running"


def test_rootdir_volume_in_storage_content(ct, lab):
    node, vmid = ct
    rows = node.storage("local-lvm").content.get(content="rootdir", vmid=vmid)
    assert [r["volid"] for r in rows] == [f"local-lvm:vm-{vmid}-disk-0"]
    assert rows[0]["size"] == 2 * 1024**3  # the thin volume's size (rootfs local-lvm:2)
    assert node.storage(lab.pve_storage).content.get(content="rootdir", vmid=vmid) == []


def test_cluster_resources_place_it_on_its_node(ct, px, lab):
    _, vmid = ct
    row = next(r for r in px.cluster.resources.get(type="vm") if r["vmid"] == vmid)
    assert row["node"] == lab.nodes[1]
    # The status is the node's last status round's (lab/pve/statuscache.py): running by the next one.
    deadline = time.monotonic() + float(lab.config["pve"].get("status_interval", 10)) + 5
    while row["status"] != "running":
        assert time.monotonic() < deadline, row
        time.sleep(0.5)
        row = next(r for r in px.cluster.resources.get(type="vm") if r["vmid"] == vmid)
    assert row["name"]


def test_nextid_refuses_a_taken_vmid(ct, px):
    _, vmid = ct
    with pytest.raises(ResourceException) as err:
        px.cluster.nextid.get(vmid=vmid)
    assert err.value.status_code == 400
    assert err.value.errors == {"vmid": f"VM {vmid} already exists"}


def lxc_cgroup(vmid: int, key: str) -> str:
    argv = ["lxc-cgroup", "-P", str(config.lxc_path()), "-n", str(vmid), key]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_running_container_hotplugs_limits_and_keeps_the_rest_pending(ct):
    node, vmid = ct
    node.lxc(vmid).config.put(hostname="renamed-ct", memory=224, description="fast")
    assert lxc_cgroup(vmid, "memory.limit_in_bytes") == str(224 * 1024**2)  # applied live
    pending = {item["key"]: item for item in node.lxc(vmid).pending.get()}
    for item in pending.values():
        assert set(item) <= {"key", "value", "pending", "delete"}
    assert pending["hostname"] == {"key": "hostname", "value": "shared-ct", "pending": "renamed-ct"}
    assert "pending" not in pending["memory"] and pending["memory"]["value"] == 224
    assert node.lxc(vmid).config.get()["hostname"] == "renamed-ct"  # default view: pending applied
    assert node.lxc(vmid).config.get(current=1)["hostname"] == "shared-ct"
    assert wait_task(node, node.lxc(vmid).status.reboot.post())["exitstatus"] == "OK"
    assert not [i for i in node.lxc(vmid).pending.get() if "pending" in i or "delete" in i]
    assert node.lxc(vmid).config.get(current=1)["hostname"] == "renamed-ct"
    attach = ["lxc-attach", "-P", str(config.lxc_path()), "-n", str(vmid), "--", "hostname"]
    assert subprocess.run(attach, capture_output=True, text=True, check=True).stdout.strip() == "renamed-ct"


def test_a_config_lock_fails_tasks_not_calls_and_only_pct_unlock_lifts_it(ct, lab):
    """As PVE: `lock` set through PUT config locks the CT; config changes are then refused in the call
    (HTTP 500), power actions are accepted and their *task* fails; the API cannot unlock (PUT config is
    refused too), the node's `pct unlock` (lab control) can."""
    node, vmid = ct
    node.lxc(vmid).config.put(lock="backup")
    try:
        assert node.lxc(vmid).config.get()["lock"] == "backup"
        for change in ({"description": "during a backup"}, {"delete": "lock"}):
            with pytest.raises(ResourceException) as err:
                node.lxc(vmid).config.put(**change)
            assert err.value.status_code == 500 and "CT is locked (backup)" in err.value.content
        upid = node.lxc(vmid).status.reboot.post()
        assert wait_task(node, upid)["exitstatus"] == "CT is locked (backup)"
        assert node.lxc(vmid).status.current.get()["status"] == "running"
    finally:
        unlocked = requests.post(
            f"https://127.0.0.1:{lab.pve_port}/_lab/unlock",
            json={"vmid": vmid},
            verify=str(lab.ca_path),
            timeout=10,
        )
    assert unlocked.json() == {"vmid": vmid, "was": "backup"}
    assert "lock" not in node.lxc(vmid).config.get()


def test_reboot_then_shutdown(ct):
    node, vmid = ct
    assert wait_task(node, node.lxc(vmid).status.reboot.post())["exitstatus"] == "OK"
    assert node.lxc(vmid).status.current.get()["status"] == "running"
    upid = node.lxc(vmid).status.shutdown.post(timeout=30, forceStop=1)
    assert ":vzshutdown:" in upid
    assert wait_task(node, upid)["exitstatus"] == "OK"
    assert node.lxc(vmid).status.current.get()["status"] == "stopped"
    with pytest.raises(ResourceException) as err:
        node.lxc(vmid).status.stop.post()
    assert "not running" in err.value.content
