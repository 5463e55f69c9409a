"""Fixtures for the relay tests: the lab's fake upstream in-process, and a relay configured against it.

Everything binds 127.0.0.1 port 0. Secret files are written 0600 like the role installs them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from llm_relay import envelope, tokens
from llm_relay.server.logs import AccessLog
from llm_relay.server.runner import RelayServer
from relay_support import UPSTREAM_KEYS

from lab.upstream import create_app, state_of

HANDLED = web.AppKey("relay_tests_handled", list)


def write_secret(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


@dataclass
class Upstream:
    server: TestServer
    app: object
    base: str  # http://127.0.0.1:port/api/v1

    @property
    def state(self):
        return state_of(self.app)

    @property
    def handled(self) -> list[dict]:
        return self.app[HANDLED]


@pytest.fixture
async def upstream():
    app = create_app({"api_keys": UPSTREAM_KEYS, "processing_comment_every": 3})
    handled: list[dict] = []

    @web.middleware
    async def track(request, handler):
        """Records when each upstream handler ends and how: shows whether the relay cut a stream."""
        entry = {"path": request.path, "ended": None, "outcome": "running"}
        handled.append(entry)
        try:
            response = await handler(request)
            entry["outcome"] = "done"
            return response
        except BaseException as exc:
            entry["outcome"] = type(exc).__name__
            raise
        finally:
            entry["ended"] = time.monotonic()

    app.middlewares.insert(0, track)
    app[HANDLED] = handled
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield Upstream(server, app, str(server.make_url("/api/v1")))
    await server.close()


class LogSink:
    """Collects access lines (the relay writes them as JSON text)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)


@dataclass
class Relay:
    dir: Path
    server: RelayServer
    token: str
    other_token: str
    fernet_keys: list[str]
    log: LogSink
    url: str = ""
    metrics_url: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def fernet(self):
        return envelope.make_fernet(self.fernet_keys)

    @property
    def epoch(self) -> str:
        """The relay process's epoch, which every envelope must name (server/replay.py)."""
        return self.server.relay.state.epoch

    def client_key(self, name: str = "alice") -> str:
        """The envelope v2 key of client `name` (alice holds `token`, bob `other_token`)."""
        lines = (self.dir / "client-keys").read_text().splitlines()
        return next(line.partition(":")[2] for line in lines if line.startswith(name + ":"))

    def write_config(self, text: str) -> None:
        (self.dir / "relay.toml").write_text(text)


def relay_toml(
    upstream_base: str,
    extra_server: str = "",
    extra: str = "",
    rate_limit: int = 0,
    ttl: int = 120,
    extra_envelope: str = "",
) -> str:
    # Most tests here speak envelope v1 too; the relay refuses it unless asked (tests that check the
    # default say `accept_v1` themselves).
    v1 = "" if "accept_v1" in extra_envelope else "accept_v1 = true"
    return f"""
[server]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
body_timeout = 2
drain_timeout = 5
{extra_server}

[auth]
tokens_file = "client-tokens"
rate_limit_per_minute = {rate_limit}

[envelope]
keys_file = "fernet-keys"
ttl = {ttl}
{v1}
{extra_envelope}

[providers.openrouter]
base_url = "{upstream_base}"
keys_file = "openrouter-keys"
headers = {{ "HTTP-Referer" = "https://relay.test", "X-Title" = "llm-relay-tests" }}
response_timeout = 5
idle_timeout = 5

[providers.lab]
base_url = "{upstream_base}"
keys_file = "openrouter-keys"
{extra}
"""


def make_relay_dir(directory: Path, upstream_base: str, **kw) -> tuple[str, str, list[str]]:
    token, other = tokens.generate_token(), tokens.generate_token()
    keys = [envelope.generate_key()]
    lines = [tokens.format_token_line("alice", token), tokens.format_token_line("bob", other)]
    write_secret(directory / "client-tokens", "# test tokens\n" + "\n".join(lines) + "\n")
    write_secret(directory / "fernet-keys", "\n".join(keys) + "\n")
    # Envelope v2: a key per client, found by the relay under the default name `client-keys`.
    own = {"alice": envelope.generate_key(), "bob": envelope.generate_key()}
    write_secret(directory / "client-keys", "".join(f"{n}:{k}\n" for n, k in own.items()))
    write_secret(directory / "openrouter-keys", "\n".join(UPSTREAM_KEYS) + "\n")
    (directory / "relay.toml").write_text(relay_toml(upstream_base, **kw))
    return token, other, keys


@pytest.fixture
async def relay_factory(tmp_path, upstream):
    started: list[RelayServer] = []

    async def make(**kw) -> Relay:
        directory = tmp_path / f"relay{len(started)}"
        directory.mkdir()
        token, other, keys = make_relay_dir(directory, upstream.base, **kw)
        server = RelayServer(directory / "relay.toml")
        sink = LogSink()
        server.relay.access_log = AccessLog(stream=sink)
        await server.start()
        started.append(server)
        relay = Relay(directory, server, token, other, keys, sink)
        relay.url = f"http://127.0.0.1:{server.port}"
        relay.metrics_url = f"http://127.0.0.1:{server.metrics_port}"
        return relay

    yield make
    for server in started:
        await server.drain_and_close()


@pytest.fixture
async def relay(relay_factory):
    return await relay_factory()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session
