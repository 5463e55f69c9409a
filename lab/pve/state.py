"""Cluster state the emulator owns: which vmid lives on which node, with its PVE-style config.

Persisted as JSON in the state dir (atomic replace) so `lab restart` keeps it; the containers
themselves live in LXC. Config values keep PVE's wire form (strings/ints as PVE returns them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.pve import faults


@dataclass
class Container:
    vmid: int
    node: str
    conf: dict[str, Any] = field(default_factory=dict)
    lock: str | None = None
    # Changes PVE cannot apply to a running container: key -> new value (None = pending delete).
    pending: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """SHA1 over the config as PVE writes it (`key: value` lines + [pending]), like PVE's `digest`."""
        text = "".join(f"{k}: {v}\n" for k, v in sorted(self.conf.items()))
        if self.pending:
            text += "[pending]\n" + "".join(f"{k}: {v}\n" for k, v in sorted(self.pending.items()))
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


class ClusterState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.containers: dict[int, Container] = {}
        self.faults: dict[str, Any] = {}
        if path.exists():
            data = json.loads(path.read_text())
            self.containers = {int(k): Container(**v) for k, v in data.get("containers", {}).items()}
            self.faults = faults.normalize(data.get("faults", {}))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "containers": {str(k): asdict(v) for k, v in sorted(self.containers.items())},
            "faults": self.faults,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.path)

    def with_pending(self, ct: Container) -> dict[str, Any]:
        """The config as `GET config` shows it by default: pending values applied."""
        merged = dict(ct.conf)
        for key, value in ct.pending.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    def on_node(self, node: str) -> list[Container]:
        return [c for c in self.containers.values() if c.node == node]
