"""The validator on its own (no lab): PVE::JSONSchema's rules over the shared schema."""

from __future__ import annotations

import pytest

from lab.pve import auth, faults, schema
from lab.pve.access import AccessConfig
from lab.pve.tasks import TaskManager

CREATE = ("/nodes/{node}/lxc", "POST")
BASE = {"node": "pve1", "vmid": "9000", "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}


def errors(**params) -> dict[str, str]:
    with pytest.raises(schema.ParamError) as err:
        schema.validate(*CREATE, {**BASE, **params})
    return err.value.errors


def test_schema_is_the_shared_contract():
    assert set(schema.paths()) >= {"/version", "/nodes/{node}/lxc", "/nodes/{node}/tasks/{upid}/log"}
    assert schema.match("/nodes/pve2/lxc/9000/status/current") == (
        "/nodes/{node}/lxc/{vmid}/status/current",
        {"node": "pve2", "vmid": "9000"},
    )
    # Paths PVE has that the lab does not emulate are not in the schema (their calls answer 501).
    assert schema.match("/nodes/pve1/qemu/100/status/current") is None
    assert schema.match("/nodes/pve1/lxc/9000/snapshot") is None


def test_valid_create_is_typed():
    out = schema.validate(
        *CREATE,
        {**BASE, "memory": "512", "onboot": "1", "start": "true", "net0": "name=eth0,bridge=vmbr0,ip=dhcp"},
    )
    assert out["vmid"] == 9000 and out["memory"] == 512 and out["onboot"] is True and out["start"] is True


@pytest.mark.parametrize(
    "net0",
    [
        "name=eth0,bridge=vmbr0,ip=dhcp",
        "name=eth0,bridge=vmbr0,ip=10.87.0.5/24,gw=10.87.0.1",
        "name=eth1,bridge=vmbr0,ip=manual,ip6=auto,firewall=1,tag=10,mtu=1400,rate=12.5",
        "name=eth0,hwaddr=BC:24:11:00:00:01,trunks=10;20",
    ],
)
def test_good_net0(net0):
    assert schema.validate(*CREATE, {**BASE, "net0": net0})["net0"] == net0


@pytest.mark.parametrize(
    ("net0", "needle"),
    [
        ("name=eth0,ip=10.87.0.5", "net0.ip: invalid format"),  # no prefix length
        ("name=eth0,gw=10.87.0.300", "net0.gw: invalid format"),
        ("name=eth0,type=macvlan", "net0.type: value 'macvlan' does not have a value in the enumeration"),
        ("name=eth0,name=eth1", "duplicate key"),
        ("eth0", "value without key"),
        ("name=eth0,trunks=a;b", "net0.trunks: value does not match the regex pattern"),
    ],
)
def test_bad_net0(net0, needle):
    assert needle in errors(net0=net0)["net0"]


def test_rootfs_default_key_and_mountoptions():
    ok = schema.validate(*CREATE, {**BASE, "rootfs": "local:8,mountoptions=noatime;nodev,acl=1"})
    assert ok["rootfs"].startswith("local:8")
    assert "rootfs.mountoptions" in errors(rootfs="local:8,mountoptions=exec")["rootfs"]


def test_several_errors_are_reported_together():
    assert set(errors(memory="1", cores="0", swap="-1", bogus="x")) == {"memory", "cores", "swap", "bogus"}


def test_put_config_does_not_know_create_only_keys():
    put = ("/nodes/{node}/lxc/{vmid}/config", "PUT")
    for key in ("password", "ssh-public-keys", "ostemplate", "start"):
        with pytest.raises(schema.ParamError) as err:
            schema.validate(*put, {"node": "pve1", "vmid": "9000", key: "x"})
        assert err.value.errors == {key: schema.UNKNOWN}
    ok = schema.validate(*put, {"node": "pve1", "vmid": "9000", "delete": "description,tags", "digest": "ab"})
    assert ok["delete"] == "description,tags"


def _access(tmp_path) -> AccessConfig:
    cfg = {"user": "root@pam", "password": "pw-12345", "token_id": "tk", "token_secret": "s3cret"}
    return AccessConfig(tmp_path / "access.json", cfg)


def test_tickets_and_csrf(tmp_path):
    authn = auth.Authenticator(_access(tmp_path), tmp_path / "key")
    login = authn.login("root@pam", "pw-12345")
    ident = authn.check_ticket(login["ticket"])
    assert ident.userid == "root@pam"
    authn.check_csrf(ident, login["CSRFPreventionToken"])
    with pytest.raises(auth.AuthError):
        authn.check_csrf(auth.Identity("other@pve"), login["CSRFPreventionToken"])
    with pytest.raises(auth.AuthError):
        authn.login("root@pam", "nope")
    with pytest.raises(auth.AuthError):
        authn.check_ticket(login["ticket"][:-2] + "xx")
    assert authn.check_token("PVEAPIToken=root@pam!tk=s3cret").tokenid == "root@pam!tk"
    with pytest.raises(auth.AuthError):
        authn.check_token("PVEAPIToken=root@pam!tk=wrong")
    # The signing key persists: a new authenticator (daemon restart) accepts old tickets.
    again = auth.Authenticator(_access(tmp_path), tmp_path / "key")
    assert again.check_ticket(login["ticket"]).userid == "root@pam"
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600


async def test_task_lifecycle_and_upid_format(tmp_path):
    tasks = TaskManager(tmp_path)

    async def ok(task):
        task.log("hello")

    async def boom(task):
        from lab.pve.tasks import TaskFailed

        raise TaskFailed("storage full")

    first = tasks.start("pve1", "vzcreate", "9000", "root@pam", ok)
    second = tasks.start("pve1", "vzcreate", "9000", "root@pam", boom)
    assert first.upid != second.upid
    parts = first.upid.split(":")
    assert (
        len(parts) == 9
        and parts[0] == "UPID"
        and parts[-1] == ""
        and parts[5:8] == ["vzcreate", "9000", "root@pam"]
    )
    assert first.summary()["status"] == "running"
    await tasks.wait_all()
    assert first.summary()["exitstatus"] == "OK" and first.lines == ["hello", "TASK OK"]
    assert second.summary()["exitstatus"] == "storage full"
    assert second.lines[-1] == "TASK ERROR: storage full"
    reloaded = TaskManager(tmp_path)
    assert reloaded.get(second.upid).exitstatus == "storage full"


def test_fault_rules_are_scoped():
    state: dict = {}
    faults.apply_request(state, {"storage_full": True, "vmids": "9100-9199"})
    faults.apply_request(state, {"storage_full": True, "tasks": ["download"]})
    assert faults.active(state, "storage_full", "vzcreate", 9150)
    assert not faults.active(state, "storage_full", "vzcreate", 9050)
    assert faults.active(state, "storage_full", "download")
    faults.apply_request(state, {"storage_full": True})  # global
    assert faults.active(state, "storage_full", "vzcreate", 9050)
    faults.clear(state, everything=False)  # DELETE: only the global rule goes
    assert not faults.active(state, "storage_full", "vzcreate", 9050)
    assert faults.active(state, "storage_full", "vzcreate", 9150)
    faults.apply_request(state, {"storage_full": False, "vmids": [9199, 9100]})
    assert not faults.active(state, "storage_full", "vzcreate", 9150)
    faults.clear(state, everything=True)
    assert state == {}
    assert faults.normalize({"storage_full": True}) == {"storage_full": [{"vmids": None, "tasks": None}]}
