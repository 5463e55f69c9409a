"""PVE tasks: real-format UPIDs, `running` → `stopped` with an exit status, and a line log.

A task is a coroutine run in the background; its log and status are persisted under the state dir so
`lab restart` keeps them. A task still running when the daemon stopped is reported as PVE reports a
worker that vanished: stopped, exitstatus "unexpected status".
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("lab.pve.tasks")


class TaskFailed(Exception):
    """Raised inside a worker: its text becomes the task's exitstatus (like PVE's `die`)."""


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    status: str = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    lines: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        self.lines.extend(line.splitlines() or [""])

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("lines", "endtime", "exitstatus")}
        if "!" in self.user:
            # pve-manager PVE/API2/Tasks.pm convert_token_task: a token's task names the user and the
            # token apart (the UPID keeps the full token id).
            out["user"], out["tokenid"] = self.user.split("!", 1)
        if self.status == "stopped":
            out["exitstatus"] = self.exitstatus
        return out

    def list_entry(self) -> dict[str, Any]:
        out = self.summary()
        out.pop("status")
        if self.status == "stopped":
            out["status"] = self.exitstatus
            out["endtime"] = self.endtime
        return out


def _process_start_ticks() -> int:
    # Field 22 of /proc/self/stat: start time in clock ticks, which is what PVE puts in `pstart`.
    stat = Path("/proc/self/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


class TaskManager:
    def __init__(self, task_dir: Path) -> None:
        self.dir = task_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tasks: dict[str, Task] = {}
        self.pid = os.getpid()
        self.pstart = _process_start_ticks()
        self._seq = itertools.count(1)
        self._running: set[asyncio.Task[None]] = set()
        self._load()

    def _file(self, upid: str) -> Path:
        return self.dir / (hashlib.sha1(upid.encode(), usedforsecurity=False).hexdigest() + ".json")

    def _load(self) -> None:
        for path in self.dir.glob("*.json"):
            try:
                task = Task(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                continue
            if task.status == "running":
                task.status, task.exitstatus, task.endtime = "stopped", "unexpected status", int(time.time())
                task.log("TASK ERROR: unexpected status")
                self._save(task)
            self.tasks[task.upid] = task

    def _save(self, task: Task) -> None:
        tmp = self._file(task.upid).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(task)))
        tmp.replace(self._file(task.upid))

    def new_upid(self, node: str, kind: str, ident: str, user: str) -> Task:
        # Each task gets its own pstart so UPIDs stay unique when several start within one second.
        pstart = self.pstart + next(self._seq)
        now = int(time.time())
        upid = f"UPID:{node}:{self.pid:08X}:{pstart:08X}:{now:08X}:{kind}:{ident}:{user}:"
        return Task(upid, node, self.pid, pstart, now, kind, ident, user)

    def start(
        self, node: str, kind: str, ident: str, user: str, worker: Callable[[Task], Awaitable[None]]
    ) -> Task:
        task = self.new_upid(node, kind, ident, user)
        self.tasks[task.upid] = task
        self._save(task)
        runner = asyncio.create_task(self._run(task, worker))
        self._running.add(runner)
        runner.add_done_callback(self._running.discard)
        return task

    async def _run(self, task: Task, worker: Callable[[Task], Awaitable[None]]) -> None:
        try:
            await worker(task)
            task.exitstatus = "OK"
            task.log("TASK OK")
        except TaskFailed as exc:
            task.exitstatus = str(exc)
            task.log(f"TASK ERROR: {exc}")
        except Exception as exc:
            log.exception("task %s crashed", task.upid)
            task.exitstatus = f"{type(exc).__name__}: {exc}"
            task.log(f"TASK ERROR: {task.exitstatus}")
        task.status, task.endtime = "stopped", int(time.time())
        self._save(task)

    def get(self, upid: str) -> Task | None:
        return self.tasks.get(upid)

    async def wait_all(self) -> None:
        if self._running:
            await asyncio.wait(self._running, timeout=30)
