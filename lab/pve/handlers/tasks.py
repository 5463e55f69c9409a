"""/nodes/{node}/tasks: list, status, log."""

from __future__ import annotations

import re
from typing import Any

from lab.pve.api import Call, Result, route
from lab.pve.permcheck import owns_task
from lab.pve.schema import ParamError
from lab.pve.tasks import Task

# pve-common src/PVE/Tools.pm upid_decode: what a UPID must look like.
UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s]+):([^:\s]*):([^:\s]+):$"
)


def _parsed(call: Call) -> str:
    upid = call.params["upid"]
    if not UPID_RE.match(upid):
        raise ParamError({"upid": "unable to parse worker upid"})
    return upid


def _check_owner(call: Call, task_user: str) -> None:
    # pve-manager PVE/API2/Tasks.pm check_task_user: another user's task needs Sys.Audit on the node.
    if not owns_task(call.user, task_user):
        call.perms.check(f"/nodes/{call.params['node']}", ["Sys.Audit"])


def _task(call: Call) -> Task:
    """PVE/API2/Tasks.pm read_task_status: a parseable UPID whose log file the node has (tasks are
    files on the node that ran them)."""
    upid = _parsed(call)
    task = call.pve.tasks.get(upid)
    if task is None or task.node != call.params["node"]:
        raise ParamError({"upid": "no such task"})
    _check_owner(call, task.user)
    return task


@route("GET", "/nodes/{node}/tasks")
async def list_tasks(call: Call) -> Result:
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
    # PVE/API2/Tasks.pm node_tasks sets the result attribute `total` (every match, not just this page).
    return Result([t.list_entry() for t in rows[start : start + limit]], total=len(rows))


@route("GET", "/nodes/{node}/tasks/{upid}")
async def task_index(call: Call) -> list[dict[str, str]]:
    _parsed(call)
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status")
async def task_status(call: Call) -> dict[str, Any]:
    return _task(call).summary()


@route("GET", "/nodes/{node}/tasks/{upid}/log")
async def task_log(call: Call) -> Result:
    """PVE/API2/Tasks.pm read_task_log: PVE::Tools::dump_logfile's lines and their count as `total`;
    a log file the node does not have reads as one line saying so."""
    upid = _parsed(call)
    task = call.pve.tasks.get(upid)
    if task is None or task.node != call.params["node"]:
        return Result([{"n": 1, "t": "unable to open file - No such file or directory"}], total=1)
    _check_owner(call, task.user)
    start, limit = int(call.params.get("start", 0)), int(call.params.get("limit", 50))
    lines = task.lines[start : start + limit] if limit else task.lines[start:]
    return Result([{"n": start + i + 1, "t": t} for i, t in enumerate(lines)], total=len(task.lines))
