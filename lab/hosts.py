"""The lab's public hostnames resolve to the lab edge on loopback, through a marked block in /etc/hosts.

On the real Internet `relay.example.com` resolves to Cloudflare's edge; in the lab the edge listens on
127.0.0.1:9443, so `lab up` adds `127.0.0.1 relay.lab.test` (and the other names of `[lab] hostnames`)
between two marker lines, and `lab down` removes exactly that block. Nothing else in the file is touched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HOSTS = Path(os.environ.get("LAB_HOSTS_FILE", "/etc/hosts"))
BEGIN = "# BEGIN llm-relay-lab (managed by `python -m lab up`; removed by `lab down`)"
END = "# END llm-relay-lab"


def hostnames(cfg: dict[str, Any]) -> list[str]:
    zone = cfg.get("cloudflare", {}).get("zone", "lab.test")
    return list(cfg.get("lab", {}).get("hostnames", [f"relay.{zone}"]))


def _without_block(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line == BEGIN:
            inside = True
        elif line == END:
            inside = False
        elif not inside:
            lines.append(line)
    return lines


def _write(lines: list[str]) -> None:
    # In place (not rename): /etc/hosts is often a bind mount in containers and sandboxes.
    content = "\n".join(lines) + "\n"
    if HOSTS.read_text(encoding="utf-8") != content:
        HOSTS.write_text(content, encoding="utf-8")


def ensure(cfg: dict[str, Any]) -> None:
    block = [BEGIN, *(f"127.0.0.1 {name}" for name in hostnames(cfg)), END]
    _write(_without_block(HOSTS.read_text(encoding="utf-8")) + block)


def remove() -> None:
    _write(_without_block(HOSTS.read_text(encoding="utf-8")))
