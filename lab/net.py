"""The lab network: bridge vmbr0 (10.87.0.1/24), dnsmasq DHCP, NAT out for apt. Idempotent both ways.

The host has no systemd/networkd, so the lab brings all of it up itself and removes it on `lab down`.
Every iptables rule carries the comment `llm-relay-lab` so teardown deletes exactly ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from lab import config

TAG = ["-m", "comment", "--comment", "llm-relay-lab"]
_ESTABLISHED = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]
RULES: list[tuple[str, list[str]]] = [
    ("nat", ["POSTROUTING", "-s", config.SUBNET, "!", "-d", config.SUBNET, *TAG, "-j", "MASQUERADE"]),
    ("filter", ["FORWARD", "-i", config.BRIDGE, *TAG, "-j", "ACCEPT"]),
    ("filter", ["FORWARD", "-o", config.BRIDGE, *_ESTABLISHED, *TAG, "-j", "ACCEPT"]),
]


def net_dir() -> Path:
    return config.state_dir() / "net"


def leases_file() -> Path:
    return net_dir() / "dnsmasq.leases"


def _pidfile() -> Path:
    return net_dir() / "dnsmasq.pid"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def bridge_up() -> bool:
    out = _run("ip", "-4", "-o", "addr", "show", "dev", config.BRIDGE, check=False)
    return out.returncode == 0 and f" {config.BRIDGE_CIDR} " in out.stdout


def dnsmasq_pid() -> int | None:
    return config.live_pid(_pidfile())


def up() -> None:
    net_dir().mkdir(parents=True, exist_ok=True)
    if _run("ip", "link", "show", config.BRIDGE, check=False).returncode != 0:
        _run("ip", "link", "add", config.BRIDGE, "type", "bridge")
    if not bridge_up():
        _run("ip", "addr", "add", config.BRIDGE_CIDR, "dev", config.BRIDGE)
    _run("ip", "link", "set", config.BRIDGE, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    for table, rule in RULES:
        if _run("iptables", "-t", table, "-C", *rule, check=False).returncode != 0:
            _run("iptables", "-t", table, "-A", *rule)
    if dnsmasq_pid() is None:
        _start_dnsmasq()


def _start_dnsmasq() -> None:
    lo, hi = config.DHCP_RANGE
    _run(
        "dnsmasq",
        "--conf-file=/dev/null",
        "--strict-order",
        "--bind-interfaces",
        f"--interface={config.BRIDGE}",
        "--except-interface=lo",
        f"--listen-address={config.BRIDGE_ADDR}",
        f"--dhcp-range={lo},{hi},255.255.255.0,1h",
        "--dhcp-authoritative",
        "--dhcp-no-override",
        f"--dhcp-option=option:router,{config.BRIDGE_ADDR}",
        f"--dhcp-option=option:dns-server,{config.BRIDGE_ADDR}",
        f"--dhcp-leasefile={leases_file()}",
        f"--pid-file={_pidfile()}",
        f"--log-facility={net_dir() / 'dnsmasq.log'}",
    )
    for _ in range(50):
        if dnsmasq_pid():
            return
        time.sleep(0.1)
    raise RuntimeError("dnsmasq did not start; see " + str(net_dir() / "dnsmasq.log"))


def down() -> None:
    pid = dnsmasq_pid()
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if dnsmasq_pid() is None:
                break
            time.sleep(0.1)
    _pidfile().unlink(missing_ok=True)
    leases_file().unlink(missing_ok=True)
    for table, rule in RULES:
        while _run("iptables", "-t", table, "-C", *rule, check=False).returncode == 0:
            _run("iptables", "-t", table, "-D", *rule)
    if _run("ip", "link", "show", config.BRIDGE, check=False).returncode == 0:
        _run("ip", "link", "del", config.BRIDGE)


def leases() -> list[dict[str, str]]:
    """Current dnsmasq leases: expiry, mac, ip, hostname."""
    try:
        lines = leases_file().read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 4:
            out.append({"expiry": parts[0], "mac": parts[1].lower(), "ip": parts[2], "hostname": parts[3]})
    return out


def release_lease(mac: str) -> None:
    """Drop every lease of `mac` (DHCPRELEASE to dnsmasq) so a deleted container leaves none behind."""
    for lease in leases():
        if lease["mac"] == mac.lower():
            _run("dhcp_release", config.BRIDGE, lease["ip"], lease["mac"], check=False)
    for _ in range(20):
        if not any(lease["mac"] == mac.lower() for lease in leases()):
            return
        time.sleep(0.1)
