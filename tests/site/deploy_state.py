"""What one deployment left in the lab: tunnels, DNS records and containers, read through the emulators' APIs.

Used by the site, interrupted-run and destroy checks (tests/site/test_site.py, test_interrupted.py) to prove
convergence ("exactly one tunnel, one record, N containers") and teardown ("nothing left anywhere").
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from proxmoxer.core import ResourceException

LXC_PATH = Path("/var/lib/llm-relay-lab/lxc")


def _harness():
    """tests/site/conftest.py under its own name: `from conftest import` may find another suite's."""
    name = "site_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("conftest.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


harness = _harness()


@dataclass
class Snapshot:
    tunnels: list[dict[str, Any]]  # live (not deleted) tunnels with the deployment's tunnel name
    records: list[dict[str, Any]]  # DNS records named like the public hostname
    containers: list[dict[str, Any]]  # PVE containers whose hostname starts with the deployment's prefix

    @property
    def vmids(self) -> list[int]:
        return sorted(int(c["vmid"]) for c in self.containers)


class LabState:
    """Reads the Cloudflare and Proxmox emulators with the lab's admin credentials (what the modules use)."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.cf_base = lab.cloudflare.url + "/client/v4"
        self.account = lab.cloudflare.account_id
        self.cf_headers = {"Authorization": f"Bearer {lab.cloudflare.api_token}"}
        self.verify = str(lab.ca_path)

    def _cf(self, path: str, **params: Any) -> Any:
        # The lab daemon may be restarted by another suite mid-run: retry a connection blip.
        for attempt in range(10):
            try:
                answer = requests.get(
                    self.cf_base + path,
                    headers=self.cf_headers,
                    params=params,
                    verify=self.verify,
                    timeout=30,
                ).json()
                break
            except requests.ConnectionError:
                if attempt == 9:
                    raise
                time.sleep(2)
        assert answer["success"], answer["errors"]
        return answer["result"]

    def tunnels(self, name: str) -> list[dict[str, Any]]:
        return self._cf(f"/accounts/{self.account}/cfd_tunnel", name=name, is_deleted="false")

    def connections(self, tunnel_id: str) -> list[dict[str, Any]]:
        return self._cf(f"/accounts/{self.account}/cfd_tunnel/{tunnel_id}/connections")

    def records(self, hostname: str) -> list[dict[str, Any]]:
        (zone,) = self._cf("/zones", name=self.lab.cloudflare.zone)
        return self._cf(f"/zones/{zone['id']}/dns_records", name=hostname)

    def _access(self, kind: str, **params: Any) -> list[dict[str, Any]]:
        """Every Access object of one kind (apps, policies, service_tokens), all pages."""
        found: list[dict[str, Any]] = []
        for page in range(1, 100):
            chunk = self._cf(f"/accounts/{self.account}/access/{kind}", page=page, per_page=100, **params)
            found += chunk
            if len(chunk) < 100:
                return found
        raise AssertionError(f"more than 9900 Access {kind}")

    def access_objects(self, dep) -> dict[str, list[dict[str, Any]]]:
        """The Access application covering the deployment's hostname, and the policy and service token
        named after it (playbooks/vars/api_auth.yml: `llm-relay <hostname>`)."""
        name = f"llm-relay {dep.hostname}"
        return {
            "apps": self._access("apps", domain=dep.hostname),
            "policies": [p for p in self._access("policies") if p["name"] == f"{name} service auth"],
            "service_tokens": self._access("service_tokens", name=name),
        }

    def containers(self, prefix: str) -> list[dict[str, Any]]:
        for attempt in range(10):
            try:
                resources = self.lab.proxmox().cluster.resources.get(type="vm")
                break
            except Exception:
                if attempt == 9:
                    raise
                time.sleep(2)
        # PVE fills a guest's name and status in /cluster/resources from its node's last status round
        # (every 10 s; lab/pve/statuscache.py): read a nameless one's config, and each one's own status.
        px = self.lab.proxmox()
        ours = []
        for res in resources:
            ct = px.nodes(res["node"]).lxc(res["vmid"])
            try:
                if "name" not in res:
                    res["name"] = ct.config.get().get("hostname", "")
                if str(res["name"]).startswith(prefix):
                    res["status"] = ct.status.current.get()["status"]
                    ours.append(res)
            except ResourceException:
                continue  # removed since the listing
        return ours

    def snapshot(self, dep) -> Snapshot:
        return Snapshot(
            self.tunnels(f"llm-relay-{dep.hostname}"), self.records(dep.hostname), self.containers(dep.prefix)
        )


def lxc_dirs(vmids: list[int]) -> list[Path]:
    """The LXC directories of these vmids still on this machine (the PVE emulator's real containers)."""
    return [LXC_PATH / str(v) for v in vmids if (LXC_PATH / str(v)).exists()]


def in_container(vmid: int, *argv: str) -> str:
    """What a command run inside one of the lab's real containers prints (it must succeed)."""
    proc = subprocess.run(
        ["lxc-attach", "-P", str(LXC_PATH), "-n", str(vmid), "--", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
