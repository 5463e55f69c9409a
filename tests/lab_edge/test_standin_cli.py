"""The stand-in's command-line contract, without an edge: version, help, token errors, exit codes."""

import base64
import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import pytest

from .support import STANDIN


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(STANDIN), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


def test_version_names_itself_a_stand_in_in_the_real_format():
    for flag in ("--version", "-v", "version"):
        out = run(flag)
        assert out.returncode == 0
        assert out.stdout.startswith("cloudflared version 2025.")
        assert "(built " in out.stdout
        assert "stand-in, not Cloudflare's cloudflared" in out.stdout


def test_help_names_the_stand_in_and_its_lab_only_settings():
    out = run("--help")
    assert out.returncode == 0
    assert "stand-in" in out.stdout
    assert "LAB_EDGE_ADDR" in out.stdout and "LAB_EDGE_CA" in out.stdout


def test_the_file_is_executable_with_a_python3_shebang():
    assert STANDIN.read_text().startswith("#!/usr/bin/env python3\n")
    assert STANDIN.stat().st_mode & 0o111


def test_malformed_token_fails_like_cloudflared_and_never_echoes_it():
    token = "not-a-token-" + "x" * 20
    out = run("tunnel", "--no-autoupdate", "run", env={"TUNNEL_TOKEN": token})
    assert out.returncode == 1
    assert "ERR Provided Tunnel token is not valid." in out.stderr
    assert token not in out.stderr + out.stdout


def test_token_missing_fields_is_refused():
    token = base64.b64encode(json.dumps({"a": "acc", "t": "not-a-uuid", "s": "c2VjcmV0"}).encode()).decode()
    out = run("tunnel", "run", "--token", token)
    assert out.returncode == 1
    assert "Provided Tunnel token is not valid." in out.stderr


def test_run_without_any_token_explains_what_is_missing():
    out = run("tunnel", "--no-autoupdate", "run")
    assert out.returncode == 1
    assert '"cloudflared tunnel run" requires the ID or name of the tunnel' in out.stderr


def test_unreadable_token_file_is_a_clear_error(tmp_path):
    out = run("tunnel", "run", "--token-file", str(tmp_path / "missing"))
    assert out.returncode == 1
    assert "Failed to read token file" in out.stderr


def test_unknown_flag_and_protocol_are_usage_errors():
    out = run("tunnel", "--bogus", "run")
    assert out.returncode == 1 and "flag provided but not defined: -bogus" in out.stderr
    out = run("tunnel", "--protocol", "carrier-pigeon", "run", env={"TUNNEL_TOKEN": "x"})
    assert out.returncode == 1 and "unknown protocol" in out.stderr


def test_without_metrics_flag_it_binds_cloudflareds_default_range_and_masks_the_token():
    secret = base64.b64encode(b"s" * 32).decode()
    token = base64.b64encode(json.dumps({"a": "acc", "t": str(uuid.uuid4()), "s": secret}).encode()).decode()
    env = {"PATH": "/usr/bin:/bin", "TUNNEL_TOKEN": token, "LAB_EDGE_ADDR": "127.0.0.1:1"}
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), "tunnel", "--no-autoupdate", "run"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []
    try:
        while not any("Starting metrics server" in line for line in lines):
            lines.append(proc.stderr.readline())
            assert lines[-1], "stand-in exited early:\n" + "".join(lines)
        address = re.search(r"on (127\.0\.0\.1:\d+)/metrics", lines[-1]).group(1)
        # Not connected (the edge address refuses): /ready says 503 in cloudflared's body shape.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{address}/ready", timeout=5)
        assert refused.value.code == 503
        body = json.loads(refused.value.read())
        assert body["status"] == 503 and body["readyConnections"] == 0 and uuid.UUID(body["connectorId"])
    finally:
        proc.terminate()
        lines += proc.communicate(timeout=20)[1].splitlines(keepends=True)
    port = int(re.search(r"on 127\.0\.0\.1:(\d+)/metrics", "".join(lines)).group(1))
    assert 20241 <= port <= 20245 or port > 1024  # the range, or a random port when it is all taken
    assert "Settings: map[" in "".join(lines) and "token:*****" in "".join(lines)
    assert token not in "".join(lines) and secret not in "".join(lines)
    assert proc.returncode == 0  # SIGTERM is a clean stop


def test_metrics_address_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        secret = base64.b64encode(b"s" * 32).decode()
        token = base64.b64encode(
            json.dumps({"a": "a", "t": str(uuid.uuid4()), "s": secret}).encode()
        ).decode()
        out = run("tunnel", "--metrics", f"127.0.0.1:{port}", "run", env={"TUNNEL_TOKEN": token})
    assert out.returncode == 1
    assert "ERR Error opening metrics server listener" in out.stderr
