"""Task waiting: a failed task is noticed at once with its log; a missed status read is retried.

The PVE side is a small scripted stand-in for the two task endpoints, so the timing is exact; the real
emulator path is covered by the faults playbook (storage full).
"""

from __future__ import annotations

import time

import pytest
from ansible_collections.llm_relay.homelab.plugins.module_utils import proxmox as pve

UPID = "UPID:pve1:00001234:00005678:6B000000:vzcreate:9100:root@pam!lab:"


class ScriptedTask:
    """Answers .../status with `running` until `stops_at` (monotonic), then `stopped` with `exitstatus`."""

    def __init__(self, stops_in, exitstatus, log=(), failing_reads=0):
        self.stops_at = time.monotonic() + stops_in
        self.exitstatus = exitstatus
        self.log = list(log)
        self.failing_reads = failing_reads
        self.status_reads = 0

    def __call__(self, path):
        task = self

        class Resource:
            def get(self, **params):
                if path.endswith("/status"):
                    task.status_reads += 1
                    if task.failing_reads:
                        task.failing_reads -= 1
                        raise pve.RequestsConnectionError("read timed out")
                    if time.monotonic() < task.stops_at:
                        return {"status": "running"}
                    return {"status": "stopped", "exitstatus": task.exitstatus}
                if path.endswith("/log"):
                    return [{"n": i + 1, "t": t} for i, t in enumerate(task.log)]
                raise AssertionError(path)

        return Resource()


def client_for(task):
    client = pve.ProxmoxClient.__new__(pve.ProxmoxClient)
    client.wait_seconds = 0.0
    client.retry_window = 10
    client.api = task
    return client


def test_failed_task_is_noticed_at_once_with_its_log():
    log = [f"line {i}" for i in range(20)] + [
        "tar: Cannot write: No space left on device",
        "TASK ERROR: boom",
    ]
    task = ScriptedTask(stops_in=1.2, exitstatus="unable to create CT 9100 - boom", log=log)
    client = client_for(task)
    started = time.monotonic()
    with pytest.raises(pve.TaskFailed) as err:
        client.wait_task(UPID, timeout=60, what="create of 9100")
    noticed_after_stop = time.monotonic() - task.stops_at
    assert noticed_after_stop < pve.ProxmoxClient.POLL_MAX + 0.2
    assert err.value.exitstatus == "unable to create CT 9100 - boom"
    assert err.value.log_lines[-2:] == log[-2:] and len(err.value.log_lines) == pve.ProxmoxClient.LOG_TAIL
    assert "No space left on device" in err.value.msg and err.value.msg.startswith("create of 9100 failed:")
    assert err.value.waited == pytest.approx(time.monotonic() - started, abs=0.1)
    assert client.wait_seconds >= 1.2


def test_ok_and_warnings():
    assert client_for(ScriptedTask(0, "OK")).wait_task(UPID, timeout=5) == []
    warned = client_for(ScriptedTask(0, "WARNINGS: 1", log=["WARN: low disk"])).wait_task(UPID, 5, "start")
    assert warned == ["start: WARNINGS: 1", "WARN: low disk"]


def test_timeout_reports_the_running_task():
    with pytest.raises(pve.TaskFailed) as err:
        client_for(ScriptedTask(30, "OK", log=["still extracting"])).wait_task(
            UPID, timeout=0.3, what="create"
        )
    assert err.value.exitstatus == "timeout" and "still extracting" in err.value.msg


def test_a_missed_status_read_is_retried():
    task = ScriptedTask(0, "OK", failing_reads=2)
    assert client_for(task).wait_task(UPID, timeout=5) == []
    assert task.status_reads == 3


def test_not_a_upid():
    with pytest.raises(pve.ProxmoxError):
        client_for(ScriptedTask(0, "OK")).wait_task("not-a-upid", timeout=1)


def test_a_refused_write_is_retried_but_a_timed_out_write_is_not():
    class Flaky:
        def __init__(self, error, failures):
            self.error, self.failures, self.posts = error, failures, 0

        def __call__(self, path):
            flaky = self

            class Resource:
                def post(self, **data):
                    flaky.posts += 1
                    if flaky.failures:
                        flaky.failures -= 1
                        raise flaky.error
                    return "UPID:pve1:1:2:3:vzstart:9100:root@pam:"

            return Resource()

    refused = pve.RequestsConnectionError(
        "HTTPSConnectionPool: NewConnectionError: [Errno 111] Connection refused"
    )
    api = Flaky(refused, failures=2)
    assert client_for(api).call("POST", "nodes/pve1/lxc/9100/status/start").startswith("UPID:")
    assert api.posts == 3
    api = Flaky(pve.Timeout("Read timed out. (read timeout=10)"), failures=1)
    with pytest.raises(pve.ProxmoxError) as err:
        client_for(api).call("POST", "nodes/pve1/lxc/9100/status/start")
    assert api.posts == 1 and err.value.param == "api_host"
