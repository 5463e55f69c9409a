"""The REAL cloudflared's management commands against the emulator: what cloudflared prints is the check.

cloudflared 2026.8.2 (`tunnel --origincert CERT --api-url URL list|create|info|token|route dns|cleanup|
delete`) talks to the emulator run in-process over HTTPS on an ephemeral port (no lab lock needed). Its API
client (cfapi/base_client.go) uses Go's default TLS roots, so SSL_CERT_FILE points it at a CA made for the
test. Its update check (cmd/cloudflared/updater, Go's default transport, which honours HTTPS_PROXY) is sent
to a loopback port that refuses, so nothing leaves the machine; the API client has no proxy and goes direct.

The binary: env LAB_CLOUDFLARED, else $LLM_RELAY_SHARED/cloudflared/cloudflared-2026.8.2-linux-amd64.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from lab import ca

from .harness import ACCOUNT, ADMIN, READER, STRANGER, ZONE, EmulatorThread

BINARY_NAME = "cloudflared-2026.8.2-linux-amd64"
CONNECTOR = "c0ffee00-0000-4000-8000-0000000000c1"


def cloudflared_binary() -> Path:
    explicit = os.environ.get("LAB_CLOUDFLARED")
    if explicit:
        candidate = Path(explicit)
    elif os.environ.get("LLM_RELAY_SHARED"):
        candidate = Path(os.environ["LLM_RELAY_SHARED"]) / "cloudflared" / BINARY_NAME
    else:
        pytest.fail(
            "the real cloudflared is needed: set LAB_CLOUDFLARED to its path, or LLM_RELAY_SHARED to the "
            f"shared directory holding cloudflared/{BINARY_NAME}",
            pytrace=False,
        )
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        pytest.fail(
            f"no executable cloudflared at {candidate} (from LAB_CLOUDFLARED, else "
            f"$LLM_RELAY_SHARED/cloudflared/{BINARY_NAME})",
            pytrace=False,
        )
    return candidate


class Cli:
    """Runs `cloudflared tunnel --origincert <cert> --api-url <emulator> ARGS` and keeps what it printed."""

    def __init__(self, binary: Path, emulator: EmulatorThread, work: Path, ca_file: Path, refuser: int):
        self.binary, self.emulator, self.work = binary, emulator, work
        self.zone_id = emulator.state.zones[0]["id"]
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),  # no ~/.cloudflared of the machine's user is read
            "SSL_CERT_FILE": str(ca_file),
            "HTTPS_PROXY": f"http://127.0.0.1:{refuser}",
        }
        self.certs = {name: self._origin_cert(name, value) for name, value in TOKENS.items()}

    def _origin_cert(self, name: str, api_token: str) -> Path:
        """An origin certificate as `cloudflared login` writes it: a PEM block "ARGO TUNNEL TOKEN" holding
        JSON {zoneID, accountID, apiToken} (credentials/origin_cert.go)."""
        payload = json.dumps({"zoneID": self.zone_id, "accountID": ACCOUNT, "apiToken": api_token})
        body = base64.encodebytes(payload.encode()).decode()
        path = self.work / name / "cert.pem"
        path.parent.mkdir(mode=0o700)
        path.write_text(f"-----BEGIN ARGO TUNNEL TOKEN-----\n{body}-----END ARGO TUNNEL TOKEN-----\n")
        path.chmod(0o600)
        return path

    def __call__(self, *args: str, as_user: str = "admin") -> subprocess.CompletedProcess:
        cmd = [str(self.binary), "tunnel", "--origincert", str(self.certs[as_user])]
        cmd += ["--api-url", self.emulator.api, *args]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60, check=False)

    def ok(self, *args: str, as_user: str = "admin") -> str:
        """stdout + stderr of a command that must succeed (cloudflared logs its INF lines on stderr)."""
        run = self(*args, as_user=as_user)
        assert run.returncode == 0, (
            f"cloudflared {' '.join(args)}: {run.returncode}\n{run.stdout}{run.stderr}"
        )
        return run.stdout + run.stderr

    def fails(self, *args: str, as_user: str = "admin") -> str:
        run = self(*args, as_user=as_user)
        assert run.returncode == 1, (
            f"cloudflared {' '.join(args)}: {run.returncode}\n{run.stdout}{run.stderr}"
        )
        return run.stdout + run.stderr


TOKENS = {"admin": ADMIN, "reader": READER, "stranger": STRANGER}


@pytest.fixture(scope="module")
def binary() -> Path:
    return cloudflared_binary()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return ca.ensure(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def cli(binary, tls_files, tmp_path):
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tls_files["crt"], tls_files["key"])
    emulator = EmulatorThread(None, ssl_context=server_tls).start()
    # Bound, never listening: a connection to it is refused at once, on loopback.
    refuser = socket.socket()
    refuser.bind(("127.0.0.1", 0))
    try:
        yield Cli(binary, emulator, tmp_path, tls_files["ca_crt"], refuser.getsockname()[1])
    finally:
        refuser.close()
        emulator.stop()


def api(cli: Cli, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    verify = cli.env["SSL_CERT_FILE"]
    return requests.request(
        method, cli.emulator.api + path, headers=headers, verify=verify, timeout=10, **kwargs
    )


def connect(cli: Cli, tunnel_id: str, index: int) -> str:
    info = {
        "client_id": CONNECTOR,
        "client_version": "2026.8.2",
        "arch": "linux_amd64",
        "origin_ip": "10.87.0.5",
        "conn_index": index,
    }
    return cli.emulator.call(cli.emulator.state.connection_opened, tunnel_id, info)


def tunnel_id_of(cli: Cli, name: str) -> str:
    (found,) = json.loads(cli.ok("list", "--name", name, "--output", "json"))
    return found["id"]


def test_create_list_info_token_then_delete_refused_while_connected(cli):
    assert "No tunnels were found for the given filter flags" in cli.ok("list")
    created = cli.ok("create", "relay-cli")
    tunnel_id = tunnel_id_of(cli, "relay-cli")
    creds_file = cli.certs["admin"].parent / f"{tunnel_id}.json"
    assert f"Tunnel credentials written to {creds_file}." in created
    assert f"Created tunnel relay-cli with id {tunnel_id}" in created
    # The credentials file holds the secret cloudflared generated and the API stored (not printed).
    creds = json.loads(creds_file.read_text())
    same_secret = creds["TunnelSecret"] == cli.emulator.state.tunnels[tunnel_id]["secret"]
    assert same_secret, "the credentials file's TunnelSecret is not the secret the emulator stored"
    assert (creds["AccountTag"], creds["TunnelID"]) == (ACCOUNT, tunnel_id)
    # 409 → cloudflared's own ErrTunnelNameConflict (cfapi/tunnel.go CreateTunnel).
    assert "Create Tunnel API call failed: tunnel with name already exists" in cli.fails(
        "create", "relay-cli"
    )

    assert f"Your tunnel {tunnel_id} does not have any active connection." in cli.ok("info", "relay-cli")
    token_out = cli(*["token", "relay-cli"])
    assert token_out.returncode == 0, "cloudflared tunnel token failed"  # its output is a secret: not shown
    token = json.loads(base64.b64decode(token_out.stdout.strip()))
    tunnel = cli.emulator.state.tunnels[tunnel_id]
    matches = token == {"a": ACCOUNT, "t": tunnel_id, "s": tunnel["secret"]}
    assert matches, "the printed token is not {account, tunnel id, current secret}"

    conns = [connect(cli, tunnel_id, index) for index in (0, 1)]
    listed = cli.ok("list", "--name", "relay-cli")
    assert any(line.startswith(tunnel_id) and line.split()[-1] == "2xLAB" for line in listed.splitlines())
    info = cli.ok("info", tunnel_id)
    row = next(line.split() for line in info.splitlines() if line.startswith(CONNECTOR))
    assert row[2:] == ["linux_amd64", "2026.8.2", "10.87.0.5", "2xLAB"]
    refused = cli.fails("delete", "relay-cli")
    assert (
        f"Error deleting tunnel {tunnel_id}: Failed to delete tunnel: code: 1022, reason: Cannot delete "
        "tunnel because it has active connections"
    ) in refused

    # Disconnected: still listed pending reconnect, which cloudflared hides unless -rd; still blocks delete.
    for conn in conns:
        cli.emulator.call(cli.emulator.state.connection_closed, tunnel_id, conn)
    listed = cli.ok("list", "--name", "relay-cli")
    assert next(line for line in listed.splitlines() if line.startswith(tunnel_id)).split()[-1] != "2xLAB"
    recent = cli.ok("list", "--name", "relay-cli", "--show-recently-disconnected")
    assert next(line for line in recent.splitlines() if line.startswith(tunnel_id)).split()[-1] == "2xLAB"
    assert "This tunnel has no active connectors." in cli.ok("info", "relay-cli")
    assert "code: 1022, reason: Cannot delete tunnel because it has active connections" in cli.fails(
        "delete", "relay-cli"
    )
    # `cleanup` removes them (DELETE …/connections); delete then succeeds and removes the credentials file.
    assert f"Cleanup connection for tunnel {tunnel_id}" in cli.ok("cleanup", "relay-cli")
    cli.ok("delete", "relay-cli")
    assert not creds_file.exists()
    assert "No tunnels were found" in cli.ok("list", "--name", "relay-cli")
    deleted = json.loads(cli.ok("list", "--name", "relay-cli", "--show-deleted", "--output", "json"))
    assert [t["id"] for t in deleted] == [tunnel_id] and deleted[0]["deleted_at"] != "0001-01-01T00:00:00Z"


def test_delete_force_cascades_over_live_connections(cli):
    cli.ok("create", "forced")
    tunnel_id = tunnel_id_of(cli, "forced")
    connect(cli, tunnel_id, 0)
    events = []
    cli.emulator.call(cli.emulator.state.add_listener, lambda event, tid: events.append((event, tid)))
    cli.ok("delete", "-f", "forced")  # ?cascade=true
    assert events == [("connections_deleted", tunnel_id), ("tunnel_deleted", tunnel_id)]
    assert cli.emulator.state.live_tunnel(tunnel_id) is None


def test_route_dns_adds_the_proxied_cname_then_is_unchanged_and_reports_collisions(cli):
    cli.ok("create", "routed")
    tunnel_id = tunnel_id_of(cli, "routed")
    target = f"{tunnel_id}.cfargotunnel.com"
    # A bare label is completed within the certificate's zone, as Cloudflare does.
    added = cli.ok("route", "dns", "routed", "app")
    assert f"Added CNAME app.{ZONE} which will route to this tunnel" in added
    zone_id = cli.zone_id
    (record,) = api(cli, "GET", f"/zones/{zone_id}/dns_records", params={"name": f"app.{ZONE}"}).json()[
        "result"
    ]
    assert (record["type"], record["content"], record["proxied"], record["ttl"]) == ("CNAME", target, True, 1)
    # The lab edge routes by the store's records: this hostname now leads to the tunnel.
    assert cli.emulator.call(cli.emulator.state.route_hostname, f"app.{ZONE}") == tunnel_id
    again = cli.ok("route", "dns", "routed", f"app.{ZONE}")
    assert f"app.{ZONE} is already configured to route to your tunnel" in again

    # An address record holds the name: 1003, and cloudflared prints the API's code and reason.
    body = {"type": "A", "name": "taken", "content": "192.0.2.10", "ttl": 300}
    assert api(cli, "POST", f"/zones/{zone_id}/dns_records", json=body).status_code == 200
    collision = cli.fails("route", "dns", "routed", "taken")
    assert (
        "Failed to add route: code: 1003, reason: An A, AAAA, or CNAME record with that host already exists."
    ) in collision
    records = api(cli, "GET", f"/zones/{zone_id}/dns_records", params={"name": f"taken.{ZONE}"}).json()
    assert [(r["type"], r["content"]) for r in records["result"]] == [("A", "192.0.2.10")]
    # --overwrite-dns replaces it with the tunnel's CNAME.
    replaced = cli.ok("route", "dns", "--overwrite-dns", "routed", "taken")
    assert f"Added CNAME taken.{ZONE} which will route to this tunnel" in replaced
    records = api(cli, "GET", f"/zones/{zone_id}/dns_records", params={"name": f"taken.{ZONE}"}).json()
    assert [(r["type"], r["content"], r["proxied"]) for r in records["result"]] == [("CNAME", target, True)]

    # Another tunnel's CNAME collides the same way until overwritten; then the name routes to the new one.
    cli.ok("create", "other")
    other_id = tunnel_id_of(cli, "other")
    assert "code: 1003, reason: An A, AAAA, or CNAME record" in cli.fails("route", "dns", "other", "app")
    cli.ok("route", "dns", "--overwrite-dns", "other", "app")
    assert cli.emulator.call(cli.emulator.state.route_hostname, f"app.{ZONE}") == other_id


def test_errors_print_the_apis_code_and_reason(cli):
    missing = str(uuid.uuid4())
    assert "Failed to list connection details: code: 1003, reason: Tunnel not found" in cli.fails(
        "info", missing
    )
    assert (
        f"Can't get tunnel information. Please check tunnel id: {missing}: Failed to get tunnel: code: 1003, "
        "reason: Tunnel not found"
    ) in cli.fails("delete", missing)
    assert "Failed to add route: code: 1003, reason: Tunnel not found" in cli.fails(
        "route", "dns", missing, "ghost"
    )
    # A read-only token lists but may not create or route: 403 / 10000, decoded by cloudflared.
    cli.ok("create", "guarded")
    assert "guarded" in cli.ok("list", as_user="reader")
    denied = "code: 10000, reason: Authentication error"
    assert f"Create Tunnel API call failed: Failed to create tunnel: {denied}" in cli.fails(
        "create", "sneaky", as_user="reader"
    )
    assert f"Failed to add route: {denied}" in cli.fails("route", "dns", "guarded", "ro", as_user="reader")
    assert f"Failed to delete tunnel: {denied}" in cli.fails("delete", "guarded", as_user="reader")
    # A token of another account is refused too; for `list` cloudflared itself closes the body before
    # reading it (cfapi/tunnel.go ListTunnels), so it prints its generic word, against Cloudflare as here.
    assert "Error Parsing page 1: REST request failed: unauthorized" in cli.fails("list", as_user="stranger")
    assert f"Failed to get tunnel token: {denied}" in cli.fails(
        "token", tunnel_id_of(cli, "guarded"), as_user="stranger"
    )
