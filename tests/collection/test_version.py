"""One version: the collection (galaxy.yml), the relay package (llm_relay.__version__, which
relay/pyproject.toml reads), both command lines' --version and doctor's comparison of client and relay (the
relay's side: tests/relay/test_relay_version.py). The changelog is ahead of its last release and its
fragments are valid (they cover relay changes too: the relay is released with the collection).

The tarball's wheel and the deployed relays are checked against the same version where they are built:
tests/collection/test_artifact.py and tests/site/test_site.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tomllib
from pathlib import Path

import llm_relay
import pytest
import yaml
from aiohttp import web
from llm_relay.client.config import load_profile
from llm_relay.client.doctor_version import check_version

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VERSION = str(yaml.safe_load((REPO / "galaxy.yml").read_text())["version"])


def as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_collection_and_relay_package_have_one_version():
    assert llm_relay.__version__ == VERSION
    pyproject = tomllib.loads((REPO / "relay" / "pyproject.toml").read_text())
    # The package's version is read from llm_relay.__version__, never written a second time.
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "llm_relay.__version__"}


@pytest.mark.parametrize("program", ["llm-relay", "llm-relay-server"])
def test_both_command_lines_print_the_version(program):
    proc = subprocess.run([str(BIN / program), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{program} {VERSION}"


def test_the_version_is_ahead_of_the_last_released_changelog():
    changes = yaml.safe_load((REPO / "changelogs" / "changelog.yaml").read_text())
    released = max(map(as_tuple, changes["releases"]))
    assert as_tuple(VERSION) > released, f"galaxy.yml {VERSION} is not newer than the released {released}"


def test_changelog_fragments_are_valid():
    proc = subprocess.run(
        [str(BIN / "antsibull-changelog"), "lint"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


class Stub:
    """A relay stand-in answering /v1/providers with a given body, on loopback port 0."""

    def __init__(self, body: dict) -> None:
        self.body = body

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.answer)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def answer(self, request: web.Request) -> web.Response:
        assert request.path.endswith("/v1/providers")
        return web.json_response(self.body)

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def version_check(tmp_path: Path, body: dict):
    async def probe():
        async with Stub(body) as url:
            config = tmp_path / "client.toml"
            config.write_text(f'url = "{url}"\ntoken = "lrt_{"a" * 43}"\nproxy = ""\n')
            config.chmod(0o600)
            profile = load_profile(None, config_path=str(config))
            return await asyncio.to_thread(check_version, profile)

    return asyncio.run(probe())


def test_doctor_says_ok_when_client_and_relay_agree(tmp_path):
    check = version_check(tmp_path, {"object": "list", "data": [], "relay_version": VERSION})
    assert (check.status, check.detail) == ("ok", f"client {VERSION}, relay {VERSION}")


def test_doctor_warns_when_they_differ_and_names_the_wheel_to_install(tmp_path):
    check = version_check(tmp_path, {"object": "list", "data": [], "relay_version": "9.1.0"})
    assert (check.status, check.code) == ("warn", "version_mismatch")
    assert check.detail == f"client {VERSION}, relay 9.1.0: they differ"
    assert "llm_relay-9.1.0-py3-none-any.whl" in check.hint
    assert not check.failed  # a warning: the upstream checks still run


@pytest.mark.parametrize(
    "body",
    [
        {"object": "list", "data": []},  # a relay older than 1.3.0
        {"relay_version": "\x1b[2J1.3.0"},  # not a version: never echoed to the terminal
        {"relay_version": 13},
    ],
)
def test_doctor_warns_when_the_relay_does_not_tell_a_version(tmp_path, body):
    check = version_check(tmp_path, body)
    assert (check.status, check.code) == ("warn", "relay_version_unknown")
    assert "\x1b" not in check.detail
