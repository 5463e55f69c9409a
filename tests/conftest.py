"""Shared session fixture `lab`: brings the lab up once (`python -m lab up`), never takes it down.

Usage: mark the test `@pytest.mark.lab` and take the `lab` fixture. Attributes:
  lab.ca_path        Path of the lab CA (verify TLS with it)
  lab.config         the parsed lab/lab.toml (dict)
  lab.host           "127.0.0.1"
  lab.<section>      any lab.toml section as an attribute namespace, plus `.url`
                     (https://127.0.0.1:<port>) when the section declares a port; e.g.
                     lab.pve.port, lab.pve.url, lab.cloudflare.url, lab.upstream.<key>
  lab.pve_*          shortcuts for the Proxmox emulator (see Lab below)
Sections others add to lab.toml appear here without editing this file.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab import config  # noqa: E402


class Lab:
    """What a lab test needs to reach the emulators."""

    host = "127.0.0.1"

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.config = cfg
        self.ca_path = config.ca_path()
        self.state_dir = config.state_dir()
        pve = cfg["pve"]
        self.nodes: list[str] = list(pve["nodes"])
        self.pve_host = self.host
        self.pve_port: int = pve["port"]
        self.pve_url = f"https://{self.host}:{self.pve_port}/api2/json"
        self.pve_user: str = pve["user"]
        self.pve_password: str = pve["password"]
        self.pve_token_id: str = pve["token_id"]
        self.pve_token_secret: str = pve["token_secret"]
        self.pve_storage: str = pve["storage"]

    def __getattr__(self, name: str) -> SimpleNamespace:
        section = self.config.get(name)
        if not isinstance(section, dict):
            raise AttributeError(name)
        ns = SimpleNamespace(**{k.replace("-", "_"): v for k, v in section.items()})
        if "port" in section:
            ns.url = f"https://{self.host}:{section['port']}"
        return ns

    def proxmox(self, auth: str = "token", **kwargs: Any):
        """A proxmoxer ProxmoxAPI (https backend, verifying the lab CA) with token or password auth."""
        from proxmoxer import ProxmoxAPI

        creds: dict[str, Any]
        if auth == "token":
            creds = {"token_name": self.pve_token_id, "token_value": self.pve_token_secret}
        else:
            creds = {"password": self.pve_password}
        return ProxmoxAPI(
            self.pve_host,
            port=self.pve_port,
            user=self.pve_user,
            backend="https",
            verify_ssl=str(self.ca_path),
            **creds,
            **{"timeout": 30, **kwargs},  # proxmoxer's 5 s is short on a loaded CI machine
        )


@pytest.fixture(scope="session")
def lab() -> Lab:
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "up"], cwd=REPO, capture_output=True, text=True, check=False
    )
    cfg = config.load()
    if proc.returncode != 0:
        # One broken component (say, mid-edit) must not fail every other suite: go on when the daemon
        # runs and only some sections are silent; tests needing those fail on their own.
        silent = [name for name, ports in config.ports(cfg).items() if not all(map(_answers, ports))]
        if len(silent) == len(config.ports(cfg)):
            pytest.fail(f"`python -m lab up` failed:\n{proc.stdout}\n{proc.stderr}")
        warnings.warn(f"lab up: not answering: {', '.join(silent)}\n{proc.stderr[-2000:]}", stacklevel=1)
    return Lab(cfg)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
