"""The attack suite's health probe as its own process (attack_support.Probe starts and reads it).

`python health_probe.py SPEC_JSON`, SPEC: {"port", "pid", "interval", "max_samples"}. Every `interval`
seconds: the relay's RSS (/proc/PID/status), then GET /healthz on one keep-alive connection, timed from
the send to the whole answer. Until its standard input closes (or `max_samples`); then prints one JSON
document: per answered probe its latency and what the kernel's scheduler says happened meanwhile (how
long the relay's event-loop thread ran, how long it and this probe waited for a CPU: schedstat), the
number of failed probes and the RSS peak. attack_support.Probe says how the test uses these.

Why a process: as a thread in the test process it shared a GIL with the attack's client threads and the
in-process fake upstream (40 x 8 MiB answers), so its timings held the test's own contention (p95 128 ms,
p50 0.6 ms, in one run at load 6 on 2 cores) and not only the relay's. Stdlib only, so it starts fast.
Loopback only; bounded by `max_samples` and by a 5 s timeout per probe.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import time

HOST = "127.0.0.1"
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n"


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


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass  # the relay is gone: the test's own `alive()` check says so
    return 0


def schedstat_ms(path: str) -> tuple[float, float]:
    """(time on a CPU, time runnable but waiting for one) of one thread since it started, in ms: the
    first two fields of its schedstat (ns). For /proc/PID that is the process's main thread, the
    relay's event loop. (0, 0) where the kernel keeps no such figures: nothing is then discounted."""
    try:
        with open(path) as f:
            ran, waited = f.read().split()[:2]
        return int(ran) / 1e6, int(waited) / 1e6
    except (OSError, ValueError):
        return 0.0, 0.0


def main() -> None:
    spec = json.loads(sys.argv[1])
    port, pid, interval = int(spec["port"]), int(spec["pid"]), float(spec["interval"])
    relay_stat, own_stat = f"/proc/{pid}/schedstat", "/proc/thread-self/schedstat"
    # One row per answered probe: [wall ms, relay on a CPU, relay waiting for one, probe waiting for one].
    probes: list[list[float]] = []
    failures, rss_peak = 0, 0
    sock: socket.socket | None = None
    print("ready", flush=True)
    try:
        for _ in range(int(spec["max_samples"])):
            rss_peak = max(rss_peak, rss_kb(pid))
            relay_before, own_before = schedstat_ms(relay_stat), schedstat_ms(own_stat)
            started = time.perf_counter()
            try:
                sock = sock or socket.create_connection((HOST, port), timeout=5)
                sock.sendall(REQUEST)
                answer = read_response(sock, 5)
            except OSError:
                answer = b""
            took = (time.perf_counter() - started) * 1000
            relay_after, own_after = schedstat_ms(relay_stat), schedstat_ms(own_stat)
            if answer.startswith(b"HTTP/1.1 200"):
                probes.append(
                    [
                        took,
                        relay_after[0] - relay_before[0],
                        relay_after[1] - relay_before[1],
                        own_after[1] - own_before[1],
                    ]
                )
            else:
                failures += 1
                if sock is not None:
                    sock.close()
                sock = None
            # The pause between probes doubles as the stop signal: the test closes our stdin.
            if select.select([sys.stdin], [], [], interval)[0]:
                break
    finally:
        if sock is not None:
            sock.close()
    doc = {"probes": probes, "failures": failures, "rss_peak_kb": rss_peak}
    print(json.dumps(doc), flush=True)


if __name__ == "__main__":
    main()
