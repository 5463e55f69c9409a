"""site.yml killed at each play boundary in turn, then re-run, converges: no orphan tunnel, record, container.

One deployment for interrupt.lab.test (1 replica, container int-1) reused across the boundaries, to keep the
runtime low: run k of site.yml is killed (SIGTERM or SIGINT to its whole process group, as a terminal or a CI
runner does) the moment it prints the header of play k+1, so each re-run starts from the state the previous
one was cut at (secrets only; + containers and Python; + tunnel/record; + services; + restarts). After
every cut there is at most one tunnel, one record and `relay_replicas` containers; a final uninterrupted
run converges to exactly that and answers end to end; destroy.yml then removes everything.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import requests
import yaml
from deploy_state import LXC_PATH, LabState, harness, lxc_dirs

REPO, assert_ok, deployment = harness.REPO, harness.assert_ok, harness.deployment

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

HOSTNAME, PREFIX, REPLICAS = "interrupt.lab.test", "int-", 1
# Plays of site.yml: controller, containers + Python, tunnel, services, rolling restart, verify.
PLAYS = len(yaml.safe_load((REPO / "playbooks/site.yml").read_text()))


def run_until_play(dep, play: int, sig: signal.Signals, timeout: float = 900) -> tuple[str, int]:
    """Start site.yml and kill it when it prints the header of play number `play` (1-based).

    Returns the output and the exit status. Fails when the run ends before reaching that play.
    """
    seen = [0]

    def at_play(line: str) -> bool:
        if line.startswith("PLAY [") and not line.startswith("PLAY RECAP"):
            seen[0] += 1
        return seen[0] == play

    run, was_cut = dep.run_and_cut("site.yml", cut=at_play, sig=sig, timeout=timeout)
    output, returncode = run.output, run.returncode
    # Kept next to the deployment's secrets for a post-mortem of a failed convergence.
    (dep.secrets_dir.parent / f"cut-before-play-{play}.log").write_text(output)
    assert was_cut, f"site.yml ended before play {play}:\n{output[-6000:]}"
    return output, returncode


@pytest.fixture(scope="module")
def dep(lab, state, tmp_path_factory):
    dep = deployment(tmp_path_factory, HOSTNAME, PREFIX, REPLICAS)
    if any(vars(state.snapshot(dep)).values()):  # leftovers of a crashed earlier session
        assert_ok(dep.run("playbooks/destroy.yml", "-e", "confirm=yes"))
    try:
        yield dep
    finally:
        snap = state.snapshot(dep)
        if snap.containers or snap.tunnels or snap.records:
            dep.run("playbooks/destroy.yml", "-e", "confirm=yes")


def assert_no_orphans(state: LabState, dep, where: str) -> None:
    snap = state.snapshot(dep)
    assert len(snap.tunnels) <= 1, (where, snap.tunnels)
    assert len(snap.records) <= 1, (where, snap.records)
    assert len(snap.containers) <= REPLICAS, (where, snap.containers)


def lab_status_containers() -> dict[int, str]:
    """vmid -> the line `python -m lab status` prints for it (what the emulator holds, never less)."""
    out = subprocess.run(
        [sys.executable, "-m", "lab", "status"], cwd=REPO, capture_output=True, text=True, timeout=60
    ).stdout
    rows = [
        line.split(None, 1)
        for line in out.splitlines()
        if line.startswith("  ") and line.split()[0].isdigit()
    ]
    return {int(vmid): rest for vmid, rest in rows}


def assert_status_matches(state: LabState, dep, where: str) -> None:
    """`lab status` lists every container of the deployment the PVE API shows, with its state, and no LXC
    directory the emulator does not know."""
    listed = lab_status_containers()
    for ct in state.snapshot(dep).containers:
        assert int(ct["vmid"]) in listed, (where, ct, listed)
        assert ct["status"] in listed[int(ct["vmid"])], (where, ct, listed)
    debris = {v: line for v, line in listed.items() if "not in the emulator's state" in line}
    assert not debris, (where, debris)


def test_failed_or_cut_container_creation_leaves_nothing_half_made(lab, state, dep):
    """A create that fails inside "Proxmox" removes the half-made container; a run cut while the create
    task runs leaves a container the next run adopts; `lab status` matches the emulator all along."""
    faults = f"{lab.pve.url}/_lab/faults"
    rule = {"storage_full": True, "vmids": "100-199", "tasks": ["vzcreate"]}
    assert requests.post(faults, json=rule, verify=str(lab.ca_path), timeout=30).status_code == 200
    try:
        failed = dep.run("site.yml")
    finally:
        requests.post(faults, json={**rule, "storage_full": False}, verify=str(lab.ca_path), timeout=30)
    assert failed.returncode != 0
    assert "No space left on device" in failed.output, failed.output[-3000:]
    snap = state.snapshot(dep)
    assert snap.containers == [], snap.containers
    assert_status_matches(state, dep, "after a failed create")

    # The create task lives in the relay_containers role: its header is "TASK [<role> : <name>]".
    task = "relay_containers : Relay container exists and runs]"

    def in_create(line):
        return line.startswith("TASK [") and task in line

    run, was_cut = dep.run_and_cut("site.yml", cut=in_create, sig=signal.SIGINT, grace=1.5)
    output, returncode = run.output, run.returncode
    assert was_cut and returncode != 0, output[-3000:]
    assert_status_matches(state, dep, "right after the cut inside the create")
    assert_no_orphans(state, dep, "after the cut inside the create")

    run_until_play(dep, 3, signal.SIGTERM)  # the containers play ran to its end: it adopted the create
    snap = state.snapshot(dep)
    assert [(c["name"], c["status"]) for c in snap.containers] == [("int-1", "running")], snap.containers
    assert_status_matches(state, dep, "after the re-run")
    leftovers = [
        d.name for d in LXC_PATH.iterdir() if d.is_dir() and d.name.isdigit() and 100 <= int(d.name) < 200
    ]
    known = {int(c["vmid"]) for c in state.containers("")}
    assert [v for v in leftovers if int(v) not in known] == []


def test_killed_at_each_play_boundary_then_rerun_converges(lab, state, dep):
    signals = [signal.SIGTERM, signal.SIGINT]
    for play in range(2, PLAYS + 1):
        sig = signals[play % 2]
        started = time.monotonic()
        output, returncode = run_until_play(dep, play, sig)
        took = time.monotonic() - started
        print(f"\nkilled with {sig.name} at play {play}: exit {returncode} after {took:.0f} s")
        assert returncode != 0, output[-3000:]
        assert_no_orphans(state, dep, f"after the cut before play {play}")

    started = time.monotonic()
    final = dep.run("site.yml")
    print(f"\nuninterrupted re-run: {time.monotonic() - started:.0f} s")
    assert_ok(final)
    snap = state.snapshot(dep)
    assert [c["name"] for c in snap.containers] == ["int-1"]
    assert snap.containers[0]["status"] == "running"
    (tunnel,) = snap.tunnels
    (record,) = snap.records
    assert record["content"] == f"{tunnel['id']}.cfargotunnel.com"
    # One connector per replica: cut runs left no second cloudflared behind.
    assert len(state.connections(tunnel["id"])) == REPLICAS
    profile = dep.client_profile()
    answer = requests.post(
        dep.url + "/v1/chat/completions",
        json={"model": "lab/echo", "messages": [{"role": "user", "content": "after the cuts"}]},
        headers={"Authorization": f"Bearer {profile['token']}", **dep.access_headers()},
        verify=str(lab.ca_path),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert "after the cuts" in json.dumps(answer.json())

    vmids = snap.vmids
    assert_ok(dep.run("playbooks/destroy.yml", "-e", "confirm=yes"))
    snap = state.snapshot(dep)
    assert (snap.tunnels, snap.records, snap.containers) == ([], [], [])
    assert lxc_dirs(vmids) == []
