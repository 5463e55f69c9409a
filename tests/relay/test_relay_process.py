"""The real `llm-relay-server` process: SIGHUP reload under a running stream, SIGTERM drain, --check."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import aiohttp
from conftest import make_relay_dir, write_secret
from llm_relay import envelope, tokens
from relay_support import CHAT, bearer

SERVER = [sys.executable, "-m", "llm_relay.server"]


async def start_server(config) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        *SERVER, "--config", str(config), stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
    )
    async with asyncio.timeout(15):
        while True:
            line = await proc.stderr.readline()
            assert line, "server exited before listening"
            doc = json.loads(line)
            if doc.get("msg") == "listening":
                return proc, int(doc["listen"].rsplit(":", 1)[1])


async def log_lines(proc, until: str, limit_s: float = 10) -> list[dict]:
    seen = []
    async with asyncio.timeout(limit_s):
        while True:
            line = await proc.stderr.readline()
            if not line:
                return seen
            seen.append(json.loads(line))
            if seen[-1].get("msg") == until:
                return seen


def slow_stream_body(words: int) -> dict:
    return {**CHAT, "stream": True, "messages": [{"role": "user", "content": "word " * words}]}


async def test_sighup_rotates_tokens_and_keys_without_dropping_a_running_stream(tmp_path, upstream):
    token, _, keys = make_relay_dir(tmp_path, upstream.base)
    proc, port = await start_server(tmp_path / "relay.toml")
    url = f"http://127.0.0.1:{port}"
    upstream.state.add_fault({"path": "chat", "token_delay_ms": 60})
    try:
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                url + "/v1/chat/completions", json=slow_stream_body(25), headers=bearer(token)
            )
            assert resp.status == 200
            first = await resp.content.readany()
            # Rotate mid-stream: new client token, new Fernet key first.
            newcomer, new_key = tokens.generate_token(), envelope.generate_key()
            lines = (
                (tmp_path / "client-tokens").read_text() + tokens.format_token_line("dave", newcomer) + "\n"
            )
            write_secret(tmp_path / "client-tokens", lines)
            write_secret(tmp_path / "fernet-keys", f"{new_key}\n{keys[0]}\n")
            proc.send_signal(signal.SIGHUP)
            reload_log = await log_lines(proc, "reloaded")
            assert reload_log[-1]["tokens"] == 3 and reload_log[-1]["fernet_keys"] == 2
            async with http.get(url + "/v1/models", headers=bearer(newcomer)) as r:
                assert r.status == 200
            rest = await resp.read()  # the stream that started before the reload runs to its end
            assert (first + rest).rstrip().endswith(b"data: [DONE]")
            resp.release()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0


async def test_sigterm_drains_in_flight_streams_then_exits(tmp_path, upstream):
    token, _, _ = make_relay_dir(tmp_path, upstream.base)
    proc, port = await start_server(tmp_path / "relay.toml")
    url = f"http://127.0.0.1:{port}"
    upstream.state.add_fault({"path": "chat", "token_delay_ms": 50})
    async with aiohttp.ClientSession() as http:
        resp = await http.post(url + "/v1/chat/completions", json=slow_stream_body(20), headers=bearer(token))
        assert resp.status == 200
        await resp.content.readany()
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        try:  # no new connections once draining
            async with aiohttp.ClientSession() as fresh, fresh.get(url + "/healthz") as r:
                refused = r.status >= 500
        except aiohttp.ClientConnectionError:
            refused = True
        assert refused
        body = await resp.read()
        assert body.rstrip().endswith(b"data: [DONE]")
    await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0


def test_check_and_secret_helpers(tmp_path):
    make_relay_dir(tmp_path, "http://127.0.0.1:9/api/v1")
    config = str(tmp_path / "relay.toml")
    ok = subprocess.run([*SERVER, "--config", config, "--check"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "2 client token(s)" in ok.stdout
    os.chmod(tmp_path / "openrouter-keys", 0o644)
    bad = subprocess.run(
        [*SERVER, "--config", config, "--check"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "openrouter-keys" in bad.stderr and "0644" in bad.stderr
    assert "sk-or" not in bad.stderr
    made = subprocess.run(
        [*SERVER, "--generate-token"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tokens.is_well_formed(made)
    line = subprocess.run(
        [*SERVER, "--hash-token", "erin"], input=made + "\n", capture_output=True, text=True, check=True
    ).stdout.strip()
    assert line == tokens.format_token_line("erin", made)
    key = subprocess.run(
        [*SERVER, "--generate-fernet-key"], capture_output=True, text=True, check=True
    ).stdout
    assert envelope.parse_keys([key])
