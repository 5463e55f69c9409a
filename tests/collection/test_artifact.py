"""The built collection: what the tarball holds (the product, nothing of the lab, the relay source, the
benchmarks or the test suites), and that an installed copy serves its docs and playbooks by FQCN."""

from __future__ import annotations

import subprocess
import tarfile

import pytest
from collection_build import BIN, build, install, user_env

SHIPPED = (
    "MANIFEST.json",
    "FILES.json",
    "CHANGELOG.md",
    "meta/runtime.yml",
    "plugins/modules/proxmox_lxc.py",
    "plugins/module_utils/proxmox_propstr.py",
    "plugins/doc_fragments/proxmox_auth.py",
    "roles/relay/tasks/main.yml",
    "roles/cloudflared/tasks/main.yml",
    "playbooks/site.yml",
    "playbooks/destroy.yml",
)
KEPT_OUT = ("lab/", "relay/", "bench/", "tests/", "molecule/", "inventory/lab/", ".ci/", "tools/", "site.yml")


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    return build(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def project(tarball, tmp_path_factory):
    project = tmp_path_factory.mktemp("user-project")
    install(tarball, project)
    return project


def test_tarball_holds_the_collection_and_nothing_else(tarball):
    with tarfile.open(tarball) as tar:
        names = [n.removeprefix("./") for n in tar.getnames()]
    missing = [path for path in SHIPPED if path not in names]
    assert not missing, missing
    leaked = [n for n in names if n.startswith(KEPT_OUT) or n in KEPT_OUT]
    assert not leaked, leaked
    pytest_files = [n for n in names if n.rsplit("/", 1)[-1].startswith(("test_", "conftest"))]
    assert not pytest_files, pytest_files
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def run(project, *argv, timeout=180):
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=project,
        env=user_env(project),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_ansible_doc_renders_proxmox_lxc_from_the_installed_collection(project):
    proc = run(project, "ansible-doc", "llm_relay.homelab.proxmox_lxc")
    assert proc.returncode == 0, proc.stderr
    assert str(project / "collections" / "ansible_collections" / "llm_relay" / "homelab") in proc.stdout
    # The shared auth fragment and the community.proxmox aliases are part of what renders.
    assert "api_token_secret" in proc.stdout
    assert "aliases: [memory]" in proc.stdout


def test_installed_playbooks_and_roles_resolve_by_fqcn(project):
    for playbook in (
        "llm_relay.homelab.site",
        "llm_relay.homelab.destroy",
        "llm_relay.homelab.rotate_credentials",
    ):
        proc = run(project, "ansible-playbook", "-i", "localhost,", "--syntax-check", playbook)
        assert proc.returncode == 0, f"{playbook}: {proc.stdout}{proc.stderr}"
    roles = run(project, "ansible-doc", "-t", "role", "-l", "llm_relay.homelab")
    assert roles.returncode == 0, roles.stderr
    assert "llm_relay.homelab.relay" in roles.stdout and "llm_relay.homelab.cloudflared" in roles.stdout
