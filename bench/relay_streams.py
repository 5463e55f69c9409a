"""1,000 concurrent SSE streams through the relay: peak RSS and per-chunk added delay.

    python -m bench relay_streams [--streams 1000] [--events 10] [--interval 1.0] [--pin]

An origin process (aiohttp, load core) answers every request with an event stream whose events carry
their CLOCK_MONOTONIC emit time (system-wide, so comparable across processes). The same set of streams is
read twice in one run: straight from the origin (baseline: client + origin scheduling) and through the
relay (left to the scheduler by default; `--pin`: origin+client on core 0, relay on core 1).
Each stream starts its events at a random phase of the interval, so chunks flow steadily (as 1,000
independent generations would) instead of in synchronised bursts of 1,000.
Per-chunk delay = arrival - emit; "added" = relay percentile - baseline percentile. Peak RSS is the
relay process's VmHWM. Targets (issue 6): <= 150 MB, added p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import relay_harness
from bench.relay_harness import (
    LOAD_CPU,
    REPO,
    SUT_CPU,
    RelaySetup,
    free_port,
    peak_rss_mb,
    pinned,
    processes,
    rss_mb,
    tree_cpu_seconds,
    wait_port,
)


def run_origin(port: int) -> None:
    """The SSE origin (runs as its own process)."""
    from aiohttp import web

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        events = int(request.headers.get("X-Bench-Events", "10"))
        interval = float(request.headers.get("X-Bench-Interval", "0.5"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await asyncio.sleep(random.random() * interval)  # random phase: streams are not synchronised
        for i in range(events):
            await asyncio.sleep(interval)
            payload = json.dumps({"i": i, "t": time.monotonic(), "pad": "x" * 120})
            await resp.write(f"data: {payload}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stream)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def read_streams(url: str, headers: dict, count: int, events: int, interval: float) -> tuple[list, int]:
    """Open `count` streams at once; return per-chunk delays (s) and how many streams completed."""
    delays: list[float] = []
    completed = 0
    hdrs = {**headers, "X-Bench-Events": str(events), "X-Bench-Interval": str(interval)}
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one() -> None:
            nonlocal completed
            async with http.post(url, json=body, headers=hdrs) as resp:
                resp.raise_for_status()
                async for line in resp.content:
                    if line.startswith(b'data: {"i"'):
                        # {"i": N, "t": T, ...}: slice T out instead of parsing JSON (keeps the client light)
                        stamp = line.split(b'"t": ', 1)[1].split(b",", 1)[0]
                        delays.append(time.monotonic() - float(stamp))
                    elif line.startswith(b"data: [DONE]"):
                        completed += 1

        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        print(f"  {len(failures)} streams failed, first: {failures[0]!r}")
    return delays, completed


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000
        if ordered
        else float("nan")
    )


def run(streams: int, events: int, interval: float, pin: bool) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * streams + 256)), hard))
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp, processes() as procs:
        work = Path(tmp)
        origin_port = free_port()
        argv = [sys.executable, "-m", "bench.relay_streams", "--origin", str(origin_port)]
        origin = procs.start(pinned(LOAD_CPU, argv) if pin else argv, cwd=REPO)
        wait_port(origin_port, origin)
        relay = RelaySetup(work, f"http://127.0.0.1:{origin_port}/api/v1")
        relay_proc = relay.start(procs, SUT_CPU if pin else None)
        idle_rss = rss_mb(relay_proc.pid)
        print(
            f"relay_streams: {streams} concurrent SSE streams x {events} events every {interval:g} s; "
            + (f"origin+client on core {LOAD_CPU}, relay on core {SUT_CPU}" if pin else "unpinned")
        )
        direct_url = f"http://127.0.0.1:{origin_port}/api/v1/chat/completions"
        relay_url = f"http://127.0.0.1:{relay.port}/v1/chat/completions"
        started = time.monotonic()
        base, base_done = asyncio.run(read_streams(direct_url, {}, streams, events, interval))
        auth = {"Authorization": f"Bearer {relay.token}"}
        cpu_before, wall_before = tree_cpu_seconds(relay_proc.pid), time.monotonic()
        through, done = asyncio.run(read_streams(relay_url, auth, streams, events, interval))
        cpu_used, wall = tree_cpu_seconds(relay_proc.pid) - cpu_before, time.monotonic() - wall_before
        peak = peak_rss_mb(relay_proc.pid)
        print(f"{'path':10} {'streams ok':>10} {'chunks':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, values, ok in (("direct", base, base_done), ("relay", through, done)):
            print(
                f"{name:10} {ok:10d} {len(values):8d} {pct(values, 50):8.2f} {pct(values, 99):8.2f} "
                f"{pct(values, 100):8.2f}"
            )
        print(
            f"added per-chunk delay: p50 {pct(through, 50) - pct(base, 50):.2f} ms, "
            f"p99 {pct(through, 99) - pct(base, 99):.2f} ms (target p99 <= 5 ms)"
        )
        if base and through:
            mean_direct, mean_relay = statistics.mean(base) * 1000, statistics.mean(through) * 1000
            print(f"mean delay direct {mean_direct:.2f} ms, relay {mean_relay:.2f} ms")
        print(
            f"relay CPU: {cpu_used:.2f} s over {wall:.1f} s ({cpu_used / wall * 100:.0f}% of a core), "
            f"{cpu_used / max(1, len(through)) * 1e6:.0f} us per relayed chunk (stream setup included)"
        )
        print(
            f"relay RSS: idle {idle_rss:.1f} MB, peak {peak:.1f} MB (target <= 150 MB); "
            f"bench took {time.monotonic() - started:.1f} s"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench relay_streams")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--pin", action="store_true", help="pin origin+client and relay to separate cores")
    parser.add_argument("--origin", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--relay-python", help='interpreter for the relay: a path, or "deployed" (see relay_throughput)'
    )
    args = parser.parse_args(argv)
    if args.origin:
        run_origin(args.origin)
        return
    relay_harness.set_relay_python(args.relay_python)
    run(args.streams, args.events, args.interval, args.pin)


if __name__ == "__main__":
    main()
