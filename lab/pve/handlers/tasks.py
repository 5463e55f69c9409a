"""/nodes/{node}/tasks: list, status, log."""

from __future__ import annotations

from typing import Any

from lab.pve.api import Call, route
from lab.pve.errors import ApiError
from lab.pve.permcheck import owns_task
from lab.pve.tasks import Task


def _task(call: Call) -> Task:
    upid = call.params["upid"]
    parts = upid.split(":")
    if len(parts) != 9 or parts[0] != "UPID":
        raise ApiError(400, f"unable to parse worker upid '{upid}'")
    task = call.pve.tasks.get(upid)
    if task is None or task.node != call.params["node"]:
        raise ApiError(500, f"no such task '{upid}'")
    # pve-manager API2/Tasks.pm: another user's task needs Sys.Audit on the node.
    if not owns_task(call.user, task.user):
        call.perms.check(f"/nodes/{call.params['node']}", ["Sys.Audit"])
    return task


@route("GET", "/nodes/{node}/tasks")
async def list_tasks(call: Call) -> list[dict[str, Any]]:
    p = call.params
    rows = [t for t in call.pve.tasks.tasks.values() if t.node == p["node"]]
    if not call.perms.check(f"/nodes/{p['node']}", ["Sys.Audit"], True):
        rows = [t for t in rows if owns_task(call.user, t.user)]
    if p.get("vmid") is not None:
        rows = [t for t in rows if t.id == str(p["vmid"])]
    if p.get("typefilter"):
        rows = [t for t in rows if t.type == p["typefilter"]]
    if p.get("source") == "active":
        rows = [t for t in rows if t.status == "running"]
    if p.get("errors"):
        rows = [t for t in rows if t.status == "stopped" and t.exitstatus != "OK"]
    rows.sort(key=lambda t: t.starttime, reverse=True)
    start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
    return [t.list_entry() for t in rows[start : start + limit]]


@route("GET", "/nodes/{node}/tasks/{upid}")
async def task_index(call: Call) -> list[dict[str, str]]:
    _task(call)
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status")
async def task_status(call: Call) -> dict[str, Any]:
    return _task(call).summary()


@route("GET", "/nodes/{node}/tasks/{upid}/log")
async def task_log(call: Call) -> list[dict[str, Any]]:
    task = _task(call)
    start, limit = int(call.params.get("start", 0)), int(call.params.get("limit", 50))
    lines = task.lines[start : start + limit] if limit else task.lines[start:]
    return [{"n": start + i + 1, "t": t} for i, t in enumerate(lines)]
