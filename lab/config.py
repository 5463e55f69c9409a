"""Lab constants and lab.toml loading. Paths follow CONTRIBUTING.md; env vars override for tests."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

LAB_TOML = Path(__file__).with_name("lab.toml")
BRIDGE = "vmbr0"
BRIDGE_ADDR = "10.87.0.1"
BRIDGE_CIDR = "10.87.0.1/24"
SUBNET = "10.87.0.0/24"
DHCP_RANGE = ("10.87.0.100", "10.87.0.199")


def state_dir() -> Path:
    return Path(os.environ.get("LAB_STATE_DIR", "/var/lib/llm-relay-lab"))


def cache_dir() -> Path:
    return Path(os.environ.get("LAB_CACHE_DIR", "/var/cache/llm-relay-lab"))


def lxc_path() -> Path:
    return state_dir() / "lxc"


def ca_path() -> Path:
    return state_dir() / "ca" / "ca.crt"


def live_pid(pidfile: Path) -> int | None:
    """The pid in `pidfile` if that process is alive, else None."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def load(path: Path | None = None) -> dict[str, Any]:
    """Parse lab.toml (or LAB_CONFIG) into a plain dict."""
    path = path or Path(os.environ.get("LAB_CONFIG", LAB_TOML))
    with path.open("rb") as fh:
        return tomllib.load(fh)


def ports(cfg: dict[str, Any]) -> dict[str, list[int]]:
    """Every TCP port the daemon must answer on, by section: a section declares `port` or `ports`."""
    out: dict[str, list[int]] = {}
    for name, section in cfg.items():
        if not isinstance(section, dict):
            continue
        found = list(section.get("ports", []))
        if "port" in section:
            found.insert(0, section["port"])
        if found:
            out[name] = [int(p) for p in found]
    return out
