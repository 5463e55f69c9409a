"""proxmox_lxc's own wall time per invocation, excluding time spent waiting for Proxmox tasks and DHCP.

Runs the module's main() in this process against the lab's PVE emulator (vmid 9190, removed at the end),
the way AnsiballZ would hand it its arguments, and prints per-operation figures. Target: own time < 1.5 s.
Also prints the cold cost of importing the module in a fresh interpreter (what every real invocation pays).
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VMID = 9190
HOSTNAME = "b-lxc-bench"
TARGET_S = 1.5


COLLECTIONS = REPO / ".ansible" / "collections"  # the checkout as llm_relay.homelab (make setup links it)
FQCN = "ansible_collections.llm_relay.homelab.plugins"


def _setup_paths():
    sys.path.insert(0, str(COLLECTIONS))
    sys.path.insert(0, str(REPO))


def _load_module():
    import importlib

    return importlib.import_module(f"{FQCN}.modules.proxmox_lxc")


class Runner:
    """Invokes proxmox_lxc.main() with module args; returns (result, wall seconds, waiting seconds)."""

    def __init__(self, module, connection):
        self.module = module
        self.connection = connection
        self.clients = []
        original = module.ProxmoxClient

        runner = self

        class CountingClient(original):
            def __init__(self, params):
                super().__init__(params)
                runner.clients.append(self)

        module.ProxmoxClient = CountingClient

    def run(self, check_mode=False, **args):
        from ansible.module_utils.testing import patch_module_args

        args = dict(self.connection, **args)
        if check_mode:
            args["_ansible_check_mode"] = True
        self.clients.clear()
        out = io.StringIO()
        started = time.perf_counter()
        with patch_module_args(args), contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            self.module.main()
        wall = time.perf_counter() - started
        waited = sum(c.wait_seconds for c in self.clients)
        result = json.loads(out.getvalue())
        if result.get("failed"):
            raise RuntimeError(f"proxmox_lxc failed: {result.get('msg')}")
        return result, wall, waited


def _cold_import_seconds():
    """Fresh interpreter importing the module (with proxmoxer/requests) minus a bare interpreter start."""
    code = f"import sys; sys.path.insert(0, {str(COLLECTIONS)!r}); import {FQCN}.modules.proxmox_lxc"

    def best(argv, n=3):
        times = []
        for _ in range(n):
            started = time.perf_counter()
            subprocess.run(argv, check=True)
            times.append(time.perf_counter() - started)
        return min(times)

    bare = best([sys.executable, "-c", "import ansible.module_utils.basic"])
    full = best([sys.executable, "-c", code])
    return bare, full


def _lab_connection():
    sys.path.insert(0, str(REPO))
    from lab import config

    # Another component failing to start does not stop this bench: it only needs the PVE emulator.
    subprocess.run([sys.executable, "-m", "lab", "up"], cwd=REPO, check=False, capture_output=True)
    cfg = config.load()["pve"]
    return {
        "api_host": "127.0.0.1",
        "api_port": cfg["port"],
        "api_user": cfg["user"],
        "api_token_id": cfg["token_id"],
        "api_token_secret": cfg["token_secret"],
        "ca_path": str(config.ca_path()),
    }, cfg


def _template(connection, node):
    from ansible_collections.llm_relay.homelab.plugins.module_utils.proxmox import ProxmoxClient

    client = ProxmoxClient(connection)
    content = client.get(f"nodes/{node}/storage/local/content", content="vztmpl") or []
    volids = sorted(c["volid"] for c in content if "debian-12" in c.get("volid", ""))
    if not volids:
        raise SystemExit("bench module_proxmox: the lab has no debian-12 template on storage local")
    return volids[-1]


def main(argv=None):
    _setup_paths()
    connection, pve = _lab_connection()
    node = pve["nodes"][0]
    template = _template(connection, node)
    module = _load_module()
    runner = Runner(module, connection)
    ident = {"vmid": VMID, "hostname": HOSTNAME, "timeout": 120}
    rows = []

    def measure(label, times=1, **args):
        for _ in range(times):
            result, wall, waited = runner.run(**args)
            rows.append((label, wall, waited, result.get("changed")))

    try:
        runner.run(state="absent", **ident)  # a leftover from an interrupted run
        measure("create (present)", node=node, ostemplate=template, state="present", tags=["bench"], **ident)
        measure("no change", times=5, state="present", memory_mb=512, tags=["bench"], **ident)
        for i in range(4):
            measure(
                "update memory+tags",
                state="present",
                memory_mb=512 + 128 * ((i % 2) + 1),
                tags=["bench"],
                **ident,
            )
        measure("check-mode change", times=3, check_mode=True, state="present", memory_mb=2048, **ident)
        measure("start", state="started", **ident)
        measure("no change (running)", times=3, state="started", **ident)
        measure("absent", state="absent", **ident)
    finally:
        with contextlib.suppress(Exception):
            runner.run(state="absent", **ident)

    print(
        f"proxmox_lxc own time per invocation (wall minus waiting for tasks/DHCP); target < {TARGET_S:.1f} s"
    )
    print(f"{'operation':<24}{'wall s':>9}{'waiting s':>11}{'own s':>8}  changed")
    for label, wall, waited, changed in rows:
        print(f"{label:<24}{wall:9.3f}{waited:11.3f}{wall - waited:8.3f}  {changed}")
    own = [wall - waited for _label, wall, waited, _c in rows]
    print(f"own time: median {statistics.median(own):.3f} s, max {max(own):.3f} s (target < {TARGET_S} s)")
    bare, full = _cold_import_seconds()
    print(
        f"cold import in a fresh interpreter: {full:.3f} s (bare interpreter + ansible.module_utils.basic:"
        f" {bare:.3f} s; the module and proxmoxer add {full - bare:.3f} s)"
    )
    print(f"worst own time + module import: {max(own) + (full - bare):.3f} s of the {TARGET_S} s budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
