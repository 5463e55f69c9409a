"""Helpers shared by the PVE emulator tests (a unique module name: several test dirs have a conftest)."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

from lab.pve import schema

VMIDS = itertools.count(9000)
VMID_MAX = 9099


def wait_task(node, upid: str, timeout: float = 120) -> dict:
    """Poll a task until it stops; returns its final status."""
    deadline = time.monotonic() + timeout
    while True:
        status = node.tasks(upid).status.get()
        if status["status"] == "stopped":
            return status
        assert time.monotonic() < deadline, f"task {upid} still running after {timeout}s"
        time.sleep(0.25)


def schema_keys(template: str, method: str = "GET") -> tuple[set[str], set[str]]:
    """(required, all) keys of a schema `returns` object (or of its array items)."""
    ret = schema.returns(template, method)
    props = ret.get("properties") or ret.get("items", {}).get("properties", {})
    required = {k for k, v in props.items() if not v.get("optional")}
    return required, set(props)


def container_ipv4(node, vmid: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for iface in node.lxc(vmid).interfaces.get():
            if iface["name"] == "eth0" and iface.get("inet"):
                return iface["inet"].split("/")[0]
        time.sleep(0.5)
    raise AssertionError(f"CT {vmid} got no IPv4 address in {timeout}s")


def wait_idle(node, vmid: int) -> None:
    """Wait for every task still running on `vmid` (e.g. the vzstart that `start=1` spawns)."""
    for task in node.tasks.get(vmid=vmid, source="active"):
        wait_task(node, task["upid"])


def free_vmid(px) -> int:
    """The next vmid of this suite's range (9000-9099) that the cluster does not know."""
    taken = {r["vmid"] for r in px.cluster.resources.get(type="vm")}
    for candidate in VMIDS:
        assert candidate <= VMID_MAX, "lab_pve tests ran out of vmids"
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable")


def destroy(px, vmid: int) -> None:
    """Remove a test container wherever it is, after any task still running on it."""
    for res in px.cluster.resources.get(type="vm"):
        if res["vmid"] == vmid:
            node = px.nodes(res["node"])
            wait_idle(node, vmid)
            wait_task(node, node.lxc(vmid).delete(force=1, purge=1))


# Keys the real PVE returns that its schema does not declare.
REAL_EXTRAS = {
    # pve-manager PVE/API2Tools.pm extract_node_stats adds these to API2/Nodes.pm index's entries.
    "/nodes": {"id", "type", "disk", "maxdisk"},
    # PVE/API2/Tasks.pm convert_token_task: a token's task names the token apart.
    "/nodes/{node}/tasks/{upid}/status": {"tokenid"},
    "/nodes/{node}/tasks": {"tokenid"},
    "/nodes/{node}/status": {"uptime", "time", "kversion"},
    "/nodes/{node}/storage/{storage}/content": {"content"},
}


def check_keys(template: str, data: dict, method: str = "GET") -> None:
    required, known = schema_keys(template, method)
    keys = {re.sub(r"^(net|mp|unused|dev)\d+$", r"\1[n]", k) for k in data}
    assert required <= keys, f"{template}: missing {required - keys}"
    extra = keys - known - REAL_EXTRAS.get(template, set())
    assert not extra, f"{template}: keys not in the schema: {extra}"


def documented_privileges() -> list[str]:
    """The privileges the example inventory tells users to grant the automation token (its role)."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((repo / "inventory/example/group_vars/all/main.yml").read_text())
    return list(data["proxmox_api_role_privileges"])
