"""The emulator's permission model against PVE's rules (pve-access-control AccessControl.pm roles(),
RPCEnvironment.pm permissions()/check(), pve-container LXC.pm check_ct_modify_config_perm), set up the
way a user does it with `pveum`: role, user, privilege-separated token and ACLs through /access."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException
from pve_support import destroy, documented_privileges, free_vmid, wait_task

pytestmark = pytest.mark.lab


@dataclass
class Account:
    userid: str
    tokenid: str
    secret: str
    role: str


def connect(lab, account: Account, **kwargs) -> ProxmoxAPI:
    return ProxmoxAPI(
        lab.pve_host,
        port=lab.pve_port,
        user=account.userid,
        token_name=account.tokenid,
        token_value=account.secret,
        backend="https",
        verify_ssl=str(lab.ca_path),
        timeout=30,
        **kwargs,
    )


def refused(call, *args, **kwargs) -> ResourceException:
    with pytest.raises(ResourceException) as err:
        call(*args, **kwargs)
    return err.value


@pytest.fixture
def account(px) -> Iterator[Account]:
    """A fresh @pve user with a privilege-separated token and an empty custom role; removed afterwards."""
    suffix = secrets.token_hex(4)
    userid, role = f"perm-{suffix}@pve", f"LabPerm{suffix}"
    px.access.roles.post(roleid=role, privs="")
    px.access.users.post(userid=userid, password="perm-test-pass", comment="tests/lab_pve")
    made = px.access.users(userid).token("tk").post(comment="test token")
    assert made["full-tokenid"] == f"{userid}!tk" and made["info"]["privsep"] == 1
    try:
        yield Account(userid, "tk", made["value"], role)
    finally:
        px.access.users(userid).delete()
        px.access.roles(role).delete()


def grant(px, account: Account, path: str, privs: list[str], *, token: bool = True, propagate: int = 1):
    px.access.roles(account.role).put(privs=",".join(privs))
    members = {"users": account.userid} | ({"tokens": f"{account.userid}!{account.tokenid}"} if token else {})
    px.access.acl.put(path=path, roles=account.role, propagate=propagate, **members)


def test_a_token_without_acl_gets_pves_403(px, lab, account):
    api = connect(lab, account)
    err = refused(api.nodes(lab.nodes[0]).lxc(9098).delete)
    assert err.status_code == 403 and err.content == "Permission check failed (/vms/9098, VM.Allocate)"
    err = refused(api.nodes(lab.nodes[0]).status.get)
    assert (
        err.status_code == 403
        and err.content == f"Permission check failed (/nodes/{lab.nodes[0]}, Sys.Audit)"
    )
    # Lists answer, filtered: nothing of the cluster is visible, nodes show no figures.
    assert api.cluster.resources.get(type="vm") == []
    assert api.cluster.resources.get(type="storage") == []
    # PVE/API2Tools.pm extract_node_stats without Sys.Audit: no figures.
    bare = {"id", "node", "type", "status", "level", "ssl_fingerprint"}
    assert all(set(n) == bare for n in api.nodes.get())
    assert api.nodes(lab.nodes[0]).storage.get() == []


def test_privilege_separation_intersects_with_the_user(px, lab, account):
    """A privsep token holds what both it and its user hold; the token's ACL alone is not enough."""
    api = connect(lab, account)
    px.access.roles(account.role).put(privs="VM.Audit")
    px.access.acl.put(path="/vms", roles=account.role, tokens=f"{account.userid}!{account.tokenid}")
    assert refused(api.nodes(lab.nodes[0]).lxc(9098).config.get).status_code == 403
    px.access.acl.put(path="/vms", roles=account.role, users=account.userid)
    # Past the permission check: the container does not exist.
    err = refused(api.nodes(lab.nodes[0]).lxc(9098).config.get)
    assert err.status_code == 500 and "does not exist" in err.content
    perms = api.access.permissions.get(path="/vms/9098")
    assert perms == {"/vms/9098": {"VM.Audit": 1}}


def test_a_token_without_privilege_separation_has_its_users_privileges(px, lab, account):
    px.access.users(account.userid).token(account.tokenid).put(privsep=0)
    grant(px, account, "/vms", ["VM.Audit"], token=False)
    api = connect(lab, account)
    assert api.access.permissions.get(path="/vms/9098") == {"/vms/9098": {"VM.Audit": 1}}


def test_propagate_and_noaccess(px, lab, account):
    grant(px, account, "/vms", ["VM.Audit"], propagate=0)
    api = connect(lab, account)
    assert api.access.permissions.get(path="/vms/9098") == {"/vms/9098": {}}
    assert api.access.permissions.get(path="/vms") == {"/vms": {"VM.Audit": 1}}
    grant(px, account, "/vms", ["VM.Audit"], propagate=1)
    assert api.access.permissions.get(path="/vms/9098") == {"/vms/9098": {"VM.Audit": 1}}
    # NoAccess on the deeper path wins over what / or /vms grant.
    token = f"{account.userid}!{account.tokenid}"
    px.access.acl.put(path="/vms/9098", roles="NoAccess", tokens=token)
    assert api.access.permissions.get(path="/vms/9098") == {"/vms/9098": {}}
    assert api.access.permissions.get(path="/vms/9097") == {"/vms/9097": {"VM.Audit": 1}}


def test_access_api_refuses_what_pve_refuses(px, account):
    with pytest.raises(ResourceException) as err:
        px.access.roles.post(roleid="PVEMine", privs="VM.Audit")
    assert err.value.status_code == 400 and "'PVE' namespace" in err.value.errors["roleid"]
    with pytest.raises(ResourceException) as err:
        px.access.roles(account.role).put(privs="VM.Audit,VM.Fly")
    assert err.value.errors == {"privs": "invalid format - invalid privilege 'VM.Fly'"}
    with pytest.raises(ResourceException) as err:
        px.access.roles("PVEVMAdmin").put(privs="VM.Audit")
    assert err.value.content == "auto-generated role 'PVEVMAdmin' cannot be modified"
    with pytest.raises(ResourceException) as err:
        px.access.users(account.userid).token(account.tokenid).post()
    assert err.value.errors == {"tokenid": "Token already exists."}
    with pytest.raises(ResourceException) as err:
        px.access.acl.put(path="/nowhere", roles="PVEAuditor", users=account.userid)
    assert err.value.errors == {"path": "invalid ACL path '/nowhere'"}
    roles = {r["roleid"]: r for r in px.access.roles.get()}
    assert roles["PVEDatastoreUser"]["privs"] == "Datastore.AllocateSpace,Datastore.Audit"
    assert roles["PVEDatastoreUser"]["special"] == 1 and roles[account.role]["special"] == 0


def test_root_only_feature_flags_even_for_root_tokens(px, lab, template_volid):
    """LXC.pm: feature flags other than nesting are root@pam's (its password login) only; root@pam!lab,
    a token without privilege separation holding every privilege, is refused."""
    node = px.nodes(lab.nodes[0])
    vmid = free_vmid(px)
    create = {
        "vmid": vmid,
        "ostemplate": template_volid,
        "storage": "local-lvm",
        "features": "nesting=1,keyctl=1",
    }
    err = refused(node.lxc.post, **create)
    assert err.status_code == 403
    assert (
        err.content
        == "Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)"
    )
    # root@pam with its password gets past the permission checks (here: to a volume that is no template).
    root = lab.proxmox("password").nodes(lab.nodes[0])
    err = refused(root.lxc.post, **dict(create, ostemplate="local:iso/none.iso"))
    assert err.status_code == 500 and "content type needs to be 'vztmpl'" in err.content
    assert vmid not in [r["vmid"] for r in px.cluster.resources.get(type="vm")]


def test_privileged_container_needs_sys_modify_on_root(px, lab, account, template_volid):
    grant(px, account, "/", ["VM.Allocate", "Datastore.AllocateSpace", "SDN.Use"])
    api = connect(lab, account)
    err = refused(api.nodes(lab.nodes[0]).lxc.post, vmid=9098, ostemplate=template_volid, unprivileged=0)
    assert err.status_code == 403 and err.content == "Permission check failed (/, Sys.Modify)"


def test_another_users_task_needs_sys_audit(px, lab, account, template_volid):
    node = px.nodes(lab.nodes[0])
    upid = node.aplinfo.post(storage=lab.pve_storage, template=node.aplinfo.get()[0]["template"])
    wait_task(node, upid)
    api = connect(lab, account)
    err = refused(api.nodes(lab.nodes[0]).tasks(upid).status.get)
    assert (
        err.status_code == 403
        and err.content == f"Permission check failed (/nodes/{lab.nodes[0]}, Sys.Audit)"
    )
    grant(px, account, f"/nodes/{lab.nodes[0]}", ["Sys.Audit"])
    assert api.nodes(lab.nodes[0]).tasks(upid).status.get()["exitstatus"] == "OK"


@pytest.fixture
def vmid_cleanup(px) -> Iterator[int]:
    vmid = free_vmid(px)
    yield vmid
    destroy(px, vmid)


def test_a_least_privilege_token_runs_a_containers_lifecycle(px, lab, account, template_volid, vmid_cleanup):
    """What proxmox_lxc calls, through a privsep token holding only the example inventory's privileges."""
    grant(px, account, "/", documented_privileges())
    api = connect(lab, account)
    node = api.nodes(lab.nodes[0])
    vmid = vmid_cleanup
    assert [s["storage"] for s in node.storage.get(content="rootdir")] == ["local-lvm"]
    upid = node.lxc.post(
        vmid=vmid,
        ostemplate=template_volid,
        hostname="least-privilege",
        rootfs="local-lvm:1",
        memory=128,
        cores=1,
        features="nesting=1",
        net0="name=eth0,bridge=vmbr0,ip=dhcp",
        tags="lab",
    )
    assert wait_task(node, upid)["exitstatus"] == "OK"
    assert vmid in [r["vmid"] for r in api.cluster.resources.get(type="vm")]  # VM.Audit on / shows it
    node.lxc(vmid).config.put(memory=192, description="resized", cores=2, hostname="least-privilege-2")
    assert wait_task(node, node.lxc(vmid).status.start.post())["exitstatus"] == "OK"
    assert node.lxc(vmid).status.current.get()["status"] == "running"
    assert wait_task(node, node.lxc(vmid).status.stop.post())["exitstatus"] == "OK"
    assert wait_task(node, node.lxc(vmid).delete(purge=1))["exitstatus"] == "OK"


@pytest.fixture(scope="module")
def stopped_ct(lab, template_volid) -> Iterator[int]:
    """A stopped container made by the lab's root-equivalent token, for the privilege-removal cases."""
    px = lab.proxmox("token")
    node = px.nodes(lab.nodes[0])
    vmid = free_vmid(px)
    try:
        upid = node.lxc.post(vmid=vmid, ostemplate=template_volid, storage="local-lvm", memory=128)
        assert wait_task(node, upid)["exitstatus"] == "OK"
        yield vmid
    finally:
        destroy(px, vmid)


# One call per documented privilege that proxmox_lxc makes and that needs it, with PVE's refusal.
NEEDS = {
    "VM.Allocate": ("delete", "/vms/{vmid}"),
    "VM.Audit": ("config", "/vms/{vmid}"),
    "VM.Config.CPU": ("put:cores=2", "/vms/{vmid}"),
    "VM.Config.Memory": ("put:memory=160", "/vms/{vmid}"),
    "VM.Config.Network": ("put:hostname=renamed", "/vms/{vmid}"),
    "VM.Config.Options": ("put:description=x", "/vms/{vmid}"),
    "VM.PowerMgmt": ("start", "/vms/{vmid}"),
    "VM.Config.Disk": ("create", "/vms/{new}"),
    "Datastore.AllocateSpace": ("create", "/storage/local-lvm"),
    "SDN.Use": ("create", "/sdn/zones/localnetwork/vmbr0"),
    "Datastore.AllocateTemplate": ("download", "/storage/local"),
}


def test_every_documented_privilege_is_needed(lab):
    assert sorted(NEEDS) == sorted(documented_privileges())


@pytest.mark.parametrize("missing", sorted(NEEDS))
def test_without_one_documented_privilege_pve_names_it_and_its_path(px, lab, account, stopped_ct, missing):
    grant(px, account, "/", [p for p in documented_privileges() if p != missing])
    node = connect(lab, account).nodes(lab.nodes[0])
    action, path = NEEDS[missing]
    new = free_vmid(px)
    if action == "delete":
        call = node.lxc(stopped_ct).delete
    elif action == "config":
        call = node.lxc(stopped_ct).config.get
    elif action.startswith("put:"):
        key, value = action[4:].split("=")
        call = lambda: node.lxc(stopped_ct).config.put(**{key: value})  # noqa: E731
    elif action == "start":
        call = node.lxc(stopped_ct).status.start.post
    elif action == "create":
        template = px.nodes(lab.nodes[0]).storage(lab.pve_storage).content.get(content="vztmpl")[0]["volid"]
        net0 = "name=eth0,bridge=vmbr0,ip=dhcp"
        call = lambda: node.lxc.post(vmid=new, ostemplate=template, rootfs="local-lvm:1", net0=net0)  # noqa: E731
    else:
        call = lambda: node.aplinfo.post(storage="local", template=node.aplinfo.get()[0]["template"])  # noqa: E731
    err = refused(call)
    where = path.format(vmid=stopped_ct, new=new)
    assert err.status_code == 403 and err.content == f"Permission check failed ({where}, {missing})"
    assert new not in [r["vmid"] for r in px.cluster.resources.get(type="vm")]


def test_an_offline_node_answers_595_on_its_paths(px, lab, account):
    """A node that is down: pveproxy cannot reach it, every call on its paths is a 595; lists say so.
    (Scoped to this test's token, so suites running in parallel keep the node.)"""
    faults = f"https://127.0.0.1:{lab.pve_port}/_lab/faults"
    down = lab.nodes[1]
    grant(px, account, "/", ["VM.Audit", "Sys.Audit", "Datastore.Audit"])
    rule = {"node_offline": True, "nodes": [down], "users": [f"{account.userid}!{account.tokenid}"]}
    assert px.nodes(down).lxc.get() is not None  # the lab's own token still sees the node
    px = connect(lab, account)
    assert requests.post(faults, json=rule, verify=str(lab.ca_path), timeout=10).status_code == 200
    try:
        err = refused(px.nodes(down).lxc.get)
        assert (
            err.status_code == 595
            and err.content == "Errors during connection establishment, proxy handshake"
        )
        assert {n["node"]: n["status"] for n in px.nodes.get()}[down] == "offline"
        node_row = next(r for r in px.cluster.resources.get(type="node") if r["node"] == down)
        assert node_row["status"] == "offline" and "maxcpu" not in node_row
        assert all(r["status"] == "unknown" for r in px.cluster.resources.get(type="vm") if r["node"] == down)
        assert px.nodes(lab.nodes[0]).lxc.get() is not None  # the other node answers
        assert lab.proxmox("token").nodes(down).lxc.get() is not None  # others are not affected
    finally:
        rule["node_offline"] = False
        requests.post(faults, json=rule, verify=str(lab.ca_path), timeout=10)
    assert px.nodes(down).lxc.get() is not None


def test_a_ticket_names_the_cluster_only_to_an_auditor(lab, px, account):
    """pve-access-control API2/AccessControl.pm create_ticket: `cap` always, `clustername` with Sys.Audit
    on /; the storage config (pve-storage API2/Storage/Config.pm) lists only storages the caller audits."""
    url = f"{lab.pve_url}/access/ticket"
    login = {"username": account.userid, "password": "perm-test-pass"}
    data = requests.post(url, data=login, verify=str(lab.ca_path), timeout=30).json()["data"]
    assert "clustername" not in data and data["cap"]["vms"] == {} and data["cap"]["dc"] == {}
    grant(px, account, "/", ["Sys.Audit", "Datastore.Audit"], token=True)
    data = requests.post(url, data=login, verify=str(lab.ca_path), timeout=30).json()["data"]
    assert data["clustername"] and data["cap"]["dc"] == {"Sys.Audit": 1}
    assert data["cap"]["storage"] == {"Datastore.Audit": 1}
    api = connect(lab, account)
    assert [s["storage"] for s in api.storage.get()] == ["local", "local-lvm"]
    err = refused(api.storage("local").get)
    assert (
        err.status_code == 403
        and err.content == "Permission check failed (/storage/local, Datastore.Allocate)"
    )
