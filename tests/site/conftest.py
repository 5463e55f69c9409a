"""Harness for the playbook suites (site.yml, rotation, destroy, interrupted runs) against the lab.

Each suite deploys its own relay under its own public hostname and container prefix (`Deployment`), so
suites never share a tunnel, a DNS record or a container. The hostnames are listed in lab.toml
(`[lab] hostnames`) and resolve to the lab edge on loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from collection_build import build, install, user_env

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab" / "lab_inventory.py"
VENV_BIN = REPO / ".venv" / "bin"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    key_file: Path | None = None  # the deployment's SSH key, named in a diagnosis of unreachable hosts

    @property
    def changed_hosts(self) -> dict[str, int]:
        return {h: r["changed"] for h, r in self.recap.items() if r["changed"]}


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    return {
        m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
        for m in RECAP.finditer(output)
    }


@dataclass
class Deployment:
    """One relay deployment of the lab, named by its public hostname."""

    hostname: str
    prefix: str
    replicas: int
    artifacts_dir: Path
    secrets_dir: Path
    # A user project (user_project()): the built collection installed there and the lab inventory rendered
    # into it; playbooks are then run by FQCN from there, in a mount namespace where the checkout shows
    # nothing but its .venv (hidden_checkout()).
    project: Path | None = None

    @property
    def extra_vars(self) -> dict[str, Any]:
        return {
            "relay_public_hostname": self.hostname,
            "relay_public_url": f"https://{self.hostname}:9443",
            "relay_hostname_prefix": self.prefix,
            "relay_replicas": self.replicas,
            "relay_tunnel_name": f"llm-relay-{self.hostname}",
            "relay_artifacts_dir": str(self.artifacts_dir),
            "relay_controller_secrets_dir": str(self.secrets_dir),
        }

    def env(self) -> dict[str, str]:
        if self.project is not None:
            return user_env(self.project)
        env = dict(os.environ)
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
        env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
        env["ANSIBLE_FORCE_COLOR"] = "0"
        env["ANSIBLE_NOCOLOR"] = "1"
        return env

    def command(self, playbook: str, *args: str) -> list[str]:
        """`playbook` is a path in the checkout (site.yml, playbooks/destroy.yml) or, with a project, a
        collection playbook name (llm_relay.homelab.site)."""
        if self.project is not None:
            return [
                *hidden_checkout(self.project),
                str(VENV_BIN / "ansible-playbook"),
                "-i",
                str(self.project / USER_INVENTORY),
                playbook,
                "-e",
                json.dumps(self.extra_vars),
                *args,
            ]
        return [
            str(VENV_BIN / "ansible-playbook"),
            str(REPO / playbook),
            "-e",
            json.dumps(self.extra_vars),
            *args,
        ]

    def run(self, playbook: str = "site.yml", *args: str, timeout: float = 1500) -> PlaybookRun:
        proc = subprocess.run(
            self.command(playbook, *args),
            cwd=self.project or REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = proc.stdout + proc.stderr
        return PlaybookRun(proc.returncode, output, parse_recap(output), self.secrets_dir / "id_ed25519")

    def run_and_cut(
        self,
        playbook: str,
        *args: str,
        cut: Callable[[str], bool],
        sig: signal.Signals = signal.SIGTERM,
        grace: float = 0,
        timeout: float = 900,
    ) -> tuple[PlaybookRun, bool]:
        """Start a playbook and kill its process group (as a terminal or a CI runner does) `grace` seconds
        after `cut(line)` is first true for a line it prints. Returns the run and whether it was cut."""
        proc = subprocess.Popen(
            self.command(playbook, *args),
            cwd=self.project or REPO,
            env={**self.env(), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines: list[str] = []
        was_cut = False
        deadline = time.monotonic() + timeout
        try:
            for line in proc.stdout:
                lines.append(line)
                if cut(line):
                    time.sleep(grace)
                    os.killpg(proc.pid, sig)
                    was_cut = True
                    break
                assert time.monotonic() < deadline, "".join(lines[-50:])
            lines.extend(proc.stdout)  # what it prints while stopping
            returncode = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        output = "".join(lines)
        return PlaybookRun(returncode, output, parse_recap(output), self.secrets_dir / "id_ed25519"), was_cut

    @property
    def artifact(self) -> Path:
        return self.artifacts_dir / f"{self.hostname}.toml"

    def client_profile(self) -> dict[str, Any]:
        data = tomllib.loads(self.artifact.read_text(encoding="utf-8"))
        return data["profiles"][data["default_profile"]]

    def access_headers(self) -> dict[str, str]:
        """The Cloudflare Access service-token headers of the artifact (none when the deployment is not
        behind Access): what every request through the lab edge must carry to reach a connector."""
        profile = self.client_profile()
        if not profile.get("access_client_id"):
            return {}
        return {
            "CF-Access-Client-Id": profile["access_client_id"],
            "CF-Access-Client-Secret": profile["access_client_secret"],
        }

    def session(self, ca_path: Path) -> requests.Session:
        s = requests.Session()
        s.verify = str(ca_path)
        return s

    @property
    def url(self) -> str:
        return f"https://{self.hostname}:9443"


# Run inside a private mount namespace (unshare --mount: only this process tree sees it): the checkout is
# covered by an empty tmpfs and only its .venv (the ansible-playbook we run) is mounted back. Whatever the
# run would read from the checkout - relay/, the roles, an inventory file - is absent, so it fails instead.
HIDE_CHECKOUT = """set -e
repo=$1 keep=$2
shift 2
mount --bind "$repo/.venv" "$keep"
mount -t tmpfs -o size=1m,mode=0755 checkout-hidden "$repo"
mkdir "$repo/.venv"
mount --move "$keep" "$repo/.venv"
exec "$@"
"""
USER_INVENTORY = "inventory/lab.yml"


def hidden_checkout(project: Path) -> list[str]:
    """argv prefix: the command then runs where the checkout shows nothing but its .venv."""
    keep = project / ".venv-mount"
    keep.mkdir(exist_ok=True)
    shell = ["bash", "-c", HIDE_CHECKOUT, "hide-checkout", str(REPO), str(keep)]
    return ["unshare", "--mount", "--propagation", "private", "--", *shell]


def user_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project: the tarball `make release` builds, installed into an empty directory, and the lab
    inventory rendered into it as a static file (0600: it holds the lab's API tokens). A value of the lab
    inventory that names a file of the checkout is copied into the project (the real cloudflared lies
    outside it, under LLM_RELAY_SHARED or the lab cache, and is read where it is):
    nothing the runs read is the checkout's."""
    project = tmp_path_factory.mktemp("user-project")
    install(build(tmp_path_factory.mktemp("build")), project)
    listing = subprocess.run(
        [str(VENV_BIN / "python"), str(LAB_INVENTORY), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lab_vars = json.loads(listing.stdout)["all"]["vars"]
    for name, value in lab_vars.items():
        if isinstance(value, str) and Path(value).is_absolute() and Path(value).is_relative_to(REPO):
            copy = project / "files" / Path(value).name
            copy.parent.mkdir(exist_ok=True)
            shutil.copy2(value, copy)
            lab_vars[name] = str(copy)
    inventory = project / USER_INVENTORY
    inventory.parent.mkdir()
    inventory.touch(mode=0o600)
    inventory.write_text(yaml.safe_dump({"all": {"vars": lab_vars, "children": {"relays": {}}}}))
    return project


def deployment(
    tmp_path_factory: pytest.TempPathFactory, hostname: str, prefix: str, replicas: int
) -> Deployment:
    base = tmp_path_factory.mktemp(prefix.strip("-"))
    return Deployment(hostname, prefix, replicas, base / "artifacts", base / "secrets")


def assert_ok(run: PlaybookRun) -> None:
    if run.returncode != 0 and any(r["unreachable"] for r in run.recap.values()):
        # Which container answered at the address, and with which keys: a post-mortem for CI.
        from lab_diagnosis import describe

        assert run.returncode == 0, describe(run.key_file) + "\n" + run.output[-6000:]
    assert run.returncode == 0, run.output[-6000:]


@pytest.fixture(scope="module")
def state(lab):
    """What the deployment left in both emulators and on the machine (deploy_state.LabState; imported
    here, not at the top: deploy_state loads this conftest's harness itself)."""
    from deploy_state import LabState

    return LabState(lab)
