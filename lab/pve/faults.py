"""Injected faults (lab control `/_lab/faults`): scoped rules, so parallel suites do not hit each other.

A rule is {"vmids": [lo, hi] | None, "tasks": [task types] | None}; None means "any". The only fault
so far is `storage_full`: a matching create (`vzcreate`) or template download (`download`) task fails
inside "Proxmox" with "No space left on device".

    POST   {"storage_full": true}                              global rule (every create and download)
    POST   {"storage_full": true, "vmids": "9000-9099"}        only creates of those vmids
    POST   {"storage_full": true, "tasks": ["download"]}       only template downloads
    POST   {"storage_full": false, ...same scope...}           remove that rule
    POST   {"node_offline": true, "nodes": ["pve2"]}           take nodes offline: every /nodes/pve2/...
                                                               call answers 595 (the proxy to the node
                                                               fails), lists show it `offline`/`unknown`
    POST   {..., "users": ["u@pve!tk"]}                        the same, seen only by those callers (so
                                                               parallel suites keep their node)
    POST   {"node_offline": false, ...same nodes/users...}     bring them back
    DELETE                                                     remove the global (unscoped) rules
    DELETE ?all=1                                              remove every rule, every offline node
    GET                                                        {"faults": {"storage_full": [rules],
                                                                           "node_offline": [nodes]}}
"""

from __future__ import annotations

from typing import Any

KNOWN = {"storage_full"}
TASKS = {"vzcreate", "download"}


class FaultError(ValueError):
    """A malformed fault request (HTTP 400)."""


def _vmids(value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if isinstance(value, str) and value.replace("-", "", 1).isdigit():
        lo, _, hi = value.partition("-")
        return [int(lo), int(hi or lo)]
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [min(value), max(value)]
    raise FaultError('vmids: a vmid, "LO-HI" or [LO, HI]')


def _tasks(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not set(value) <= TASKS or not value:
        raise FaultError(f"tasks: a non-empty list of {sorted(TASKS)}")
    return sorted(set(value))


def normalize(faults: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Upgrade state written by older daemons ({"storage_full": true}) to rule lists."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, value in faults.items():
        if value is True:
            out[name] = [{"vmids": None, "tasks": None}]
        elif isinstance(value, list) and value:
            out[name] = value
    return out


def _apply_node_offline(faults: dict[str, Any], body: dict[str, Any], known_nodes: list[str]) -> None:
    nodes, users = body.get("nodes"), body.get("users")
    if not set(body) <= {"node_offline", "nodes", "users"} or not isinstance(body["node_offline"], bool):
        raise FaultError('node_offline: {"node_offline": true|false, "nodes": [names], "users": [ids]}')
    if not isinstance(nodes, list) or not nodes or not set(nodes) <= set(known_nodes):
        raise FaultError(f"nodes: a non-empty list of {known_nodes}")
    if users is not None and (not isinstance(users, list) or not all(isinstance(u, str) for u in users)):
        raise FaultError("users: a list of user or token ids")
    rule = {"nodes": sorted(set(nodes)), "users": sorted(set(users)) if users is not None else None}
    rules = [r for r in faults.get("node_offline", []) if r != rule]
    if body["node_offline"]:
        rules.append(rule)
    if rules:
        faults["node_offline"] = rules
    else:
        faults.pop("node_offline", None)


def apply_request(faults: dict[str, Any], body: Any, known_nodes: list[str] | None = None) -> None:
    """POST: add (true) or remove (false) one scoped rule per named fault, or take nodes off/online."""
    if not isinstance(body, dict):
        raise FaultError("body must be a JSON object")
    if "node_offline" in body:
        _apply_node_offline(faults, body, known_nodes or [])
        return
    scope_keys = {"vmids", "tasks"}
    names = set(body) - scope_keys
    if not names or not names <= KNOWN or not all(isinstance(body[n], bool) for n in names):
        raise FaultError(f"known faults: {sorted(KNOWN)} (true/false), optional scope: vmids, tasks")
    rule = {"vmids": _vmids(body.get("vmids")), "tasks": _tasks(body.get("tasks"))}
    for name in names:
        rules = [r for r in faults.get(name, []) if r != rule]
        if body[name]:
            rules.append(rule)
        if rules:
            faults[name] = rules
        else:
            faults.pop(name, None)


def clear(faults: dict[str, Any], everything: bool) -> None:
    for name in list(faults):
        if name == "node_offline":
            if everything:
                del faults[name]
            continue
        kept = [] if everything else [r for r in faults[name] if r != {"vmids": None, "tasks": None}]
        if kept:
            faults[name] = kept
        else:
            del faults[name]


def offline(faults: dict[str, Any], node: str, authid: str) -> bool:
    """Is `node` down for a caller authenticated as `authid`?"""
    for rule in faults.get("node_offline", []):
        if node in rule["nodes"] and (rule["users"] is None or authid in rule["users"]):
            return True
    return False


def active(faults: dict[str, list[dict[str, Any]]], name: str, task: str, vmid: int | None = None) -> bool:
    """Does fault `name` hit a `task` (for `vmid`)?"""
    for rule in faults.get(name, []):
        if rule["tasks"] is not None and task not in rule["tasks"]:
            continue
        if rule["vmids"] is not None and (vmid is None or not rule["vmids"][0] <= vmid <= rule["vmids"][1]):
            continue
        return True
    return False
