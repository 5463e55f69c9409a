"""What ansible-playbook's default output says happened, in order: (task or handler title, host, status).

Used to check the order of a rolling change: e.g. that one host's relay was restarted and its connector
connected again before the next host's relay was touched. Works at any verbosity (-vvv adds lines
between a task's header and its results; they are skipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<title>.+?)\] \**$")
RESULT = re.compile(r"^(?P<status>ok|changed|failed|fatal|skipping): \[(?P<host>[^\]]+)\]")


@dataclass(frozen=True)
class Event:
    index: int  # position in the run
    title: str  # "relay : Restart the relay service", as printed
    host: str
    status: str


def events(output: str) -> list[Event]:
    found, title = [], ""
    for line in output.splitlines():
        if header := HEADER.match(line):
            title = header["title"]
        elif (result := RESULT.match(line)) and title:
            found.append(Event(len(found), title, result["host"], result["status"]))
    return found


def task_name(title: str) -> str:
    """ "role : task" -> "task": the role part is printed as the role was named (short or FQCN)."""
    return title.rsplit(" : ", 1)[-1]


def first(found: list[Event], task: str, host: str, status: str | None = None, after: int = -1) -> Event:
    """The first event of the task or handler named `task` on `host` (with `status`) after `after`."""
    for event in found:
        wanted = task_name(event.title) == task and event.host == host and status in (None, event.status)
        if event.index > after and wanted:
            return event
    raise AssertionError(f"no {status or 'result'} of {task!r} on {host} after event {after}")
