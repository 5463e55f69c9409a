"""Fixtures for the PVE emulator tests: proxmoxer clients (token and password), task waiting,
an SSH key pair, and vmids from this suite's range (9000-9099) that are always cleaned up."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pve_support import destroy, free_vmid


@pytest.fixture(scope="session")
def px(lab):
    return lab.proxmox("token")


@pytest.fixture(scope="session")
def px_password(lab):
    return lab.proxmox("password")


@pytest.fixture(scope="session")
def node(px, lab):
    return px.nodes(lab.nodes[0])


@pytest.fixture(scope="session")
def template_volid(node, lab) -> str:
    items = node.storage(lab.pve_storage).content.get(content="vztmpl")
    return next(i["volid"] for i in items if "debian-12-standard" in i["volid"])


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture
def api(lab) -> requests.Session:
    """A raw HTTPS session (for auth/CSRF cases proxmoxer hides), verifying the lab CA."""
    session = requests.Session()
    # REQUESTS_CA_BUNDLE in the environment would otherwise win over Session.verify.
    session.trust_env = False
    session.verify = str(lab.ca_path)
    return session


@pytest.fixture
def vmid(px, lab) -> Iterator[int]:
    """A free vmid from 9000-9099; whatever the test leaves with it is destroyed afterwards."""
    candidate = free_vmid(px)
    yield candidate
    destroy(px, candidate)
