"""Harness of the attack suite (test_attack_*.py): a relay process, an upstream thread, a health probe.

Loopback only. Every loop here is bounded in count and in time. The relay runs as its own process so its
RSS is its own; the probe runs in a thread with blocking sockets, so its latencies are the relay's and
not this test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from aiohttp import web
from conftest import make_relay_dir
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


def read_response(sock: socket.socket, limit_s: float) -> bytes:
    """Bytes of one response head and a small body (until EOF, reset, or `limit_s`)."""
    sock.settimeout(limit_s)
    data = b""
    deadline = time.monotonic() + limit_s
    with contextlib.suppress(OSError):
        while time.monotonic() < deadline and len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(v)
                    for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                    if k.lower() == b"content-length"
                ),
                -1,
            )
            if sep and 0 <= length <= len(body):
                break
    return data


class Probe:
    """Every `interval` seconds: GET /healthz on its own keep-alive connection (timed) and the relay's RSS.

    Runs in a thread from `start()` to `stop()`, at most `max_samples` times."""

    def __init__(self, relay: RelayProcess, interval: float = 0.02, max_samples: int = 3000) -> None:
        self.relay, self.interval, self.max_samples = relay, interval, max_samples
        self.latencies_ms: list[float] = []
        self.failures = 0
        self.rss_peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> socket.socket:
        return socket.create_connection((HOST, self.relay.port), timeout=5)

    def _run(self) -> None:
        sock: socket.socket | None = None
        request = b"GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n"
        try:
            for _ in range(self.max_samples):
                if self._stop.is_set():
                    break
                self.rss_peak_kb = max(self.rss_peak_kb, self.relay.rss_kb())
                started = time.perf_counter()
                try:
                    sock = sock or self._connect()
                    sock.sendall(request)
                    answer = read_response(sock, 5)
                except OSError:
                    answer = b""
                if answer.startswith(b"HTTP/1.1 200"):
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)
                else:
                    self.failures += 1
                    if sock is not None:
                        sock.close()
                    sock = None
                self._stop.wait(self.interval)
        finally:
            if sock is not None:
                sock.close()

    def start(self) -> Probe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def report(self, what: str, rss_before_kb: int) -> str:
        lat = sorted(self.latencies_ms) or [0.0]
        p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
        line = (
            f"attack {what}: RSS {rss_before_kb / 1024:.1f} -> peak {self.rss_peak_kb / 1024:.1f} MiB "
            f"(+{(self.rss_peak_kb - rss_before_kb) / 1024:.1f}); /healthz on another connection: "
            f"{len(self.latencies_ms)} probes, p50 {statistics.median(lat):.1f} ms, p95 {p95:.1f} ms, "
            f"max {lat[-1]:.1f} ms, failures {self.failures}"
        )
        print("\n" + line)
        return line

    def p95_ms(self) -> float:
        lat = sorted(self.latencies_ms)
        return lat[min(len(lat) - 1, int(len(lat) * 0.95))] if lat else float("inf")


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
