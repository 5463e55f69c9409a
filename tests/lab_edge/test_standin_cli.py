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


def valid_token() -> str:
    secret = base64.b64encode(b"s" * 32).decode()
    return base64.b64encode(json.dumps({"a": "acc", "t": str(uuid.uuid4()), "s": secret}).encode()).decode()


def starts(*args: str, env: dict | None = None) -> str:
    """Run the stand-in until it logs its settings (it has parsed its command line and is starting the
    tunnel; the edge address refuses), then stop it; returns its log."""
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LAB_EDGE_ADDR": "127.0.0.1:1", **(env or {})},
    )
    lines: list[str] = []
    try:
        while not any("Settings: map[" in line for line in lines):
            lines.append(proc.stderr.readline())
            assert lines[-1], f"stand-in exited ({proc.wait()}):\n" + "".join(lines) + proc.stdout.read()
    finally:
        proc.terminate()
        lines += proc.communicate(timeout=20)[1].splitlines(keepends=True)
    assert proc.returncode == 0
    return "".join(lines)


RUN_HINT = "See 'cloudflared tunnel run --help'."


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(valid_token() + "\n")
    path.chmod(0o600)
    return str(path)


# The real CLI's answers, from its source (cloudflare/cloudflared):
# - usage errors: cmd/cloudflared/cliutil/errors.go ErrorHandler prints "<msg>\nSee 'cloudflared <command
#   full name> --help'." and exits with cli.Exit(msg, -1), i.e. exit code 255;
# - the messages: cmd/cloudflared/tunnel/subcommands.go runCommand ("requires the ID or name of the tunnel",
#   "Provided Tunnel token is not valid.", "accepts only one argument", "Failed to read token file");
# - a flag the level does not define: urfave/cli v2 Command.Run prints "Incorrect Usage: flag provided but
#   not defined: -<name>" and the help, and returns the error to cmd/cloudflared/linux_service.go runApp,
#   whose `app.Run(os.Args)` (line 42 of the stored version 4bd17766) ignores it: exit code 0, nothing runs.
#   Tunnel-level flags (cmd/cloudflared/tunnel/cmd.go tunnelFlags: --edge-ip-version, --retries,
#   --ha-connections, --region, --grace-period, --metrics, --loglevel...) are not in the run command's
#   flags (subcommands.go buildRunCommand), so after `run` they are such flags.
USAGE_CASES = [
    (["tunnel", "run"], '"cloudflared tunnel run" requires the ID or name of the tunnel to run'),
    (
        ["tunnel", "--no-autoupdate", "run", "--token", "bm90LWEtdG9rZW4="],
        "Provided Tunnel token is not valid.",
    ),
    (
        ["tunnel", "run", "--token-file", "/nonexistent/token"],
        "Failed to read token file: open /nonexistent/token",
    ),
    (["tunnel", "run", "a", "b"], '"cloudflared tunnel run" accepts only one argument'),
]


@pytest.mark.parametrize(("args", "message"), USAGE_CASES)
def test_usage_errors_exit_255_with_the_help_hint(args, message):
    out = run(*args)
    assert out.returncode == 255, out.stderr
    assert message in out.stderr and out.stderr.rstrip().endswith(RUN_HINT)


@pytest.mark.parametrize(
    "flag", ["--edge-ip-version=6", "--retries=3", "--ha-connections=2", "--region=us", "--bogus"]
)
def test_a_tunnel_level_or_unknown_flag_after_run_is_incorrect_usage_and_runs_nothing(flag, token_file):
    out = run("tunnel", "run", "--token-file", token_file, flag)
    name = flag.split("=")[0].lstrip("-")
    assert out.returncode == 0
    assert out.stdout.startswith(f"Incorrect Usage: flag provided but not defined: -{name}")
    assert "Starting tunnel" not in out.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["tunnel", "run", "--post-quantum", "--token-file", "{token_file}"],
        ["tunnel", "run", "-pq", "--protocol", "quic", "--token-file", "{token_file}"],
        ["tunnel", "--post-quantum", "run", "--token-file", "{token_file}"],
        [
            "tunnel",
            "--edge-ip-version",
            "6",
            "--retries",
            "3",
            "--ha-connections",
            "2",
            "run",
            "--token-file",
            "{token_file}",
        ],
        [
            "tunnel",
            "run",
            "--token-file",
            "{token_file}",
            "--features",
            "a",
            "--features",
            "b",
            "--dns-resolver-addrs",
            "10.87.0.1:53",
        ],
        [
            "tunnel",
            "run",
            "--token-file",
            "{token_file}",
            "--no-tls-verify",
            "--origin-server-name",
            "relay.lab.test",
            "--url",
            "http://127.0.0.1:8080",
        ],
    ],
)
def test_real_flags_at_their_level_run(args, token_file):
    log = starts(*[a.format(token_file=token_file) for a in args])
    assert "Starting tunnel" in log


def test_defaults_follow_cloudflared(token_file):
    """cmd.go tunnelFlags: --edge-ip-version defaults to "auto"; the token never shows in the log."""
    from lab.cloudflared_standin import cloudflared

    parsed = cloudflared.parse_command_line(["run", "--token-file", token_file])
    opts, rest = parsed
    assert rest == [] and opts["edge-ip-version"] == "auto" and opts["protocol"] == "auto"
    assert opts["retries"] == "5" and opts["ha-connections"] == "4" and opts["grace-period"] == "30s"
    log = starts("tunnel", "run", "--token", valid_token())
    assert "token:*****" in log


def test_bad_values_of_typed_flags_are_flag_errors():
    out = run("tunnel", "--retries", "many", "run")
    assert out.returncode == 0 and out.stdout.startswith(
        'Incorrect Usage: invalid value "many" for flag -retries'
    )
    out = run("tunnel", "--grace-period", "30", "run")  # Go durations need a unit
    assert out.returncode == 0 and 'invalid value "30" for flag -grace-period' in out.stdout


def test_malformed_token_is_never_echoed():
    token = "not-a-token-" + "x" * 20
    out = run("tunnel", "--no-autoupdate", "run", env={"TUNNEL_TOKEN": token})
    assert out.returncode == 255 and "Provided Tunnel token is not valid." in out.stderr
    assert token not in out.stderr + out.stdout


def test_token_missing_fields_is_refused():
    token = base64.b64encode(json.dumps({"a": "acc", "t": "not-a-uuid", "s": "c2VjcmV0"}).encode()).decode()
    out = run("tunnel", "run", "--token", token)
    assert out.returncode == 255
    assert "Provided Tunnel token is not valid." in out.stderr


def test_unknown_protocol_fails_to_start():
    out = run("tunnel", "--protocol", "carrier-pigeon", "run", env={"TUNNEL_TOKEN": valid_token()})
    assert out.returncode == 1 and "Unknown protocol carrier-pigeon" in out.stderr


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
