"""`python -m lab up|down|status|restart|serve|demo` — the lab's command line.

`up` is idempotent: host network + CA when missing, each component's optional host-side `prepare()`
(e.g. the PVE template build), the daemon when not running; then it waits until every configured
port answers. `down` stops the daemon, runs each component's optional `teardown()` (the PVE emulator
destroys its containers) and removes bridge, NAT and dnsmasq.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lab import ca, config, hosts, net, preflight, server


def _pidfile() -> Path:
    return config.state_dir() / "lab.pid"


def _logfile() -> Path:
    return config.state_dir() / "lab.log"


def daemon_pid() -> int | None:
    return config.live_pid(_pidfile())


def _port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _component_hook(name: str) -> None:
    for component in server.COMPONENTS:
        hook = getattr(importlib.import_module(component), name, None)
        if callable(hook):
            hook()


def start_daemon() -> int:
    pid = daemon_pid()
    if pid:
        return pid
    config.state_dir().mkdir(parents=True, exist_ok=True)
    with _logfile().open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lab", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    _pidfile().write_text(f"{proc.pid}\n")
    return proc.pid


def stop_daemon(timeout: float = 20) -> None:
    pid = daemon_pid()
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while daemon_pid() and time.monotonic() < deadline:
            time.sleep(0.1)
        if daemon_pid():
            os.kill(pid, signal.SIGKILL)
    _pidfile().unlink(missing_ok=True)


def wait_ports(cfg: dict, timeout: float) -> list[str]:
    """Wait until every configured port answers; returns the sections still silent."""
    wanted = config.ports(cfg)
    deadline = time.monotonic() + timeout
    while True:
        silent = [n for n, ports in wanted.items() if not all(_port_answers(p) for p in ports)]
        if not silent or time.monotonic() > deadline or not daemon_pid():
            return silent
        time.sleep(0.2)


def _daemon_outdated() -> bool:
    """True when lab.toml or any lab source changed after the running daemon started."""
    here = Path(__file__).resolve().parent
    sources = [here / "lab.toml", *here.rglob("*.py")]
    newest = max(p.stat().st_mtime for p in sources if p.exists())
    return _pidfile().stat().st_mtime < newest


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """One `up`/`down`/`restart` at a time (test sessions run `lab up` concurrently)."""
    config.state_dir().mkdir(parents=True, exist_ok=True)
    with (config.state_dir() / "lab.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def cmd_up(_args: argparse.Namespace) -> int:
    if preflight.main():
        return 2
    cfg = config.load()
    net.up()
    hosts.ensure(cfg)
    ca.ensure(config.state_dir() / "ca")
    _component_hook("prepare")
    if daemon_pid() and _daemon_outdated():
        # The lab's code or config changed since the daemon started (a component was added or
        # fixed): restart it (component state lives on disk and in LXC). A daemon whose component
        # is broken in the current code is left alone, so test sessions do not restart it in a loop.
        silent = [n for n, ports in config.ports(cfg).items() if not all(_port_answers(p) for p in ports)]
        if silent:
            print(f"lab: restarting the daemon ({', '.join(silent)} not answering, lab code changed since)")
            stop_daemon()
    pid = start_daemon()
    silent = wait_ports(cfg, float(cfg.get("lab", {}).get("up_timeout", 90)))
    if silent:
        print(f"lab: not answering: {', '.join(silent)} (log: {_logfile()})", file=sys.stderr)
        _print_log_tail()
        return 1
    print(f"lab up (pid {pid}); CA {config.ca_path()}")
    for name, ports in config.ports(cfg).items():
        print(f"  {name:<12} {', '.join(f'https://127.0.0.1:{p}' for p in ports)}")
    return 0


def cmd_down(_args: argparse.Namespace) -> int:
    stop_daemon()
    _component_hook("teardown")
    net.down()
    hosts.remove()
    print("lab down")
    return 0


def cmd_restart(_args: argparse.Namespace) -> int:
    stop_daemon()
    return cmd_up(_args)


def cmd_status(_args: argparse.Namespace) -> int:
    cfg = config.load()
    pid = daemon_pid()
    print(f"daemon   {f'running (pid {pid})' if pid else 'stopped'}  log {_logfile()}")
    print(f"bridge   {config.BRIDGE} {'up ' + config.BRIDGE_CIDR if net.bridge_up() else 'down'}")
    dns = net.dnsmasq_pid()
    print(f"dnsmasq  {f'running (pid {dns})' if dns else 'stopped'}")
    ok = bool(pid)
    for name, ports in config.ports(cfg).items():
        states = [f"{p}:{'up' if _port_answers(p) else 'DOWN'}" for p in ports]
        ok = ok and all(s.endswith(":up") for s in states)
        print(f"  {name:<12} {' '.join(states)}")
    _component_hook("status")
    return 0 if ok else 3


def cmd_serve(_args: argparse.Namespace) -> int:
    server.main()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    demo = importlib.import_module("lab.demo")
    return int(demo.main(args.rest) or 0)


def _print_log_tail(lines: int = 30) -> None:
    try:
        tail = _logfile().read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return
    print("\n".join(tail), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, func in [
        ("up", cmd_up),
        ("down", cmd_down),
        ("status", cmd_status),
        ("restart", cmd_restart),
        ("serve", cmd_serve),
    ]:
        sub.add_parser(name, help=(func.__doc__ or name)).set_defaults(func=func)
    demo = sub.add_parser("demo", help="run the end-to-end demo (lab/demo)")
    demo.add_argument("rest", nargs=argparse.REMAINDER)
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    if args.cmd in ("up", "down", "restart"):
        with _exclusive():
            return args.func(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
