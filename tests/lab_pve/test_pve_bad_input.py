"""Bad input gets PVE's status code and error shape; nothing is left half-made."""

from __future__ import annotations

import pytest
import requests
from proxmoxer.core import ResourceException
from pve_support import wait_task

pytestmark = pytest.mark.lab
UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"


def create_args(vmid: int, template: str, **extra) -> dict:
    base = {
        "vmid": vmid,
        "ostemplate": template,
        "storage": "local-lvm",
        "net0": "name=eth0,bridge=vmbr0,ip=dhcp",
    }
    return {**base, **extra}


def refused(call, **params) -> ResourceException:
    with pytest.raises(ResourceException) as err:
        call(**params)
    return err.value


@pytest.mark.parametrize(
    ("param", "value", "fragment"),
    [
        ("net0", "name=eth0,bridge=vmbr0,ip=300.1.1.1/24", "net0.ip: invalid format"),
        ("net0", "bridge=vmbr0,ip=dhcp", "net0.name: property is missing"),
        ("net0", "name=eth0,bridge=vmbr0,colour=blue", f"net0.colour: {UNKNOWN}"),
        ("net0", "name=eth0,hwaddr=01:00:00:00:00:01", "net0.hwaddr: invalid format"),
        ("net0", "name=eth0,tag=5000", "net0.tag: value must have a maximum value of 4094"),
        ("rootfs", "local:8,size=big", "rootfs.size: invalid format"),
        ("rootfs", "local:8,quota=maybe", "rootfs.quota: type check ('boolean') failed"),
        ("rootfs", "local:8,local:9", "invalid format"),
        ("features", "nesting=2", "features.nesting: type check ('boolean') failed"),
        ("features", "nesting=1,teleport=1", f"features.teleport: {UNKNOWN}"),
        ("hostname", "bad_host!", "invalid format - value does not look like a valid DNS name"),
        ("memory", "8", "value must have a minimum value of 16"),
        ("cores", "two", "type check ('integer') failed - got 'two'"),
        ("tags", "ok;not ok!", "invalid format"),
        ("net32", "name=eth0", UNKNOWN),
        ("bogus", "1", UNKNOWN),
    ],
)
def test_create_refuses_malformed_params(node, vmid, template_volid, param, value, fragment):
    err = refused(node.lxc.post, **create_args(vmid, template_volid, **{param: value}))
    assert err.status_code == 400
    assert err.status_message == "Bad Request"
    assert list(err.errors) == [param]
    assert fragment in err.errors[param]
    assert vmid not in [c["vmid"] for c in node.lxc.get()]


def test_error_body_is_pve_shaped(lab, api, vmid, template_volid):
    header = {"Authorization": f"PVEAPIToken={lab.pve_user}!{lab.pve_token_id}={lab.pve_token_secret}"}
    r = api.post(
        f"{lab.pve_url}/nodes/{lab.nodes[0]}/lxc",
        headers=header,
        data=create_args(vmid, template_volid, net0="name=eth0,ip=dhcp4"),
    )
    assert r.status_code == 400
    assert r.reason == "Parameter verification failed."
    body = r.json()
    # pve-http-server Formatter/Standard.pm: every JSON error carries `message`.
    assert body["data"] is None and set(body) == {"errors", "data", "message"}
    assert body["message"] == "Parameter verification failed.\n"
    assert body["errors"]["net0"].startswith("invalid format")


def test_missing_required_params(node):
    err = refused(node.lxc.post, hostname="x")
    assert err.status_code == 400
    assert err.errors == {
        "vmid": "property is missing and it is not optional",
        "ostemplate": "property is missing and it is not optional",
    }


def test_vmid_out_of_range(node, template_volid):
    err = refused(node.lxc.post, **create_args(99, template_volid))
    assert err.errors == {"vmid": "value must have a minimum value of 100"}


LOOKUP = "hostname lookup '{0}' failed - failed to get address info for: {0}: Name or service not known"


def test_unknown_node_is_refused(px, lab, vmid, template_volid):
    """pve-manager PVE/HTTPServer.pm: the call is sent to its node first, whose address does not resolve."""
    err = refused(px.nodes("pve9").lxc.post, **create_args(vmid, template_volid))
    assert (err.status_code, err.content) == (500, LOOKUP.format("pve9"))
    assert refused(px.nodes("pve9").status.get).status_code == 500
    # Before the parameters are checked (the node that would check them cannot be reached).
    err = refused(px.nodes("pve9").lxc.post, vmid=vmid, bogus=1)
    assert (err.status_code, err.content) == (500, LOOKUP.format("pve9"))


def test_unknown_node_error_body(lab, api):
    header = {"Authorization": f"PVEAPIToken={lab.pve_user}!{lab.pve_token_id}={lab.pve_token_secret}"}
    r = api.get(f"{lab.pve_url}/nodes/pve9/lxc", headers=header)
    assert r.status_code == 500
    assert r.json() == {"data": None, "message": LOOKUP.format("pve9") + "\n"}


def test_malformed_node_name_is_looked_up_too(px):
    err = refused(px.nodes("bad_node").lxc.get)
    assert (err.status_code, err.content) == (500, LOOKUP.format("bad_node"))


def test_duplicate_vmid_is_refused(px, lab, vmid, template_volid):
    first = px.nodes(lab.nodes[0])
    assert wait_task(first, first.lxc.post(**create_args(vmid, template_volid)))["exitstatus"] == "OK"
    # vmids are unique cluster-wide: the other node refuses it too.
    for name in lab.nodes:
        err = refused(px.nodes(name).lxc.post, **create_args(vmid, template_volid))
        assert err.status_code == 500
        assert f"CT {vmid} already exists on node '{lab.nodes[0]}'" in err.content


def test_malformed_ssh_key_is_refused_before_anything_is_made(node, vmid, template_volid):
    err = refused(
        node.lxc.post, **create_args(vmid, template_volid, **{"ssh-public-keys": "ssh-ed25519 AAAAnope"})
    )
    assert err.status_code == 500 and err.content == "SSH public key validation error"
    assert vmid not in [c["vmid"] for c in node.lxc.get()]


def test_missing_template_fails_the_create_task(node, vmid):
    """pve-container API2/LXC.pm create_vm checks the volume id in the call; that the file is missing
    only the create task finds out."""
    volid = "local:vztmpl/nope_1.0_amd64.tar.zst"
    status = wait_task(node, node.lxc.post(**create_args(vmid, volid)))
    assert status["exitstatus"] == f"unable to create CT {vmid} - volume '{volid}' does not exist"
    assert vmid not in [c["vmid"] for c in node.lxc.get()]


@pytest.mark.parametrize(
    ("ostemplate", "message"),
    [
        ("tank:vztmpl/x.tar.zst", "storage 'tank' does not exist"),
        ("local:iso/x.iso", "unable to use volume local:iso/x.iso - content type needs to be 'vztmpl'"),
        ("local:nope/x", "unable to parse directory volume name 'nope/x'"),
    ],
)
def test_unusable_template_volume_is_refused_in_the_call(node, vmid, ostemplate, message):
    err = refused(node.lxc.post, **create_args(vmid, ostemplate))
    assert (err.status_code, err.content) == (500, message)
    assert vmid not in [c["vmid"] for c in node.lxc.get()]


@pytest.mark.parametrize("where", [{"storage": "local"}, {"rootfs": "local:2"}])
def test_a_root_disk_on_the_template_storage_is_refused(node, vmid, template_volid, where):
    """API2/LXC.pm create_vm: a storage without content `rootdir` (a fresh install's `local`) is a 400."""
    err = refused(node.lxc.post, **create_args(vmid, template_volid, **where))
    assert err.status_code == 400
    assert err.errors == {"storage": "storage 'local' does not support container directories"}
    assert vmid not in [c["vmid"] for c in node.lxc.get()]


def test_non_latin_input_in_an_error_message(lab, api, vmid):
    header = {"Authorization": f"PVEAPIToken={lab.pve_user}!{lab.pve_token_id}={lab.pve_token_secret}"}
    data = create_args(vmid, "local:iso/日本-12.iso")
    r = api.post(f"{lab.pve_url}/nodes/{lab.nodes[0]}/lxc", headers=header, data=data)
    assert r.status_code == 500
    message = "unable to use volume local:iso/日本-12.iso - content type needs to be 'vztmpl'\n"
    assert r.json() == {"data": None, "message": message}


def test_unknown_query_parameter_on_a_read(px):
    err = refused(px.nodes.get, full=1)
    assert err.status_code == 400 and err.errors == {"full": UNKNOWN}


def test_missing_container_is_500(node):
    err = refused(node.lxc(9097).status.current.get)
    assert err.status_code == 500
    assert "does not exist" in err.content


def test_the_qemu_list_is_empty(node):
    assert node.qemu.get() == []


def test_an_unemulated_path_is_501_with_pves_text(lab, api):
    header = {"Authorization": f"PVEAPIToken={lab.pve_user}!{lab.pve_token_id}={lab.pve_token_secret}"}
    r = api.get(f"{lab.pve_url}/nodes/{lab.nodes[0]}/lxc/9099/snapshot", headers=header)
    # pve-manager PVE/HTTPServer.pm rest_handler: the path relative to /api2/json.
    text = f"Method 'GET /nodes/{lab.nodes[0]}/lxc/9099/snapshot' not implemented"
    assert (r.status_code, r.reason) == (501, text)
    assert r.json() == {"data": None, "message": text}


def test_bad_upid(node):
    err = refused(node.tasks("UPID:nonsense").status.get)
    assert (err.status_code, err.errors) == (400, {"upid": "unable to parse worker upid"})
    unknown = "UPID:pve1:00001234:00005678:6B000000:vzstart:9099:root@pam:"
    err = refused(node.tasks(unknown).status.get)
    assert (err.status_code, err.errors) == (400, {"upid": "no such task"})


def test_a_path_parameter_repeated_with_another_value_is_refused(node, lab, api):
    """pve-manager PVE/HTTPServer.pm rest_handler, before the permission check and any lookup."""
    header = {"Authorization": f"PVEAPIToken={lab.pve_user}!{lab.pve_token_id}={lab.pve_token_secret}"}
    url = f"{lab.pve_url}/nodes/{lab.nodes[0]}/lxc/9098/config"
    for key, value in (("vmid", "9097"), ("node", "pve2" if lab.nodes[0] != "pve2" else "pve1")):
        r = api.put(url, headers=header, data={key: value, "memory": 256})
        assert r.status_code == 400
        assert r.json()["errors"] == {
            key: "duplicate parameter (already defined in URI) with conflicting values!"
        }
    # The same value is no conflict: the call goes on (and finds no CT 9098).
    assert api.put(url, headers=header, data={"vmid": "9098", "memory": 256}).status_code == 500


def faults_url(lab) -> str:
    return f"https://127.0.0.1:{lab.pve_port}/_lab/faults"


def set_faults(lab, **faults) -> dict:
    r = requests.post(faults_url(lab), json=faults, verify=str(lab.ca_path), timeout=10)
    r.raise_for_status()
    return r.json()["faults"]


# Faults are scoped to this suite's vmids (and to downloads), so other suites running now are not hit.
OUR_VMIDS = {"vmids": "9000-9099", "tasks": ["vzcreate"]}
DOWNLOADS = {"tasks": ["download"]}


@pytest.fixture
def storage_full(lab):
    faults = set_faults(lab, storage_full=True, **OUR_VMIDS)
    assert {"vmids": [9000, 9099], "tasks": ["vzcreate"]} in faults["storage_full"]
    yield
    set_faults(lab, storage_full=False, **OUR_VMIDS)


@pytest.fixture
def downloads_fail(lab):
    set_faults(lab, storage_full=True, **DOWNLOADS)
    yield
    set_faults(lab, storage_full=False, **DOWNLOADS)


def test_storage_full_fails_the_create_task_and_cleans_up(node, lab, vmid, template_volid, storage_full):
    upid = node.lxc.post(**create_args(vmid, template_volid))
    status = wait_task(node, upid)
    assert status["status"] == "stopped"
    assert status["exitstatus"].startswith(f"unable to create CT {vmid} - ")
    log = [line["t"] for line in node.tasks(upid).log.get()]
    assert any("No space left on device" in line for line in log)
    assert log[-1].startswith("TASK ERROR: unable to create CT")
    assert vmid not in [c["vmid"] for c in node.lxc.get()]


def test_storage_full_fails_template_download(node, lab, downloads_fail):
    template = node.aplinfo.get()[0]["template"]
    status = wait_task(node, node.aplinfo.post(storage=lab.pve_storage, template=template))
    assert "No space left on device" in status["exitstatus"]


@pytest.mark.parametrize(
    "body",
    [{"meteor": True}, {"storage_full": "yes"}, {"storage_full": True, "vmids": "a-b"}, {"vmids": "9000"}],
)
def test_fault_endpoint_refuses_malformed_requests(lab, body):
    r = requests.post(faults_url(lab), json=body, verify=str(lab.ca_path), timeout=10)
    assert r.status_code == 400 and "error" in r.json()
