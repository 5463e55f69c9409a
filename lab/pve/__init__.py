"""Proxmox VE API emulator: HTTPS :8006 `/api2/json`, backed by real LXC containers.

Component contract (lab/server.py): `start(ctx)` serves the API and returns its cleanup;
`prepare()` / `teardown()` / `status()` are the host-side hooks `python -m lab up|down|status` call.
"""

from __future__ import annotations

import logging
import subprocess

from lab import config
from lab.context import Cleanup, LabContext

log = logging.getLogger("lab.pve")


async def start(ctx: LabContext) -> Cleanup:
    from lab.pve.api import make_app
    from lab.pve.service import Pve

    pve = Pve(ctx.section("pve"), ctx.state_dir)
    _stock_templates(pve)
    await pve.recover()
    await pve.status_cache.start()
    ctx.registry["pve"] = pve
    serve_cleanup = await ctx.serve(make_app(pve), int(ctx.section("pve")["port"]))

    async def cleanup() -> None:
        await serve_cleanup()
        await pve.status_cache.stop()
        await pve.tasks.wait_all()

    return cleanup


def _stock_templates(pve) -> None:
    """Every node's `local` storage holds the cached template, as on a homelab that downloaded it once."""
    from lab.template.build import cached_template

    template = cached_template()
    if template is None:
        log.warning("no cached template: run `python -m lab up` (it builds one)")
        return
    for store in pve.storages.values():
        if not (store.template_dir / template.name).exists():
            store.install_template(template)


def prepare() -> None:
    """Host side of `lab up`: subordinate ids for unprivileged containers, the template build."""
    from lab.pve.lxc import ensure_subids
    from lab.template.build import build, cached_template

    ensure_subids()
    if cached_template() is None:
        print("lab: building the Debian 12 template (once; cached in", config.cache_dir(), ")", flush=True)
    build()


def teardown() -> None:
    """Host side of `lab down`: destroy every lab container and forget the cluster state."""
    import shutil

    lxcpath = config.lxc_path()
    if lxcpath.is_dir():
        for entry in sorted(lxcpath.iterdir()):
            if (entry / "config").exists():
                subprocess.run(
                    ["lxc-stop", "-P", str(lxcpath), "-n", entry.name, "-k"], capture_output=True, check=False
                )
            shutil.rmtree(entry, ignore_errors=True)
    pve_dir = config.state_dir() / "pve"
    (pve_dir / "cluster.json").unlink(missing_ok=True)
    shutil.rmtree(pve_dir / "storage", ignore_errors=True)


def status() -> None:
    """What the emulator holds (its cluster state), each container with its LXC state; LXC directories the
    state does not know (debris of a crash) are listed too, so `lab status` never shows less than there is."""
    from lab.pve.state import ClusterState

    lxcpath = config.lxc_path()
    state = ClusterState(config.state_dir() / "pve" / "cluster.json")
    on_disk = {e.name for e in lxcpath.iterdir() if e.is_dir()} if lxcpath.is_dir() else set()
    print(f"pve      {len(state.containers)} container(s) in the emulator's state, LXC under {lxcpath}")
    for vmid, ct in sorted(state.containers.items()):
        lock = f" lock={ct.lock}" if ct.lock else ""
        hostname = ct.conf.get("hostname", f"CT{vmid}")
        print(f"  {vmid:<6} {ct.node:<5} {hostname:<20} {_lxc_state(lxcpath, str(vmid))}{lock}")
    for orphan in sorted(on_disk - {str(v) for v in state.containers}, key=lambda n: (len(n), n)):
        where = "not in the emulator's state: LXC directory left over"
        print(f"  {orphan:<6} -     ({where}) {_lxc_state(lxcpath, orphan)}")


def _lxc_state(lxcpath, name: str) -> str:
    if not (lxcpath / name / "config").exists():
        return "stopped (no LXC config yet)"
    out = subprocess.run(
        ["lxc-info", "-P", str(lxcpath), "-n", name, "-s"], capture_output=True, text=True, check=False
    )
    if out.returncode:
        return f"stopped (LXC cannot load its config: {(out.stderr or out.stdout).strip().splitlines()[-1:]})"
    return out.stdout.split(":", 1)[-1].strip().lower() or "unknown"
