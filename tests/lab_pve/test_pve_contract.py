"""Every emulated endpoint against the shared PVE schema: response keys and types through proxmoxer."""

from __future__ import annotations

import re

import pytest
from proxmoxer.core import ResourceException
from pve_support import check_keys, wait_task

pytestmark = pytest.mark.lab


@pytest.fixture(params=["token", "password"], scope="module")
def px(request, lab):
    """Every contract test runs through proxmoxer with API-token and with ticket (password) auth."""
    return lab.proxmox(request.param)


@pytest.fixture(scope="module")
def node(px, lab):
    return px.nodes(lab.nodes[0])


UPID = re.compile(r"^UPID:[a-z0-9-]+:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:[a-z]+:[^:]*:[^:]+:$")


def test_version(px):
    data = px.version.get()
    check_keys("/version", data)
    assert re.fullmatch(r"\d+\.\d+", data["release"])


def test_nodes_lists_every_configured_node(px, lab):
    nodes = px.nodes.get()
    assert sorted(n["node"] for n in nodes) == sorted(lab.nodes)
    for n in nodes:
        check_keys("/nodes", n)
        assert n["status"] == "online"
        assert (n["id"], n["type"]) == (f"node/{n['node']}", "node")
        assert n["maxdisk"] >= n["disk"] > 0
        assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", n["ssl_fingerprint"])


@pytest.mark.parametrize("index", [0, 1])
def test_node_status(px, lab, index):
    data = px.nodes(lab.nodes[index]).status.get()
    check_keys("/nodes/{node}/status", data)
    assert data["memory"]["total"] > 0 and len(data["loadavg"]) == 3


def test_nextid_is_a_string_and_free(px):
    vmid = px.cluster.nextid.get()
    assert isinstance(vmid, str) and int(vmid) >= 100
    assert int(vmid) not in {r["vmid"] for r in px.cluster.resources.get(type="vm")}
    assert px.cluster.nextid.get(vmid=9098) == "9098"


@pytest.mark.parametrize("kind", ["vm", "node", "storage", None])
def test_cluster_resources(px, kind):
    rows = px.cluster.resources.get(**({"type": kind} if kind else {}))
    for row in rows:
        check_keys("/cluster/resources", row)
    if kind == "node":
        assert {r["type"] for r in rows} == {"node"}
    if kind == "vm":
        assert all(r["type"] == "lxc" and r["id"] == f"lxc/{r['vmid']}" for r in rows)


def test_storage_listing(node):
    """A fresh PVE install's storages: `local` (dir) for templates, `local-lvm` (lvmthin) for root disks."""
    rows = node.storage.get()
    assert [(r["storage"], r["type"], r["content"]) for r in rows] == [
        ("local", "dir", "backup,iso,vztmpl"),
        ("local-lvm", "lvmthin", "images,rootdir"),
    ]
    for row in rows:
        check_keys("/nodes/{node}/storage", row)
    assert [r["storage"] for r in node.storage.get(content="rootdir")] == ["local-lvm"]


def test_storage_content_lists_the_template(node, lab):
    rows = node.storage(lab.pve_storage).content.get(content="vztmpl")
    names = [r["volid"] for r in rows]
    assert any(re.fullmatch(r"local:vztmpl/debian-12-standard_12\.\d+-1_amd64\.tar\.zst", n) for n in names)
    for row in rows:
        check_keys("/nodes/{node}/storage/{storage}/content", row)
        assert row["format"] == "tzst" and row["size"] > 10_000_000


def test_aplinfo_lists_the_appliance(node):
    rows = node.aplinfo.get()
    assert len(rows) == 1
    app = rows[0]
    assert app["template"].startswith("debian-12-standard_12.") and app["type"] == "lxc"
    assert app["os"] == "debian-12" and len(app["sha512sum"]) == 128


def test_aplinfo_download_is_a_task(node, lab):
    template = node.aplinfo.get()[0]["template"]
    upid = node.aplinfo.post(storage=lab.pve_storage, template=template)
    assert UPID.match(upid) and ":download:" in upid
    status = wait_task(node, upid)
    check_keys("/nodes/{node}/tasks/{upid}/status", status)
    assert status["exitstatus"] == "OK"
    log = node.tasks(upid).log.get()
    assert [sorted(line) for line in log] == [["n", "t"]] * len(log)
    assert log[-1]["t"] == "TASK OK"
    assert any("starting template download" in line["t"] for line in log)


def test_task_status_fields_match_the_upid(node, lab):
    upid = node.aplinfo.post(storage=lab.pve_storage, template=node.aplinfo.get()[0]["template"])
    status = wait_task(node, upid)
    _, node_name, pid, pstart, start, kind, ident, user, _ = upid.split(":")
    assert status["node"] == node_name and status["pid"] == int(pid, 16)
    assert status["pstart"] == int(pstart, 16) and status["starttime"] == int(start, 16)
    assert status["type"] == kind and status["id"] == ident
    # The UPID holds the full auth id; PVE/API2/Tasks.pm splits a token's into user and tokenid.
    assert "!".join(filter(None, (status["user"], status.get("tokenid")))) == user
    if "!" in user:
        assert (status["user"], status["tokenid"]) == tuple(user.split("!"))
    listed = node.tasks.get(typefilter="download")
    assert upid in [t["upid"] for t in listed]
    row = next(t for t in listed if t["upid"] == upid)
    assert (row["user"], row.get("tokenid")) == (status["user"], status.get("tokenid"))


def test_task_log_paging(node, lab):
    upid = node.aplinfo.post(storage=lab.pve_storage, template=node.aplinfo.get()[0]["template"])
    wait_task(node, upid)
    full = node.tasks(upid).log.get()
    page = node.tasks(upid).log.get(start=1, limit=2)
    assert page == full[1:3]


def test_task_log_tells_its_total(lab, api, node):
    """PVE/API2/Tasks.pm read_task_log sets the result attribute `total`: beside `data` in the body."""
    upid = node.aplinfo.post(storage=lab.pve_storage, template=node.aplinfo.get()[0]["template"])
    wait_task(node, upid)
    header = {"Authorization": f"PVEAPIToken={lab.pve_user}!{lab.pve_token_id}={lab.pve_token_secret}"}
    body = api.get(
        f"{lab.pve_url}/nodes/{lab.nodes[0]}/tasks/{upid}/log", params={"limit": 2}, headers=header
    )
    body = body.json()
    assert len(body["data"]) == 2 and body["total"] == len(node.tasks(upid).log.get(limit=0)) > 2


def test_directory_indexes(node, lab):
    assert {"subdir": "content"} in node.storage(lab.pve_storage).get()
    upid = node.aplinfo.post(storage=lab.pve_storage, template=node.aplinfo.get()[0]["template"])
    wait_task(node, upid)
    assert node.tasks(upid).get() == [{"name": "log"}, {"name": "status"}]


def test_storage_config(px):
    """pve-storage API2/Storage/Config.pm: a fresh install's storage.cfg sections, content sorted."""
    rows = px.storage.get()
    assert [(r["storage"], r["type"], r["content"]) for r in rows] == [
        ("local", "dir", "backup,iso,vztmpl"),
        ("local-lvm", "lvmthin", "images,rootdir"),
    ]
    assert px.storage.get(type="lvmthin") == [rows[1]]
    local = px.storage("local").get()
    assert local == rows[0] and local["path"] == "/var/lib/vz" and len(local["digest"]) == 40
    with pytest.raises(ResourceException) as err:
        px.storage("tank").get()
    assert (err.value.status_code, err.value.content) == (500, "storage 'tank' does not exist")


def test_cluster_status(px, lab):
    """pve-manager PVE/API2/Cluster.pm status: the cluster, then each member node."""
    rows = px.cluster.status.get()
    for row in rows:
        check_keys("/cluster/status", row)
    cluster = rows[0]
    assert cluster["type"] == "cluster" and cluster["nodes"] == len(lab.nodes) and cluster["quorate"] == 1
    assert sorted(r["name"] for r in rows[1:]) == sorted(lab.nodes)
    assert all(r["type"] == "node" and r["online"] == 1 and r["id"] == f"node/{r['name']}" for r in rows[1:])
    assert sum(r["local"] for r in rows[1:]) == 1


def test_unknown_appliance_is_a_parameter_error(node, lab):
    with pytest.raises(ResourceException) as err:
        node.aplinfo.post(storage=lab.pve_storage, template="nope_1.0_amd64.tar.zst")
    assert (err.value.status_code, err.value.errors) == (400, {"template": "no such template"})
