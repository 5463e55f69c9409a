"""The built collection (`make release`): what the tarball holds (the product, its LICENSE and the relay's
wheel; nothing of the lab, the relay source, the benchmarks or the test suites), that an installed copy
serves its docs and playbooks by FQCN, and that its relay role writes the client wheel it carries - or,
installed without one, says what is missing."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import zipfile

import pytest
import yaml
from collection_build import BIN, REPO, build, install, user_env

VERSION = str(yaml.safe_load((REPO / "galaxy.yml").read_text())["version"])
WHEEL = f"llm_relay-{VERSION}-py3-none-any.whl"
CARRIED = f"roles/relay/files/dist/{WHEEL}"
INSTALLED = ("collections", "ansible_collections", "llm_relay", "homelab")
SHIPPED = (
    "MANIFEST.json",
    "FILES.json",
    "LICENSE",
    CARRIED,
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
KEPT_OUT = (
    "lab/",
    "relay/",
    "bench/",
    "tests/",
    "molecule/",
    "inventory/lab/",
    ".ci/",
    "tools/",
    "dist/",
    "site.yml",
)


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
    # The relay ships as one wheel, nothing else of it.
    assert [n for n in names if n.endswith((".whl", ".tar.gz", ".zip"))] == [CARRIED]


def test_tarball_carries_the_license_and_the_relay_wheel_of_its_own_version(tarball):
    with tarfile.open(tarball) as tar:
        license_text = tar.extractfile("LICENSE").read()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
        wheel = zipfile.ZipFile(io.BytesIO(tar.extractfile(CARRIED).read()))
    assert license_text == (REPO / "LICENSE").read_bytes()
    assert license_text.startswith(b"MIT License")
    assert manifest["collection_info"]["license"] == ["MIT"]
    assert manifest["collection_info"]["version"] == VERSION
    metadata = wheel.read(f"llm_relay-{VERSION}.dist-info/METADATA").decode()
    assert f"\nVersion: {VERSION}\n" in metadata and "\nName: llm-relay\n" in metadata
    assert "License-Expression: MIT" in metadata
    assert wheel.read(f"llm_relay-{VERSION}.dist-info/licenses/LICENSE") == license_text
    # Server and client: the role deploys the one, the PC installs the other from the same wheel.
    names = wheel.namelist()
    assert "llm_relay/server/__main__.py" in names and "llm_relay/client/cli.py" in names


def test_release_refuses_a_relay_whose_version_is_not_the_collection_s(tmp_path, monkeypatch):
    """tools/build_collection.py stops before building when relay/ and galaxy.yml disagree."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_collection", REPO / "tools" / "build_collection.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(REPO / "tools"))
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "galaxy_version", lambda: "0.0.1")
    with pytest.raises(SystemExit, match=f"relay/ builds llm-relay {VERSION} but galaxy.yml says 0.0.1"):
        module.build(tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.tar.gz"))


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


CLIENT_WHEEL_PLAY = """
- name: The client wheel of the installed collection
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Client wheel into the artifact directory
      ansible.builtin.include_role:
        name: llm_relay.homelab.relay
        tasks_from: client_wheel.yml
      vars:
        relay_client_wheel_dir: "{{ artifacts }}"
"""


def client_wheel_run(project, artifacts):
    (project / "client_wheel.yml").write_text(CLIENT_WHEEL_PLAY)
    extra = json.dumps({"artifacts": str(artifacts), "relay_wheel_cache_dir": str(project / "cache")})
    return run(project, "ansible-playbook", "-i", "localhost,", "client_wheel.yml", "-e", extra)


def test_installed_collection_writes_the_client_wheel_it_carries(project, tmp_path):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "llm_relay-0.9.0-py3-none-any.whl").write_bytes(b"an older client")
    first = client_wheel_run(project, artifacts)
    assert first.returncode == 0, first.stdout + first.stderr
    carried = project.joinpath(*INSTALLED, CARRIED)
    # Exactly the carried wheel, and no client of another version beside it.
    assert sorted(p.name for p in artifacts.iterdir()) == [WHEEL]
    assert (artifacts / WHEEL).read_bytes() == carried.read_bytes()
    again = client_wheel_run(project, artifacts)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed=0" in again.stdout, again.stdout


def test_a_collection_without_its_relay_wheel_says_what_is_missing(project, tmp_path):
    """Built with a bare `ansible-galaxy collection build`, the collection carries no relay: the role
    fails before doing anything, naming the two ways out."""
    bare = tmp_path / "bare-project"
    shutil.copytree(project / "collections", bare / "collections", symlinks=True)
    shutil.rmtree(bare.joinpath(*INSTALLED, "roles", "relay", "files", "dist"))
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    proc = client_wheel_run(bare, artifacts)
    assert proc.returncode != 0
    output = " ".join((proc.stdout + proc.stderr).split())
    assert "No relay to deploy: relay_source_dir is empty and this collection carries 0 relay" in output
    assert "`make release`" in output and "set relay_source_dir to a checkout" in output
    assert list(artifacts.iterdir()) == []
