"""Helpers shared by the PVE emulator tests (a unique module name: several test dirs have a conftest)."""

from __future__ import annotations

import time

from lab.pve import schema


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
