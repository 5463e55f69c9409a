"""The guests' status as the cluster last heard it: what `/cluster/resources` shows between two rounds.

On PVE, /cluster/resources does not ask the containers. pve-manager PVE/API2/Cluster.pm `resources`
lists every guest of the cluster's vmlist (fresh: the config files in pmxcfs) and fills it with
PVE/API2Tools.pm extract_vm_stats from the RRD data each node's pvestatd broadcasts
(PVE/Service/pvestatd.pm update_lxc_status, run every $updatetime = 10 s). A guest no round has seen
yet has `status: unknown` and no name; after a start or stop the old status stays until the node's next
round. Only `lock` and `tags` are read from the config (get_guest_config_properties), so they are fresh.

Here one loop per node takes that round every `[pve] status_interval` seconds (10 as on PVE; 0 turns
the cache off: every call computes the status live). The nodes' rounds are spread over the interval,
as independent pvestatd daemons are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("lab.pve.statuscache")

# PVE/API2Tools.pm extract_vm_stats: what a broadcast round carries into a guest's entry.
ROUND_KEYS = (
    "uptime",
    "name",
    "status",
    "template",
    "maxcpu",
    "cpu",
    "maxmem",
    "mem",
    "maxdisk",
    "disk",
    "netin",
    "netout",
    "diskread",
    "diskwrite",
)

Measure = Callable[[str], Awaitable[dict[int, dict[str, Any]]]]


class StatusCache:
    def __init__(self, nodes: list[str], interval: float, measure: Measure) -> None:
        self.nodes = nodes
        self.interval = interval
        self.measure = measure  # node -> {vmid: entry fields}, what pvestatd would broadcast now
        self.rounds: dict[str, dict[int, dict[str, Any]]] = {n: {} for n in nodes}
        # Lab control (/_lab/status_hold): vmid -> monotonic expiry. A held guest keeps the entry of the
        # round before, so a test sees a status lag for as long as it needs, whatever the round's phase.
        self.held: dict[int, float] = {}
        self._loops: list[asyncio.Task[None]] = []

    @property
    def live(self) -> bool:
        return self.interval <= 0

    async def start(self) -> None:
        if self.live:
            return
        for index, node in enumerate(self.nodes):
            # The first round at once (a daemon restart must not blank a running cluster's view; on PVE
            # the RRD data survives a pveproxy restart), then every interval, nodes out of phase.
            await self._round(node)
            offset = self.interval * index / max(1, len(self.nodes))
            self._loops.append(asyncio.create_task(self._loop(node, offset)))

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()

    async def _loop(self, node: str, offset: float) -> None:
        await asyncio.sleep(offset)
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._round(node)
            except Exception:  # pvestatd logs a failed round and tries again at the next one
                log.exception("status round of %s failed", node)

    async def _round(self, node: str) -> None:
        fresh = await self.measure(node)
        now = time.monotonic()
        self.held = {v: until for v, until in self.held.items() if until > now}
        before = self.rounds.get(node, {})
        for vmid in self.held:
            fresh.pop(vmid, None)
            if vmid in before:
                fresh[vmid] = before[vmid]
        self.rounds[node] = fresh

    def hold(self, vmids: range, seconds: float) -> None:
        until = time.monotonic() + seconds
        for vmid in vmids:
            if seconds > 0:
                self.held[vmid] = until
            else:
                self.held.pop(vmid, None)

    async def entries(self, node: str) -> dict[int, dict[str, Any]]:
        """The last round of `node` (live when the cache is off)."""
        if self.live:
            return await self.measure(node)
        return self.rounds.get(node, {})
