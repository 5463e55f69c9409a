"""`relay_ab --instructions`: instructions per request of two relay installs, counted by valgrind.

Wall and CPU time on a shared 2-core machine vary by ±20 % between runs, more than the 10 % budget a
change is held to; the number of instructions a process executes does not depend on what else runs. Each
relay runs under `valgrind --tool=cachegrind --cache-sim=no` (its `I refs` total, the cheapest count
valgrind gives), against the same fake upstream as relay_ab, and is sent one keep-alive connection's worth
of sequential requests: a warm-up, then a number of plain chat requests and of envelope v2 requests, then
SIGTERM (cachegrind writes its total when the process exits). Three runs per relay:

    A: N1 plain + N1 envelope      B: N2 plain + N1 envelope      C: N1 plain + N2 envelope

so that start-up, warm-up and shutdown cancel out: plain = (B - A) / (N2 - N1), envelope = (C - A) /
(N2 - N1). The A/A control repeats A and B for "after": how far the same relay's figure moves between two
measurements (timers, e.g. the access log's 0.1 s flush, run by wall time, which valgrind stretches).
Python under valgrind is ~50x slower, so N stays small (default 50 and 250); two runs go at a time.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llm_relay import envelope, envelope_v2
from llm_relay.client.codec_v2 import relay_epoch  # envelopes name the relay process (replay.py)

from bench.relay_harness import (
    CHAT_BODY,
    RelaySetup,
    chat_inner,
    free_port,
    processes,
    start_fake_upstream,
    wait_port,
)

WARMUP = 10
START_LIMIT_S = 300  # Python's start-up under valgrind (imports, cryptography) takes tens of seconds


def valgrind_argv(out_file: Path, argv: list[str]) -> list[str]:
    prefix = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--branch-sim=no",
        f"--cachegrind-out-file={out_file}",
        "--log-file=" + str(out_file.with_suffix(".log")),
    ]
    return [*prefix, *argv]


def cachegrind_total(text: str) -> int:
    """The instruction count (`Ir`) in a cachegrind output file's `summary:` line."""
    events = re.search(r"^events:\s*(.+)$", text, re.M)
    summary = re.search(r"^summary:\s*(.+)$", text, re.M)
    if not events or not summary:
        raise ValueError("not a cachegrind output file (no events:/summary: line)")
    names, values = events.group(1).split(), summary.group(1).split()
    if "Ir" not in names or len(values) != len(names):
        raise ValueError(f"no Ir count in the summary: {summary.group(0)!r}")
    return int(values[names.index("Ir")])


def per_request(total_small: int, total_large: int, n_small: int, n_large: int) -> float:
    """Instructions per request from two runs that differ only in how many requests they served."""
    if n_large <= n_small:
        raise ValueError("the larger run must serve more requests")
    return (total_large - total_small) / (n_large - n_small)


def plan(n1: int, n2: int) -> dict[str, tuple[int, int]]:
    """Run name -> (plain requests, envelope requests), after the warm-up (see the module doc)."""
    return {"A": (n1, n1), "B": (n2, n1), "C": (n1, n2)}


def figures(totals: dict[str, int], n1: int, n2: int) -> dict[str, float]:
    """Plain and envelope instructions per request from the A/B/C totals of one relay."""
    return {
        "plain": per_request(totals["A"], totals["B"], n1, n2),
        "envelope": per_request(totals["A"], totals["C"], n1, n2),
    }


class Client:
    """Sequential requests on one keep-alive connection: the same work each run, nothing concurrent."""

    def __init__(self, relay: RelaySetup) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=120)
        self.auth = {"Content-Type": "application/json", "Authorization": f"Bearer {relay.token}"}
        self.key = envelope_v2.ClientKey(relay.fernet_key)
        try:  # one sealed probe (the same in every run); a relay from before epochs names none
            epoch = relay_epoch(f"http://127.0.0.1:{relay.port}", relay.fernet_key, relay.token)
        except envelope.EnvelopeError:
            epoch = ""
        self.inner = chat_inner(relay.token, epoch)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        self.conn.request("POST", path, body, headers)
        response = self.conn.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: status {response.status}")
        return answer

    def plain(self, count: int) -> None:
        for _ in range(count):
            self._post("/v1/chat/completions", CHAT_BODY.encode(), self.auth)

    def envelopes(self, count: int) -> None:
        # Sealed beforehand (each is single-use): the sealing is the client's work, not the relay's.
        sealed = [envelope_v2.seal_request(self.key, self.inner) for _ in range(count)]
        headers = {"Content-Type": envelope_v2.CONTENT_TYPE}
        for body, nonce in sealed:
            opener = envelope_v2.ReplyOpener(self.key, nonce)
            opener.feed(self._post("/", body, headers))
            opener.close()
            if opener.head is None or opener.head[0] != 200:  # a sealed refusal (409 epoch, 403 replay)
                raise RuntimeError(f"envelope: inner status {opener.head and opener.head[0]}")


def count(python: str, work: Path, upstream: str, plain: int, envelopes: int) -> int:
    """One relay process under cachegrind: warm-up, `plain` + `envelopes` requests, SIGTERM; its Ir."""
    work.mkdir()
    relay = RelaySetup(work, upstream)
    out = work / "cachegrind.out"
    argv = [python, "-m", "llm_relay.server", "--config", str(relay.dir / "relay.toml")]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with processes() as procs, relay.log.open("wb") as log:
        proc = procs.start(valgrind_argv(out, argv), stderr=log, env=env)
        wait_port(relay.port, proc, START_LIMIT_S)
        client = Client(relay)
        client.plain(WARMUP)
        client.envelopes(WARMUP)
        client.plain(plain)
        client.envelopes(envelopes)
        client.conn.close()
        proc.send_signal(signal.SIGTERM)
        if proc.wait(START_LIMIT_S) != 0:
            raise RuntimeError(f"relay under valgrind exited with {proc.returncode}: see {work}")
    return cachegrind_total(out.read_text())


def run(pythons: dict[str, str], n1: int, n2: int, control: bool = True) -> dict[str, dict[str, float]]:
    import tempfile

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-relay-instr-") as tmp, processes() as procs:
        work = Path(tmp)
        up_port, _ = start_fake_upstream(procs, work)
        upstream = f"http://127.0.0.1:{up_port}/api/v1"
        jobs = {(name, run_name): requests for name in pythons for run_name, requests in plan(n1, n2).items()}
        if control:  # A/A: "after" measured a second time, in its own runs
            jobs |= {("after (again)", r): plan(n1, n2)[r] for r in ("A", "B")}
        print(
            f"relay_ab --instructions: cachegrind Ir, warm-up {WARMUP}+{WARMUP}, N1={n1}, N2={n2}, "
            f"{len(jobs)} runs, two at a time",
            flush=True,
        )

        def job(key: tuple[str, str]) -> int:
            name, run_name = key
            python = pythons["after" if name == "after (again)" else name]
            directory = work / f"{name.split()[0]}-{run_name}-{free_port()}"
            total = count(python, directory, upstream, *jobs[key])
            print(f"  {name} run {run_name} {jobs[key]}: {total:,} Ir", flush=True)
            return total

        with ThreadPoolExecutor(max_workers=2) as pool:
            totals = dict(zip(jobs, pool.map(job, jobs), strict=True))
    results = {name: figures({r: totals[(name, r)] for r in ("A", "B", "C")}, n1, n2) for name in pythons}
    for name, result in results.items():
        print(f"{name}: plain {result['plain']:,.0f} Ir/req, envelope v2 {result['envelope']:,.0f} Ir/req")
    for path in ("plain", "envelope"):
        ratio = results["after"][path] / results["before"][path]
        print(f"after / before ({path}, instructions per request): {ratio:.3f}")
    for name, result in results.items():
        print(
            f"{name}: envelope / plain (requests per instruction): {result['plain'] / result['envelope']:.2f}"
        )
    if control:
        again = per_request(totals[("after (again)", "A")], totals[("after (again)", "B")], n1, n2)
        results["after (again)"] = {"plain": again}
        print(
            f"A/A control (after, plain, second measurement / first): {again / results['after']['plain']:.4f}"
        )
    print(f"relay_ab --instructions took {time.monotonic() - started:.0f} s")
    return results
