"""Fixtures: the lab's fake upstream in-process, the real relay server as a subprocess, the CLI runner.

Credentials come from `llm-relay keygen --format json` itself, so every test that reaches the relay also
proves that keygen's output is accepted by it. Everything listens on 127.0.0.1 ephemeral ports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from client_harness import UPSTREAM_KEY, BackgroundLoop, CliRunner, RelayServer, ServedApp, Squid, keygen

from lab.upstream import create_app, state_of


@pytest.fixture(scope="session")
def bg() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def upstream(bg: BackgroundLoop) -> Iterator[ServedApp]:
    served = ServedApp(bg, create_app({"api_keys": [UPSTREAM_KEY]}))
    served.state = state_of(served.app)
    yield served
    served.stop()


@pytest.fixture(scope="session")
def keys() -> dict[str, str]:
    return keygen("client-tests")


@pytest.fixture(scope="session")
def relay_factory(tmp_path_factory: pytest.TempPathFactory, upstream: ServedApp) -> Iterator:
    started: list[RelayServer] = []

    def start(
        token_lines: list[str],
        fernet_keys: list[str],
        upstream_key: str = UPSTREAM_KEY,
        client_key_lines: list[str] | None = None,
    ) -> RelayServer:
        workdir = tmp_path_factory.mktemp("relay")
        server = RelayServer(workdir, upstream.url, token_lines, fernet_keys, upstream_key, client_key_lines)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def relay(relay_factory, keys: dict[str, str]) -> RelayServer:
    """A current relay: this client's own key in client-keys (envelope v2), v1 refused (the default)."""
    return relay_factory([keys["token_line"]], [], client_key_lines=[keys["client_key_line"]])


@pytest.fixture(scope="session")
def older_relay(relay_factory, keys: dict[str, str]) -> RelayServer:
    """A relay as before envelope v2: one shared Fernet key, no client-keys file."""
    return relay_factory([keys["token_line"]], [keys["fernet_key"]])


@pytest.fixture
def cli(tmp_path: Path) -> CliRunner:
    return CliRunner(tmp_path / "home")


@pytest.fixture(scope="module")
def squid_server():
    """A real squid that strips `Authorization` (client_harness.Squid), one per test module."""
    proxy = Squid()
    yield proxy
    proxy.stop()
