"""Fixtures: a fresh in-process emulator per test, the official SDK and a requests session on it."""

from __future__ import annotations

import cloudflare
import pytest
import requests

from .harness import ADMIN, EmulatorThread


@pytest.fixture
def emulator(tmp_path):
    server = EmulatorThread(tmp_path / "state.json").start()
    yield server
    server.stop()


@pytest.fixture
def sdk(emulator):
    client = cloudflare.Cloudflare(api_token=ADMIN, base_url=emulator.api, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def http(emulator):
    """requests.Session with the admin token; `http.api` is the /client/v4 base URL."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {ADMIN}"
    session.api = emulator.api
    yield session
    session.close()
