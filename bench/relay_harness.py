"""Shared plumbing for the relay benches: temp config, nginx, the relay process, wrk, CPU pinning.

Everything binds 127.0.0.1 on free ports and runs in the foreground under our control; every process is
stopped by its own pid when the bench ends. Core placement: the system under test gets core 1, load
generator and fake upstream get core 0 (`taskset`), so "same core" comparisons are like for like.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from llm_relay import envelope, envelope_v2, tokens
from llm_relay.client.codec_v2 import relay_epoch  # envelopes name the relay process (replay.py)

REPO = Path(__file__).resolve().parent.parent
SUT_CPU = "1"
LOAD_CPU = "0"
UPSTREAM_KEY = "sk-bench-upstream-key"
CHAT_BODY = (
    '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the relay bench"}],'
    '"max_tokens":16}'
)
COMPLETION = (
    '{"id":"gen-bench-1","object":"chat.completion","created":1700000000,"model":"openai/gpt-4o-mini",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello, relay bench!"},'
    '"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}'
)
# The interpreter that runs the relay under test (`--relay-python`; "deployed" = deployed_python()).
RELAY_PYTHON = sys.executable
DEPLOYED_VENV = REPO / ".cache" / "bench-deployed-venv"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, limit_s: float = 20) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


# Benches may turn pinning off (--no-pin): on a shared machine a pinned process cannot flee a busy core.
PIN = True


def pinned(cpu: str, argv: list[str]) -> list[str]:
    """Pin to one core when pinning is on, taskset exists and the core does (CI boxes may have one core)."""
    if PIN and shutil.which("taskset") and int(cpu) < (os.cpu_count() or 1):
        return ["taskset", "-c", cpu, *argv]
    return argv


class Processes:
    """Starts background processes and stops exactly those, by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


def write_nginx_conf(work: Path, name: str, server_block: str, http_extra: str = "") -> Path:
    """A foreground nginx config confined to `work` (pid, temp dirs and logs inside it)."""
    root = work / name
    root.mkdir()
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 1000000;
    {http_extra}
    server {{
        {server_block}
    }}
}}
"""
    )
    return conf


def start_nginx(procs: Processes, conf: Path, cpu: str, port: int) -> subprocess.Popen:
    """nginx in the foreground (master + one worker); returns the master's Popen."""
    proc = procs.start(
        pinned(cpu, ["nginx", "-c", str(conf), "-p", str(conf.parent)]), stderr=subprocess.DEVNULL
    )
    wait_port(port, proc)
    return proc


def start_fake_upstream(procs: Processes, work: Path) -> tuple[int, subprocess.Popen]:
    """nginx answering a fixed chat completion: fast enough never to be the bottleneck."""
    port = free_port()
    body = COMPLETION.replace("'", "\\'")
    conf = write_nginx_conf(
        work,
        "upstream",
        f"""
        listen 127.0.0.1:{port};
        access_log off;
        location / {{ default_type application/json; return 200 '{body}'; }}
        """,
    )
    return port, start_nginx(procs, conf, LOAD_CPU, port)


def start_nginx_proxy(procs: Processes, work: Path, upstream_port: int) -> tuple[int, subprocess.Popen]:
    """The reference: nginx adding the provider key (`proxy_set_header Authorization`), keep-alive pool."""
    port = free_port()
    conf = write_nginx_conf(
        work,
        "proxy",
        f"""
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://provider;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {UPSTREAM_KEY}";
            proxy_buffering off;
        }}
        """,
        http_extra=f"upstream provider {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}",
    )
    return port, start_nginx(procs, conf, SUT_CPU, port)


class RelaySetup:
    """Config dir + secrets for a relay process pointing at `base_url`."""

    def __init__(self, work: Path, base_url: str, extra_provider: str = "") -> None:
        self.dir = work / "relay"
        self.dir.mkdir()
        self.token = tokens.generate_token()
        self.fernet_key = envelope.generate_key()
        self.port = free_port()
        for name, text in (
            ("client-tokens", tokens.format_token_line("bench", self.token)),
            ("fernet-keys", self.fernet_key),
            ("client-keys", f"bench:{self.fernet_key}"),  # envelope v2: the client's own key
            ("openrouter-keys", UPSTREAM_KEY),
        ):
            path = self.dir / name
            path.write_text(text + "\n")
            path.chmod(0o600)
        (self.dir / "relay.toml").write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
metrics_listen = ""
access_log = true
drain_timeout = 2

[auth]
rate_limit_per_minute = 0

[envelope]
# On here only: envelope v1's throughput is measured beside v2's (relay_throughput); relays refuse it by
# default and so does the relay role.
accept_v1 = true

[providers.openrouter]
base_url = "{base_url}"
max_idle_connections = 2048
{extra_provider}
"""
        )
        self.log = self.dir / "access.log"

    def start(self, procs: Processes, cpu: str | None = SUT_CPU) -> subprocess.Popen:
        argv = [RELAY_PYTHON, "-m", "llm_relay.server", "--config", str(self.dir / "relay.toml")]
        with self.log.open("wb") as log:
            proc = procs.start(pinned(cpu, argv) if cpu else argv, stderr=log)
        wait_port(self.port, proc)
        return proc


def deployed_python() -> str:
    """A venv on the distro's python3 with the relay and uvloop: what the relay role installs on a
    Debian 12 container. Debian builds CPython with PGO+LTO; a default pyenv build (this project's .venv
    on the dev machines) runs the relay ~20 % slower, so the interpreter matters to the figures."""
    python = DEPLOYED_VENV / "bin" / "python"
    if not SYSTEM_PYTHON.exists():
        raise SystemExit(f"--relay-python deployed needs {SYSTEM_PYTHON}")
    if not python.exists():
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(DEPLOYED_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"{REPO / 'relay'}[fast]"], check=True)
    return str(python)


def set_relay_python(choice: str | None) -> None:
    global RELAY_PYTHON
    if choice == "deployed":
        RELAY_PYTHON = deployed_python()
    elif choice:
        RELAY_PYTHON = choice
    version = subprocess.run(
        [RELAY_PYTHON, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"relay interpreter: {RELAY_PYTHON} (Python {version})")


def post_lua(work: Path, name: str, path: str, body: str, headers: dict[str, str]) -> Path:
    script = work / f"{name}.lua"
    lines = ['wrk.method = "POST"', f'wrk.path = "{path}"', f"wrk.body = [[{body}]]"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    return script


def chat_inner(token: str, epoch: str) -> envelope.InnerRequest:
    """The chat completion every envelope benchmark seals (epoch: the relay process it is meant for)."""
    return envelope.InnerRequest(
        "POST", "/v1/chat/completions", "", {"Content-Type": "application/json"}, CHAT_BODY.encode(),
        token=token, epoch=epoch,
    )  # fmt: skip


def envelope_lua(work: Path, relay: RelaySetup, count: int, name: str) -> Path:
    """wrk script cycling through `count` distinct envelopes (a replayed one would be refused)."""
    fernet = envelope.make_fernet([relay.fernet_key])
    inner = chat_inner(
        relay.token, relay_epoch(f"http://127.0.0.1:{relay.port}", relay.fernet_key, relay.token)
    )
    bodies = work / f"envelopes-{name}.txt"
    with bodies.open("wb") as f:
        for _ in range(count):
            f.write(envelope.seal_request(fernet, inner) + b"\n")
    script = work / f"envelope-{name}.lua"
    script.write_text(
        f"""
local bodies = {{}}
for line in io.lines("{bodies}") do bodies[#bodies + 1] = line end
local i = 0
local headers = {{["Content-Type"] = "{envelope.CONTENT_TYPE}"}}
request = function()
  i = i + 1
  if i > #bodies then i = 1 end
  return wrk.format("POST", "/envelope", headers, bodies[i])
end
"""
    )
    return script


def envelope_v2_lua(work: Path, relay: RelaySetup, count: int, name: str) -> Path:
    """wrk script cycling through `count` distinct v2 envelopes, read from a file of length-prefixed
    binary bodies (they may hold any byte, newlines included)."""
    key = envelope_v2.ClientKey(relay.fernet_key)
    inner = chat_inner(
        relay.token, relay_epoch(f"http://127.0.0.1:{relay.port}", relay.fernet_key, relay.token)
    )
    bodies = work / f"envelopes-v2-{name}.bin"
    with bodies.open("wb") as f:
        for _ in range(count):
            body = envelope_v2.seal_request(key, inner)[0]
            f.write(len(body).to_bytes(4, "big") + body)
    script = work / f"envelope-v2-{name}.lua"
    script.write_text(
        f"""
local bodies = {{}}
local f = assert(io.open("{bodies}", "rb"))
while true do
  local n = f:read(4)
  if not n then break end
  local a, b, c, d = n:byte(1, 4)
  bodies[#bodies + 1] = f:read(((a * 256 + b) * 256 + c) * 256 + d)
end
f:close()
local i = 0
local headers = {{["Content-Type"] = "{envelope_v2.CONTENT_TYPE}"}}
request = function()
  i = i + 1
  if i > #bodies then i = 1 end
  return wrk.format("POST", "/", headers, bodies[i])
end
"""
    )
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk(url: str, script: Path, connections: int, seconds: float, pid: int | None = None) -> dict:
    """Run wrk (pinned to the load core); parse req/s, p50/p99 latency (ms), errors.

    With `pid`, also the CPU time that process (tree) spent per request: unlike req/s this does not depend
    on how busy the shared machine was, so it is the steadier figure for comparing designs.
    """
    cpu_before = tree_cpu_seconds(pid) if pid else 0.0
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(pinned(LOAD_CPU, argv), capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{pct}"] = _ms(m.group(1)) if m else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = sum(int(x) for x in errors.groups()) if errors else 0
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    if pid:
        used = tree_cpu_seconds(pid) - cpu_before
        result["cpu_us"] = used / result["requests"] * 1e6 if result["requests"] else float("nan")
    return result


def tree_cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of `pid` and its direct children (nginx master + worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(fields[1])
        if int(entry.name) == pid or ppid == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set, in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
