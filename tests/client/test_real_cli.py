"""The coding-agent CLIs a user points at serve-local: Claude Code and Codex, the real npm builds
(tests/real_clients/package-lock.json, installed by `make real-clients`), each through `serve-local
--encrypt` behind a TLS-inspecting squid that strips `Authorization` (client_harness.Squid with `bump`) to
the relay behind an HTTPS front, against the lab's fake upstream (in-process, as the other client tests).

Nothing they do may leave loopback: their environment sends every proxied request to a loopback refuser
(`Refuser`) except those to 127.0.0.1/localhost (`NO_PROXY`), telemetry and update checks are switched off
by their own settings, and a test fails if the refuser saw anything (it caught Codex's plugin-catalogue
syncs to github.com and chatgpt.com before its config turned them off). A CLI that ignored the proxy
variables would find no route out of this machine: its run would fail on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from client_harness import REPO, UPSTREAM_KEY, Squid, Tap, client_toml, self_signed

REAL_CLIENTS = REPO / "tests" / "real_clients"
BIN = REAL_CLIENTS / "node_modules" / ".bin"
LOCK = json.loads((REAL_CLIENTS / "package-lock.json").read_text())
VERSIONS = {
    name: LOCK["packages"][f"node_modules/{package}"]["version"]
    for name, package in (("claude", "@anthropic-ai/claude-code"), ("codex", "@openai/codex"))
}
PROMPT = "Say hi to the homelab relay"
RUN_TIMEOUT = 120  # a run takes a few seconds; a CLI stuck retrying must not hold the suite


def cli_path(name: str) -> Path:
    """The installed CLI; skipped only where Node.js is absent (then `make real-clients` cannot install
    it), a failure where it is present but the CLI was not installed."""
    path = BIN / name
    if path.exists():
        return path
    if not shutil.which("npm") or not shutil.which("node"):  # lab/preflight.py OPTIONAL
        pytest.skip(f"{name} not installed: `make real-clients` needs Node.js and npm, not found on PATH")
    pytest.fail(f"{path} missing: run `make real-clients` (part of `make setup`)")
    raise AssertionError  # unreachable: pytest.fail raises


class Refuser:
    """A loopback 'proxy' that answers every request 403 and records its first line: where a CLI tried
    to go outside loopback (a CONNECT host:443 or an absolute URL)."""

    def __init__(self, bg) -> None:
        self.bg, self.attempts = bg, []

        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._handle, "127.0.0.1", 0)

        self.server = bg.run(start())
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            self.attempts.append(line.decode("latin-1").strip() or "(connected, sent nothing)")
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            self.attempts.append("(connected, sent nothing)")
        finally:
            writer.close()

    def stop(self) -> None:
        async def stop() -> None:
            self.server.close()

        self.bg.run(stop())


@pytest.fixture
def refuser(bg):
    guard = Refuser(bg)
    yield guard
    guard.stop()
    assert not guard.attempts, f"a CLI tried to leave loopback: {guard.attempts}"


@pytest.fixture(scope="module")
def inspecting_proxy(bg, relay, tmp_path_factory):
    """The relay behind an HTTPS front (a private CA's certificate, as a homelab relay may have), reached
    through a TLS-inspecting squid that strips `Authorization`: it decrypts each request with a certificate
    its own CA mints (which the client trusts, as a corporate machine trusts its proxy's CA)."""
    front_dir, ca_dir = tmp_path_factory.mktemp("front"), tmp_path_factory.mktemp("bump-ca")
    front_context, front_cert = self_signed(front_dir)
    _, bump_ca = self_signed(ca_dir)
    front = Tap(bg, relay.port, ssl_context=front_context)
    squid = Squid(bump=(bump_ca, ca_dir / "key.pem", front_cert))
    squid.relay_url, squid.bump_ca = f"https://localhost:{front.port}", bump_ca
    yield squid
    squid.stop()
    front.stop()


@pytest.fixture
def serve_local_encrypt(cli, keys, inspecting_proxy):
    """serve-local --encrypt on an ephemeral port, its relay traffic through the TLS-inspecting squid;
    yields its base URL (http://127.0.0.1:<port>)."""
    inspecting_proxy.new_capture()
    proxy, ca = inspecting_proxy.url, str(inspecting_proxy.bump_ca)
    cli.write_config(client_toml(inspecting_proxy.relay_url, keys, proxy=proxy, ca_bundle=ca))
    proc = cli.popen("serve-local", "--port", "0", "--encrypt")
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
    assert match, f"serve-local did not announce its address: {line!r}"
    yield f"http://127.0.0.1:{match.group(1)}"
    proc.terminate()
    proc.wait(10)


def offline_env(home: Path, refuser: Refuser, **extra: str) -> dict[str, str]:
    """A private HOME, every proxy variable at the refuser, loopback exempt."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LANG": "C.UTF-8",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = refuser.url
    return env | extra


# Output captured as text, no terminal input (both CLIs then run non-interactively), bounded in time.
RUN = {"capture_output": True, "text": True, "timeout": RUN_TIMEOUT, "stdin": subprocess.DEVNULL}


def run_cli(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, check=False, **RUN)


def assert_proxy_saw_only_envelopes(squid: Squid, api_path: str) -> None:
    """squid decrypted the traffic (its log has the full https URL and headers): only envelope POSTs to
    the relay's root, never the API path, the prompt or the answer."""
    crossed = squid.access_log()
    assert f"POST {squid.relay_url}/ " in crossed, crossed
    for secret in (api_path, PROMPT, "lab-echo"):
        assert secret not in crossed


def inner_requests(relay, before: int, path: str) -> list[dict]:
    """The relay's access-log entries after `before` whose (inner) path is `path`."""
    return [e for e in relay.settled_requests()[before:] if e["path"] == path]


def test_claude_code_through_serve_local_encrypt(
    relay, upstream, inspecting_proxy, serve_local_encrypt, refuser, tmp_path
):
    claude = cli_path("claude")
    home = tmp_path / "claude-home"
    home.mkdir()
    env = offline_env(
        home,
        refuser,
        ANTHROPIC_BASE_URL=serve_local_encrypt + "/anthropic",
        ANTHROPIC_API_KEY="sk-ant-unused-serve-local-drops-it",
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
        # Claude Code's own switches for everything but the model requests (telemetry, error reports,
        # update checks, feedback), so its only traffic is to ANTHROPIC_BASE_URL.
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_BUG_COMMAND="1",
    )
    version = run_cli([str(claude), "--version"], env, home)
    assert version.stdout.startswith(VERSIONS["claude"] + " "), version.stdout + version.stderr
    before = len(upstream.state.requests), len(relay.settled_requests())
    result = run_cli([str(claude), "-p", PROMPT, "--model", "claude-sonnet-4-5"], env, home)
    assert result.returncode == 0, f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    asked = [r for r in list(upstream.state.requests)[before[0] :] if r["path"] == "/v1/messages"]
    assert asked, "Claude Code's question never reached the upstream"
    # The fake upstream's answer: "lab-echo: <the last user message's text> [<digest>]"; Claude Code's
    # user message carries its own context before the prompt, so the prompt ends the echo.
    assert result.stdout.startswith("lab-echo: "), result.stdout[-2000:]
    assert re.search(rf"{PROMPT} \[[0-9a-f]{{12}}\]\n*$", result.stdout), result.stdout[-2000:]
    assert all(r["key"] == UPSTREAM_KEY for r in asked)  # the relay's, not ours
    logged = inner_requests(relay, before[1], "/anthropic/v1/messages")
    assert logged and all(e["envelope"] and e["status"] == 200 for e in logged), relay.settled_requests()
    assert_proxy_saw_only_envelopes(inspecting_proxy, "/anthropic")


CODEX_CONFIG = """\
model = "lab/echo"
model_provider = "relay"
# Codex's own switches: no update check, no analytics, no plugin catalogue syncs (github.com, chatgpt.com).
check_for_update_on_startup = false
[analytics]
enabled = false
[features]
plugins = false
remote_plugin = false
[model_providers.relay]
name = "llm-relay serve-local"
base_url = "{base_url}/v1"
wire_api = "responses"
env_key = "RELAY_LOCAL_KEY"
"""


def test_codex_through_serve_local_encrypt(
    relay, upstream, inspecting_proxy, serve_local_encrypt, refuser, tmp_path
):
    codex = cli_path("codex")
    home = tmp_path / "codex-home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(CODEX_CONFIG.format(base_url=serve_local_encrypt))
    env = offline_env(
        home, refuser, CODEX_HOME=str(home / ".codex"), RELAY_LOCAL_KEY="unused-serve-local-drops-it"
    )
    version = run_cli([str(codex), "--version"], env, home)
    assert version.stdout.strip() == f"codex-cli {VERSIONS['codex']}", version.stdout + version.stderr
    before = len(upstream.state.requests), len(relay.settled_requests())
    result = run_cli([str(codex), "exec", "--skip-git-repo-check", PROMPT], env, home)
    assert result.returncode == 0, f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    # `codex exec` prints the final answer alone on stdout (its progress goes to stderr): the fake
    # upstream's "lab-echo: <the last user message> [<digest>]", streamed as Responses API events.
    assert re.fullmatch(rf"lab-echo: {PROMPT} \[[0-9a-f]{{12}}\]\n*", result.stdout), result.stdout[-2000:]
    asked = [r for r in list(upstream.state.requests)[before[0] :] if r["path"] == "/api/v1/responses"]
    assert [(r["stream"], r["outcome"]) for r in asked] == [(True, "completed")], asked
    assert asked[0]["key"] == UPSTREAM_KEY  # the relay's key, not the CLI's
    logged = inner_requests(relay, before[1], "/v1/responses")
    assert [(e["envelope"], e["status"], e["stream"]) for e in logged] == [(True, 200, True)], logged
    assert_proxy_saw_only_envelopes(inspecting_proxy, "/responses")
