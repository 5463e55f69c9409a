"""SSE through the lab edge + the real cloudflared: first-chunk latency and per-chunk added delay.

Same run, same origin, two paths: the client reads the origin's event stream directly (baseline) and
through edge → cloudflared → origin (the Cloudflare emulator and the edge in-process on ephemeral
ports, the real cloudflared 2026.8.2 as a process). Every event carries the origin's monotonic emit time,
so per-chunk transit = arrival - emit is measured on one clock; "added" is the tunnel path minus the
baseline.

    python -m bench edge_sse [--rounds N] [--events N] [--interval SECONDS]
"""

import argparse
import asyncio
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from lab.edge.harness import Cloudflared, Origin, edge_harness

HOST = "bench-sse.lab.test"


async def read_stream(http: aiohttp.ClientSession, url: str, headers: dict) -> tuple[float, list[float]]:
    """(seconds from request to first event, per-event transit seconds)."""
    started = time.monotonic()
    first, transits = None, []
    async with http.get(url, headers=headers) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data: event"):
                continue
            now = time.monotonic()
            first = first if first is not None else now - started
            transits.append(now - float(line.split(b" t=")[1]))
    return first, transits


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms"


async def run(rounds: int, events: int, interval: float) -> None:
    origin = await Origin().start()
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as work:
        async with edge_harness(Path(work)) as env:
            tunnel_id, token = await env.api.create_tunnel("bench-sse")
            config = {
                "ingress": [
                    {"hostname": HOST, "service": f"http://127.0.0.1:{origin.port}"},
                    {"service": "http_status:404"},
                ]
            }
            await env.api.put_config(tunnel_id, config)
            await env.api.route(HOST, tunnel_id)
            cloudflared = await Cloudflared.start(env.connector_port, env.ca_path, token=token, connections=2)
            try:
                await cloudflared.wait_for("Registered tunnel connection", count=2)
                tls = ssl.create_default_context(cafile=str(env.ca_path))
                query = f"/sse?n={events}&delay={interval}"
                results = {"direct": ([], []), "edge + cloudflared": ([], [])}
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
                    for _ in range(rounds):  # interleaved, so both paths see the same machine load
                        for name, url, headers in (
                            ("direct", f"http://127.0.0.1:{origin.port}{query}", {}),
                            ("edge + cloudflared", env.client_url + query, {"Host": HOST}),
                        ):
                            first, transits = await read_stream(http, url, headers)
                            results[name][0].append(first)
                            results[name][1].extend(transits)
            finally:
                await cloudflared.stop()
    await origin.stop()

    print(f"SSE through the lab edge: {rounds} rounds x {events} events, {interval * 1000:.0f} ms apart")
    for name, (firsts, transits) in results.items():
        print(f"  {name:16s} first chunk   {summary(firsts)}")
        print(f"  {name:16s} per chunk     {summary(transits)}")
    direct, tunnel = results["direct"], results["edge + cloudflared"]
    added_first = statistics.median(tunnel[0]) - statistics.median(direct[0])
    added_chunk = statistics.median(tunnel[1]) - statistics.median(direct[1])
    ratio = statistics.median(tunnel[1]) / max(statistics.median(direct[1]), 1e-9)
    print(f"  added by edge + cloudflared: first chunk {added_first * 1000:.2f} ms,", end="")
    print(f" per chunk {added_chunk * 1000:.2f} ms")
    print(f"  per-chunk transit ratio tunnel/direct: {ratio:.1f}x (same run)")
    expected = rounds * events
    print(f"  chunks delivered: direct {len(direct[1])}, tunnel {len(tunnel[1])} (expected {expected} each)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench edge_sse", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    asyncio.run(run(args.rounds, args.events, args.interval))


if __name__ == "__main__":
    main()
