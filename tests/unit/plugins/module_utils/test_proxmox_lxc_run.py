"""The module's run against a recording stand-in for the API: nextid retry, and check mode calls no
write endpoint (the lifecycle playbook shows the same against the emulator; here every call is seen)."""

from __future__ import annotations

import pytest
from ansible_collections.llm_relay.homelab.plugins.module_utils import proxmox as pve
from ansible_collections.llm_relay.homelab.plugins.module_utils import proxmox_lxc_config as lxc_config
from ansible_collections.llm_relay.homelab.plugins.module_utils import proxmox_lxc_run as lxc_run
from ansible_collections.llm_relay.homelab.plugins.modules import proxmox_lxc
from proxmoxer.core import ResourceException

TEMPLATE = "local:vztmpl/debian-12-standard_12.15-1_amd64.tar.zst"
EXISTING = {
    "hostname": "relay1",
    "memory": 512,
    "swap": 512,
    "cores": 1,
    "unprivileged": 1,
    "features": "nesting=1",
    "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth",
    "rootfs": "local:9150/vm-9150-disk-0.raw,size=8G",
    "digest": "abc",
}


class RecordingApi:
    """Answers the reads the module makes; records every call; vmids in `taken` refuse a create."""

    wait_seconds = 0.0

    def __init__(self, existing=None, nextids=(9150,), taken=(), templates=(TEMPLATE,), pending=()):
        self.existing = existing
        self.nextids = list(nextids)
        self.taken = set(taken)
        self.templates = list(templates)
        self.pending = list(pending)
        self.calls = []
        self.vmid = 9150
        # The container's own run state (status/current) and what /cluster/resources shows of it: PVE
        # fills the latter from the node's last pvestatd round, so the two can differ for up to 10 s.
        self.status = "running"
        self.cluster_view = {"name": "relay1", "status": "running"}

    def get(self, path, **params):
        return self.call("GET", path, **params)

    def call(self, method, path, **data):
        self.calls.append((method, path, data))
        if method == "GET":
            return self._read(path)
        if method == "POST" and path == "nodes/pve1/lxc":
            if data["vmid"] in self.taken:
                # What PVE answers for a taken id, through the client's own error formatting.
                refusal = ResourceException(
                    400,
                    "Bad Request",
                    "Parameter verification failed.",
                    {"vmid": f"VM {data['vmid']} already exists"},
                )
                raise pve._api_error(refusal, f"{method} /{path}")
            self.vmid = data["vmid"]
            self.existing = {k: v for k, v in data.items() if k not in ("vmid", "ostemplate")}
            return f"UPID:pve1:00000001:00000002:6B000000:vzcreate:{data['vmid']}:root@pam!lab:"
        return f"UPID:pve1:00000001:00000002:6B000000:{path.rsplit('/', 1)[-1]}:9150:root@pam!lab:"

    def _read(self, path):
        if path == "cluster/resources":
            if not self.existing:
                return []
            return [{"vmid": self.vmid, "type": "lxc", "node": "pve1", **self.cluster_view}]
        if path.endswith("/status/current"):
            return {"vmid": self.vmid, "status": self.status}
        if path == "nodes":
            return [{"node": "pve1"}, {"node": "pve2"}]
        if path.endswith("/content"):
            return [{"volid": t} for t in self.templates]
        if path == "nodes/pve1/aplinfo":
            return [{"template": TEMPLATE.rsplit("/", 1)[1], "os": "debian-12"}]
        if path == "nodes/pve1/storage":
            return [{"storage": "local", "active": 1}]
        if path == "cluster/nextid":
            return str(self.nextids.pop(0))
        if path.endswith("/config"):
            return dict(self.existing)
        if path.endswith("/interfaces"):
            return [{"name": "eth0", "hwaddr": "BC:24:11:00:00:01", "inet": "10.87.0.150/24"}]
        if path.endswith("/pending"):
            return self.pending
        raise AssertionError(f"unexpected read {path}")

    def wait_task(self, upid, timeout, what="task"):
        return []

    def writes(self):
        return [c for c in self.calls if c[0] != "GET"]


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.params = dict.fromkeys(proxmox_lxc.argument_spec())
        self.params.update(state="started", template_storage="local", template_download=False, timeout=5)
        self.params.update(restart_on_change=False)
        self.params.update(params)
        self.check_mode = check_mode
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)


def test_nextid_is_asked_again_when_another_client_took_the_id():
    api = RecordingApi(nextids=(9150, 9151), taken={9150})
    module = FakeModule(state="present", node="pve1", hostname="relay1", ostemplate=TEMPLATE)
    result = lxc_run.LxcRun(module, api).run()
    posts = [c for c in api.writes() if c[1] == "nodes/pve1/lxc"]
    assert [p[2]["vmid"] for p in posts] == [9150, 9151]
    assert result["changed"] and result["vmid"] == 9151


class LosesTheCreateRace(RecordingApi):
    """PVE's answer when another client created the id between nextid and create_vm's
    check_vmid_unused: a plain 500 with no errors dict."""

    def call(self, method, path, **data):
        if method == "POST" and path == "nodes/pve1/lxc" and data["vmid"] in self.taken:
            self.calls.append((method, path, data))
            message = f"CT {data['vmid']} already exists on node 'pve2'"
            raise pve._api_error(
                ResourceException(500, "Internal Server Error", message), f"{method} /{path}"
            )
        return super().call(method, path, **data)


def test_nextid_is_asked_again_when_the_create_itself_finds_the_id_taken():
    api = LosesTheCreateRace(nextids=(9150, 9151), taken={9150})
    module = FakeModule(state="present", node="pve1", hostname="relay1", ostemplate=TEMPLATE)
    result = lxc_run.LxcRun(module, api).run()
    posts = [c for c in api.writes() if c[1] == "nodes/pve1/lxc"]
    assert [p[2]["vmid"] for p in posts] == [9150, 9151]
    assert result["changed"] and result["vmid"] == 9151


def test_an_explicit_vmid_taken_in_a_race_fails_naming_vmid():
    api = RecordingApi(taken={9150})
    module = FakeModule(state="present", node="pve1", vmid=9150, hostname="relay1", ostemplate=TEMPLATE)
    with pytest.raises(lxc_config.Failure) as err:
        lxc_run.LxcRun(module, api).run()
    assert err.value.msg.startswith("vmid: create refused") and "VM 9150 already exists" in err.value.msg


@pytest.mark.parametrize(
    ("existing", "args"),
    [
        (None, {"node": "pve1", "hostname": "relay1", "ostemplate": TEMPLATE, "vmid": 9150}),
        (EXISTING, {"vmid": 9150, "memory_mb": 1024, "tags": ["new"], "netif": [{"ip": "10.87.0.9/24"}]}),
        (EXISTING, {"vmid": 9150, "state": "stopped"}),
        (EXISTING, {"vmid": 9150, "state": "restarted"}),
        (EXISTING, {"vmid": 9150, "state": "absent"}),
    ],
    ids=["create", "update", "stop", "restart", "absent"],
)
def test_check_mode_calls_no_write_endpoint(existing, args):
    api = RecordingApi(existing=existing)
    result = lxc_run.LxcRun(FakeModule(check_mode=True, **args), api).run()
    assert result["changed"]
    assert api.writes() == []
    if args.get("state") != "restarted":  # a restart changes no configuration
        assert result["diff"]["before"] != result["diff"]["after"]


def test_update_sends_only_the_differing_keys_with_the_digest():
    api = RecordingApi(existing=EXISTING)
    module = FakeModule(vmid=9150, memory_mb=1024, cores=1, features=["nesting"])
    result = lxc_run.LxcRun(module, api).run()
    assert api.writes() == [("PUT", "nodes/pve1/lxc/9150/config", {"digest": "abc", "memory": 1024})]
    assert result["diff"] == {"before": {"memory_mb": 512}, "after": {"memory_mb": 1024}}
    assert result["ip_addresses"] == ["10.87.0.150"]


def test_missing_template_is_downloaded_through_aplinfo_before_the_create():
    api = RecordingApi(templates=())
    module = FakeModule(
        state="present",
        node="pve1",
        vmid=9150,
        hostname="relay1",
        ostemplate=TEMPLATE,
        template_download=True,
    )
    result = lxc_run.LxcRun(module, api).run()
    writes = [(method, path) for method, path, _data in api.writes()]
    assert writes == [("POST", "nodes/pve1/aplinfo"), ("POST", "nodes/pve1/lxc")]
    assert api.writes()[0][2] == {"storage": "local", "template": TEMPLATE.rsplit("/", 1)[1]}
    assert result["msg"].startswith("downloaded debian-12-standard")


def test_missing_template_without_download_lists_what_the_storage_has():
    api = RecordingApi(templates=("local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz",))
    module = FakeModule(state="present", node="pve1", vmid=9150, hostname="relay1", ostemplate=TEMPLATE)
    with pytest.raises(lxc_config.Failure) as err:
        lxc_run.LxcRun(module, api).run()
    assert err.value.msg.startswith("ostemplate:") and "alpine-3.20" in err.value.msg
    assert api.writes() == []


def test_pending_changes_are_reported_and_applied_by_restart_on_change():
    pending = [
        {"key": "features", "value": "nesting=1", "pending": "keyctl=1,nesting=1"},
        {"key": "memory", "value": "512"},
    ]
    api = RecordingApi(existing=EXISTING, pending=pending)
    result = lxc_run.LxcRun(FakeModule(vmid=9150), api).run()
    assert result["pending"] == ["features"] and not result["changed"] and api.writes() == []
    api = RecordingApi(existing=EXISTING, pending=pending)
    result = lxc_run.LxcRun(FakeModule(vmid=9150, restart_on_change=True), api).run()
    assert [(m, p) for m, p, _d in api.writes()] == [("POST", "nodes/pve1/lxc/9150/status/reboot")]
    assert result["changed"] and "to apply features" in result["msg"]


def test_check_mode_on_a_locked_container_warns_and_does_not_wait():
    api = RecordingApi(existing=dict(EXISTING, lock="backup"))
    module = FakeModule(check_mode=True, vmid=9150, memory_mb=1024, timeout=60)
    result = lxc_run.LxcRun(module, api).run()
    assert result["changed"] and api.writes() == []
    assert any("locked (backup)" in w for w in module.warnings)
    assert [c[1] for c in api.calls].count("nodes/pve1/lxc/9150/config") == 1  # read once: no polling


class VanishingApi(RecordingApi):
    """A locked container that is removed while the module waits: its config read then fails, as on PVE."""

    def _read(self, path):
        if path.endswith("/config") and self.existing is None:
            refusal = ResourceException(500, "Internal Server Error", "Configuration file does not exist")
            raise pve._api_error(refusal, f"GET /{path}")
        config = super()._read(path)
        if path.endswith("/config"):
            self.existing = None  # the lock was its removal
        return config


def test_a_container_removed_while_locked_fails_naming_vmid():
    api = VanishingApi(existing=dict(EXISTING, lock="destroyed"))
    with pytest.raises(lxc_config.Failure) as err:
        lxc_run.LxcRun(FakeModule(vmid=9150, memory_mb=1024), api).run()
    assert err.value.msg.startswith("vmid: container 9150 was removed") and api.writes() == []


def test_an_offline_node_is_named_in_the_error():
    """pveproxy answers 595 when it cannot forward a call to the node that owns the path."""
    refusal = ResourceException(595, "Errors during connection establishment, proxy handshake", "")
    error = pve._api_error(refusal, "POST /nodes/pve2/lxc")
    assert error.status == 595
    assert str(error).startswith("POST /nodes/pve2/lxc: API answered HTTP 595 Errors during connection")
    assert "node pve2 is offline or unreachable" in str(error)
    # Other statuses and paths without a node get no such hint.
    other = ResourceException(500, "Internal Server Error", "x")
    assert "offline" not in str(pve._api_error(other, "POST /nodes/pve2/lxc"))
    assert "offline" not in str(pve._api_error(refusal, "GET /cluster/resources"))


@pytest.mark.parametrize(
    ("state", "live", "stale", "action"),
    [
        ("stopped", "running", "stopped", "shutdown"),  # just started: the cluster still says stopped
        ("started", "stopped", "running", "start"),  # just stopped: the cluster still says running
    ],
)
def test_power_decisions_read_the_containers_own_status(state, live, stale, action):
    api = RecordingApi(existing=EXISTING)
    api.status, api.cluster_view = live, {"name": "relay1", "status": stale}
    result = lxc_run.LxcRun(FakeModule(state=state, vmid=9150, hostname="relay1"), api).run()
    assert [c[1] for c in api.writes()] == [f"nodes/pve1/lxc/9150/status/{action}"]
    assert result["changed"] and result["status"] == ("stopped" if state == "stopped" else "running")


@pytest.mark.parametrize(("live", "writes"), [("stopped", []), ("running", ["status/shutdown"])])
def test_no_power_action_when_the_container_is_already_as_wanted(live, writes):
    """The stale view alone never causes (or skips) an action: a stale `running` on a stopped one."""
    api = RecordingApi(existing=EXISTING)
    api.status, api.cluster_view = live, {"name": "relay1", "status": "running"}
    result = lxc_run.LxcRun(FakeModule(state="stopped", vmid=9150, hostname="relay1"), api).run()
    assert [c[1].rsplit("/", 2)[-2] + "/" + c[1].rsplit("/", 1)[-1] for c in api.writes()] == writes
    assert result["changed"] == bool(writes)


def test_a_container_no_status_round_has_seen_is_found_by_its_config_hostname():
    """Right after a create PVE lists it as `unknown` without a name: looking it up by hostname must
    not create a second one."""
    api = RecordingApi(existing=EXISTING)
    api.status, api.cluster_view = "stopped", {"status": "unknown"}
    result = lxc_run.LxcRun(FakeModule(state="stopped", hostname="relay1", node="pve1"), api).run()
    assert api.writes() == []
    assert result["vmid"] == 9150 and not result["changed"]
    assert ("GET", "nodes/pve1/lxc/9150/config", {}) in api.calls


def test_absent_stops_a_running_container_the_cluster_still_shows_stopped():
    api = RecordingApi(existing=EXISTING)
    api.status, api.cluster_view = "running", {"name": "relay1", "status": "stopped"}
    lxc_run.LxcRun(FakeModule(state="absent", vmid=9150), api).run()
    assert [c[1] for c in api.writes()] == ["nodes/pve1/lxc/9150/status/stop", "nodes/pve1/lxc/9150"]


def test_a_vmid_no_status_round_has_named_is_not_taken_over_under_another_hostname():
    """The vmid exists as a container created moments ago (no name in /cluster/resources yet): its config
    names it, and another hostname is refused as for a named one."""
    api = RecordingApi(existing=EXISTING)
    api.cluster_view = {"status": "unknown"}
    with pytest.raises(lxc_config.Failure) as err:
        lxc_run.LxcRun(FakeModule(state="present", vmid=9150, hostname="relay2"), api).run()
    assert "already exists as container 'relay1'" in err.value.msg
    assert api.writes() == []
