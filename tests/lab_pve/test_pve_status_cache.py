"""The cluster view's rules on their own (no lab): what /cluster/resources shows between two status rounds
(lab/pve/statuscache.py, after PVE's pvestatd) and the description as PVE's config file gives it back."""

from __future__ import annotations

import asyncio

import pytest

from lab.pve.configs import stored_description
from lab.pve.handlers.cluster import _guest_entry
from lab.pve.state import Container
from lab.pve.statuscache import StatusCache


class Node:
    """What a node's pvestatd would broadcast: the containers' current status, changed by the test."""

    def __init__(self) -> None:
        self.now: dict[int, dict] = {}
        self.rounds = 0

    async def measure(self, node: str) -> dict[int, dict]:
        self.rounds += 1
        return {vmid: dict(entry) for vmid, entry in self.now.items()}


def entry(cache: StatusCache, ct: Container) -> dict:
    return _guest_entry(ct, asyncio.run(cache.entries(ct.node)))


def test_a_guest_no_round_has_seen_is_unknown_without_a_name():
    node, ct = Node(), Container(vmid=9000, node="pve1", conf={"hostname": "new-ct"}, lock="create")
    cache = StatusCache(["pve1"], 10, node.measure)
    asyncio.run(cache._round("pve1"))
    node.now[9000] = {"status": "stopped", "name": "new-ct", "uptime": 0}
    shown = entry(cache, ct)
    assert shown == {"id": "lxc/9000", "vmid": 9000, "node": "pve1", "type": "lxc", "status": "unknown"} | {
        "lock": "create"  # lock and tags come from the config itself, so they are current
    }
    asyncio.run(cache._round("pve1"))
    assert entry(cache, ct)["name"] == "new-ct" and entry(cache, ct)["status"] == "stopped"


def test_the_status_lags_until_the_next_round():
    node, ct = Node(), Container(vmid=9000, node="pve1", conf={"hostname": "ct"})
    node.now[9000] = {"status": "stopped", "name": "ct", "uptime": 0}
    cache = StatusCache(["pve1"], 10, node.measure)
    asyncio.run(cache._round("pve1"))
    node.now[9000] = {"status": "running", "name": "ct", "uptime": 3}  # started
    assert entry(cache, ct)["status"] == "stopped"
    asyncio.run(cache._round("pve1"))
    assert entry(cache, ct)["status"] == "running"


def test_a_held_guest_keeps_its_last_round():
    node, ct = Node(), Container(vmid=9000, node="pve1", conf={"hostname": "ct"})
    node.now[9000] = {"status": "stopped", "name": "ct"}
    cache = StatusCache(["pve1"], 10, node.measure)
    asyncio.run(cache._round("pve1"))
    cache.hold(range(9000, 9001), 60)
    node.now[9000] = {"status": "running", "name": "ct"}
    asyncio.run(cache._round("pve1"))
    assert entry(cache, ct)["status"] == "stopped"
    cache.hold(range(9000, 9001), 0)
    asyncio.run(cache._round("pve1"))
    assert entry(cache, ct)["status"] == "running"


def test_interval_0_is_live():
    node, ct = Node(), Container(vmid=9000, node="pve1", conf={"hostname": "ct"})
    cache = StatusCache(["pve1"], 0, node.measure)
    node.now[9000] = {"status": "running", "name": "ct"}
    assert entry(cache, ct)["status"] == "running"


def test_rounds_run_on_the_schedule():
    async def scenario() -> int:
        node = Node()
        cache = StatusCache(["pve1", "pve2"], 0.05, node.measure)
        await cache.start()
        await asyncio.sleep(0.28)
        await cache.stop()
        return node.rounds

    # The first round of each node at start, then one per node every interval.
    assert 4 <= asyncio.run(scenario()) <= 14


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("relay", "relay\n"),
        ("relay\n", "relay\n"),
        ("a\nb", "a\nb\n"),
        ("a\n\nb\n\n\n", "a\n\nb\n"),
        ("\nlead", "\nlead\n"),
        ("\n\n", None),
    ],
)
def test_description_comes_back_as_pve_writes_it(sent, stored):
    """pve-container LXC/Config.pm: one `#` comment line per line, each read back with its newline."""
    assert stored_description(sent) == stored
