"""Harness of the attack suite (test_attack_*.py): a relay process, an upstream thread, a health probe.

Loopback only. Every loop here is bounded in count and in time. The relay runs as its own process so its
RSS is its own; the probe runs as its own process too (health_probe.py), so its latencies are the
relay's and not this test's threads' GIL contention.
"""

from __future__ import annotations

import asyncio
import json
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from aiohttp import web
from conftest import make_relay_dir
from health_probe import read_response as read_response  # the tests' reader, stdlib only there
from relay_support import UPSTREAM_KEYS

from lab.upstream import create_app, state_of

HOST = "127.0.0.1"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


class UpstreamThread:
    """The lab's fake OpenAI-compatible upstream on its own event loop, in a thread."""

    def __init__(self, faults: list[dict] | None = None) -> None:
        self.app = create_app({"api_keys": UPSTREAM_KEYS})
        for rule in faults or []:
            state_of(self.app).add_fault(rule)
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        runner = web.AppRunner(self.app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, HOST, 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def __enter__(self) -> UpstreamThread:
        self._thread.start()
        assert self._ready.wait(10), "upstream did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}/api/v1"


class RelayProcess:
    """llm-relay-server as a child process on 127.0.0.1:0, configured by tests/relay/conftest.py."""

    def __init__(
        self, directory: Path, upstream_base: str, extra_server: str = "", nofile: int = 0, extra: str = ""
    ):
        self.dir = directory
        self.token, _, self.fernet_keys = make_relay_dir(
            directory, upstream_base, extra_server=extra_server, extra=extra
        )
        self.log_path = directory / "relay.log"
        self.nofile = nofile
        self.port = 0
        self.metrics_port = 0
        self.proc: subprocess.Popen | None = None

    def _limits(self) -> None:  # in the child, before exec: the fd limit a systemd unit would set
        if self.nofile:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(self.nofile, hard), hard))

    def __enter__(self) -> RelayProcess:
        argv = [sys.executable, "-m", "llm_relay.server", "--config", str(self.dir / "relay.toml")]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, stderr=log, preexec_fn=self._limits)
        deadline = time.monotonic() + 15
        while not self.port and time.monotonic() < deadline:
            time.sleep(0.05)
            for line in self.log_path.read_text().splitlines():
                doc = json.loads(line)
                if doc.get("msg") == "listening":
                    self.port = int(doc["listen"].rsplit(":", 1)[1])
                    self.metrics_port = int(doc.get("metrics_port") or 0)
        assert self.port, self.log_path.read_text()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def connect(self) -> socket.socket:
        return socket.create_connection((HOST, self.port), timeout=5)

    def log_text(self) -> str:
        return self.log_path.read_text()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    return -1


class Probe:
    """Every `interval` seconds: the relay's RSS and GET /healthz on its own keep-alive connection (timed),
    at most `max_samples` times from `start()` to `stop()`, in a process of its own (health_probe.py):
    as a thread here it shared this test's GIL with the attack's client threads and the in-process
    upstream, and timed their contention as if it were the relay's. Its figures are read at `stop()`.

    What the bounds judge (`p95_ms`, `max_ms`) is the relay's own share of each probe's latency: the
    wall time less the time the kernel says the relay's event-loop thread, and the probe, spent runnable
    but waiting for a CPU (schedstat run_delay). Why: on a 2-core machine at load ~7 (other suites beside
    this one, this test's own clients and upstream) a relay busy with an attack gets a third of a core;
    one probe then took 574 ms of which the relay had waited 446 ms for a CPU, stalled by the machine,
    not by itself; the issue's "< 100 ms" is about the relay's event loop (its fair parsing quantum, no
    body held in one go), which a dedicated core shows and a starved one hides. It is never counted as
    less than the CPU time the event loop spent in that probe's window: work it did before answering is
    its own even if it was also kept waiting (run_delay is charged when a wait ends, so a wait begun
    before the probe can be charged inside it). Where the kernel keeps no schedstat nothing is
    discounted and the wall time is judged. `latencies_ms` keeps the wall times, printed beside."""

    def __init__(self, relay: RelayProcess, interval: float = 0.02, max_samples: int = 3000) -> None:
        self.relay, self.interval, self.max_samples = relay, interval, max_samples
        self.latencies_ms: list[float] = []  # wall time per answered probe
        self.own_ms: list[float] = []  # the relay's own share of it (above)
        self.waited_ms: list[float] = []  # the relay's and the probe's wait for a CPU in it
        self.failures = 0
        self.rss_peak_kb = 0
        self._proc: subprocess.Popen | None = None

    def start(self) -> Probe:
        spec = {
            "port": self.relay.port,
            "pid": self.relay.pid,
            "interval": self.interval,
            "max_samples": self.max_samples,
        }
        script = str(Path(__file__).with_name("health_probe.py"))
        self._proc = subprocess.Popen(
            [sys.executable, script, json.dumps(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self._proc.stdout is not None
        # Started once it says so: an attack begun before then would go unprobed for its first ~100 ms.
        ready, _, _ = select.select([self._proc.stdout], [], [], 15)
        assert ready and self._proc.stdout.readline() == b"ready\n", "the health probe did not start"
        return self

    def stop(self) -> None:
        assert self._proc is not None
        try:
            out, _ = self._proc.communicate(timeout=15)  # closing its stdin is its stop signal
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
        doc = json.loads(out.splitlines()[-1])
        for wall, relay_ran, relay_waited, probe_waited in doc["probes"]:
            waited = max(0.0, relay_waited) + max(0.0, probe_waited)
            self.latencies_ms.append(wall)
            self.waited_ms.append(waited)
            self.own_ms.append(min(wall, max(wall - waited, relay_ran)))
        self.failures = doc["failures"]
        self.rss_peak_kb = doc["rss_peak_kb"]

    def report(self, what: str, rss_before_kb: int) -> str:
        wall = sorted(self.latencies_ms) or [0.0]
        line = (
            f"attack {what}: RSS {rss_before_kb / 1024:.1f} -> peak {self.rss_peak_kb / 1024:.1f} MiB "
            f"(+{(self.rss_peak_kb - rss_before_kb) / 1024:.1f}); /healthz on another connection: "
            f"{len(self.latencies_ms)} probes, failures {self.failures}, relay's own p50 "
            f"{statistics.median(self.own_ms or [0.0]):.1f} ms, p95 {self.p95_ms():.1f} ms, "
            f"max {self.max_ms():.1f} ms (wall p50 {statistics.median(wall):.1f}, p95 {_p95(wall):.1f}, "
            f"max {wall[-1]:.1f} ms; waits for a CPU up to {max(self.waited_ms, default=0.0):.1f} ms)"
        )
        print("\n" + line)
        return line

    def p95_ms(self) -> float:
        """p95 of the relay's own latencies (class doc); inf without a single answered probe."""
        return _p95(sorted(self.own_ms)) if self.own_ms else float("inf")

    def max_ms(self) -> float:
        return max(self.own_ms, default=float("inf"))


def _p95(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def raise_own_fd_limit(wanted: int) -> int:
    """This test process needs many sockets of its own; returns the soft limit it got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class SizedUpstream:
    """A provider that answers any request with a JSON body of the `size` its JSON body asks for (a small
    one otherwise), on its own event loop in a thread: large answers without an echo's cost."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                size, model = 16, "m"
                if body[:1] == b"{" and len(body) < 4096:
                    doc = json.loads(body)
                    size, model = int(doc.get("size", 16)), str(doc.get("model", "m"))
                # The model it was asked for, echoed with a usage report (as providers name what served).
                payload = b'{"model":%s,"usage":{"prompt_tokens":1,"completion_tokens":1},"x":"%s"}' % (
                    json.dumps(model).encode(),
                    b"a" * size,
                )
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % len(payload)
                )
                for i in range(0, len(payload), 1 << 16):
                    writer.write(payload[i : i + (1 << 16)])
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, HOST, 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> SizedUpstream:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
