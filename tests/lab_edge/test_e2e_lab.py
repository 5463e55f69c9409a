"""End to end through the running lab: emulator API → tunnel + config + CNAME; a PVE-emulator container
running the real cloudflared 2026.8.2 (under systemd, Type=notify) and a small service; requests through
the lab edge.

The container is a real LXC (vmid 9200-9299) from the lab template, which has no python3: the test
apt-installs it through the lab NAT, as the playbook's bootstrap does. cloudflared's command line is the
role's; only its environment points it at the lab edge (TUNNEL_EDGE, TUNNEL_CACERT, HTTP/2), as the lab
inventory does. Everything is removed at the end.
"""

import base64
import json
import secrets
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from lab.edge import binary
from lab.edge.harness import CloudflareApi

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
VMID_RANGE = range(9200, 9300)
SERVICE_PORT = 8080
METRICS = "127.0.0.1:20241"
UNIT = "cloudflared-e2e"


LAB_CA = "/usr/local/share/ca-certificates/llm-relay-lab.crt"
LAB_ENV = {"TUNNEL_EDGE": "10.87.0.1:7844", "TUNNEL_CACERT": LAB_CA, "TUNNEL_TRANSPORT_PROTOCOL": "http2"}


def cloudflared_command(*flags: str) -> str:
    """How the role runs it: token from a 0600 file, never on the command line; the lab's environment."""
    tunnel_flags = " ".join(["--no-autoupdate", "--metrics", METRICS, *flags])
    env = " ".join(f"-E {k}={v}" for k, v in LAB_ENV.items())
    return f"{env} /usr/bin/cloudflared tunnel {tunnel_flags} run --token-file /etc/cloudflared/token"


class Guest:
    """Commands in the container over SSH with the key injected at creation (as Ansible reaches it)."""

    def __init__(self, ip: str, key: Path):
        self.ip, self.key = ip, key

    def run(self, command: str, stdin: str | None = None, check: bool = True, timeout: float = 120):
        argv = ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
        argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]
        done = subprocess.run(
            [*argv, f"root@{self.ip}", command], input=stdin, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"`{command[:80]}` failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def install(self, source: Path, dest: str, mode: str = "0755") -> None:
        """A (binary) file from the host into the container, over the same SSH."""
        argv = ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
        argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]
        command = f"install -m {mode} /dev/stdin {dest}"
        data = source.read_bytes()
        subprocess.run([*argv, f"root@{self.ip}", command], input=data, check=True, timeout=120)

    def journal(self, unit: str) -> str:
        return self.run(f"journalctl -u {unit} --no-pager -o cat", check=False).stdout


def wait_task(node, upid: str, timeout: float = 180, ok_only: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while (status := node.tasks(upid).status.get())["status"] != "stopped":
        assert time.monotonic() < deadline, f"task {upid} still running"
        time.sleep(0.5)
    assert status["exitstatus"] == "OK" or not ok_only, node.tasks(upid).log.get()


def until(check, what: str, timeout: float = 60, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step)


@pytest.fixture(scope="module")
def cloudflare(lab):
    section = lab.config["cloudflare"]
    token = section["tokens"]["admin"]["value"]
    api = CloudflareApi(lab.cloudflare.url, token, section["account_id"], lab.ca_path)
    api.sweep("edge-e2e-", "edge-e2e-")  # leftovers of an interrupted run (names only this suite uses)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def container(lab, tmp_path_factory):
    """A running container with python3, the real cloudflared as /usr/bin/cloudflared, the lab CA and
    the small service up on 127.0.0.1:8080; destroyed afterwards."""
    px = lab.proxmox("token", timeout=120)
    # Other suites restart the shared lab daemon: retry refused connections (never sent, so safe for
    # every method) for up to about a minute instead of failing on the restart.
    retry = Retry(
        total=None, connect=40, read=0, status=0, backoff_factor=0.5, backoff_max=2, allowed_methods=None
    )
    px._store["session"].mount("https://", HTTPAdapter(max_retries=retry))
    node = px.nodes(lab.nodes[0])
    destroy_ours(px)  # leftovers of an interrupted run: this range belongs to this suite only
    vmid = VMID_RANGE[0]
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    template = next(
        i["volid"]
        for i in node.storage(lab.pve_storage).content.get(content="vztmpl")
        if "debian-12-standard" in i["volid"]
    )
    try:
        wait_task(
            node,
            node.lxc.post(
                vmid=vmid,
                ostemplate=template,
                hostname=f"edge-e2e-{vmid}",
                storage="local-lvm",
                memory=512,
                cores=1,
                net0="name=eth0,bridge=vmbr0,ip=dhcp",
                unprivileged=1,
                features="nesting=1",
                **{"ssh-public-keys": key.with_suffix(".pub").read_text()},
            ),
        )
        wait_task(node, node.lxc(vmid).status.start.post())
        ip = until(lambda: container_ip(node, vmid), "a DHCP address")
        guest = Guest(ip, key)
        until(
            lambda: guest.run("systemctl is-system-running --wait", check=False).returncode in (0, 1),
            "systemd",
        )
        guest.run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
            "apt-get install -y -qq --no-install-recommends python3 >/dev/null",
            timeout=480,
        )
        guest.install(binary.locate(), "/usr/bin/cloudflared")
        guest.run(
            "install -m 0755 /dev/stdin /usr/local/bin/e2e-origin",
            stdin=(HERE / "container_origin.py").read_text(),
        )
        guest.run(
            f"install -m 0644 /dev/stdin {LAB_CA} && update-ca-certificates",
            stdin=Path(lab.ca_path).read_text(),
        )
        marker = secrets.token_hex(6)
        guest.run(f"systemd-run --unit=e2e-origin /usr/local/bin/e2e-origin {SERVICE_PORT} {marker}")
        yield SimpleNamespace(vmid=vmid, ip=ip, guest=guest, marker=marker, hostname=f"edge-e2e-{vmid}")
    finally:
        destroy_ours(px)


def destroy_ours(px) -> None:
    """Deletes every container in this suite's vmid range (waiting for running tasks first)."""
    for res in px.cluster.resources.get(type="vm"):
        if res["vmid"] in VMID_RANGE:
            node = px.nodes(res["node"])
            for task in node.tasks.get(vmid=res["vmid"], source="active"):
                wait_task(node, task["upid"], ok_only=False)
            wait_task(node, node.lxc(res["vmid"]).delete(force=1, purge=1))


def container_ip(node, vmid: int) -> str | None:
    for iface in node.lxc(vmid).interfaces.get():
        if iface["name"] == "eth0" and iface.get("inet"):
            return iface["inet"].split("/")[0]
    return None


@pytest.fixture(scope="module")
def tunnel(cloudflare, container):
    """A remotely-managed tunnel whose connector runs in the container as a Type=notify unit."""
    suffix = secrets.token_hex(3)
    hosts = SimpleNamespace(
        app=f"edge-e2e-app-{suffix}.lab.test",
        sse=f"edge-e2e-sse-{suffix}.lab.test",
        other=f"edge-e2e-other-{suffix}.lab.test",
    )
    tunnel_id, token = cloudflare.create_tunnel(f"edge-e2e-{suffix}")
    service = f"http://127.0.0.1:{SERVICE_PORT}"
    cloudflare.put_config(
        tunnel_id,
        {
            "ingress": [
                {"hostname": hosts.app, "service": service},
                {"hostname": hosts.sse, "path": "^/sse", "service": service},
                {"service": "http_status:404"},
            ]
        },
    )
    for name in vars(hosts).values():
        cloudflare.route(name, tunnel_id)
    guest = container.guest
    guest.run(
        "install -d -m 0700 /etc/cloudflared && install -m 0600 /dev/stdin /etc/cloudflared/token",
        stdin=token,
    )
    # Type=notify: systemd-run returns only once cloudflared sent READY=1 (i.e. it is registered).
    guest.run(
        f"systemd-run --unit={UNIT} -p Type=notify -p TimeoutStartSec=60 {cloudflared_command()}", timeout=90
    )
    return SimpleNamespace(id=tunnel_id, token=token, hosts=hosts)


def through_edge(lab, host: str, path: str = "/", **kwargs) -> requests.Response:
    # verify= on the call: REQUESTS_CA_BUNDLE in the environment would win over a Session default.
    return requests.get(
        lab.edge.url + path, headers={"Host": host}, verify=str(lab.ca_path), timeout=30, **kwargs
    )


def test_request_through_the_edge_reaches_the_service_in_the_container(lab, cloudflare, container, tunnel):
    resp = through_edge(lab, tunnel.hosts.app)
    assert resp.status_code == 200
    assert resp.text == f"e2e origin {container.marker} in {container.hostname}"
    assert resp.headers["Server"] == "cloudflare"
    (client,) = cloudflare.connections(tunnel.id)
    # One connection per distinct edge address (at most --ha-connections): the lab edge has one.
    assert len(client["conns"]) == 1 and client["version"] == binary.VERSION
    assert {c["origin_ip"] for c in client["conns"]} == {container.ip}
    ready = container.guest.run(
        f"python3 -c 'import urllib.request as u; print(u.urlopen(\"http://{METRICS}/ready\").read().decode())'"
    )
    body = json.loads(ready.stdout)
    assert body == {"status": 200, "readyConnections": 1, "connectorId": client["id"]}
    assert "Registered tunnel connection" in container.guest.journal(UNIT)


def test_hostname_outside_the_ingress_gets_the_catch_all_404(lab, tunnel):
    assert through_edge(lab, tunnel.hosts.other).status_code == 404
    assert through_edge(lab, tunnel.hosts.sse, "/not-sse").status_code == 404  # path rule does not match


def test_sse_from_the_container_streams_through_the_edge(lab, tunnel):
    arrivals, events = [], []
    with through_edge(lab, tunnel.hosts.sse, "/sse?n=5&delay=0.4", stream=True) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        buffer = b""
        for chunk in resp.iter_content(chunk_size=None):
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                arrivals.append(time.time())
                events.append(event.decode())
    names = [e.split(" t=")[0] for e in events]
    assert names == [f"data: event {i}" for i in range(5)] + ["data: [DONE]"]
    emitted = [float(e.split(" t=")[1]) for e in events[:-1]]
    assert arrivals[0] < emitted[-1]  # the first chunk was here before the last was produced
    assert all(arrivals[i] < emitted[i + 1] for i in range(4))


def test_rotated_secret_refuses_the_old_token_once_the_connector_restarts(lab, cloudflare, container, tunnel):
    # Cloudflare (tunnel tokens): after a rotation the old token cannot establish new connections;
    # connectors already running stay active until they are restarted.
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    path = f"/accounts/{cloudflare.account}/cfd_tunnel/{tunnel.id}"
    cloudflare.call("PATCH", path, json={"tunnel_secret": secret})
    guest = container.guest
    time.sleep(1)
    assert through_edge(lab, tunnel.hosts.app).status_code == 200
    assert len(cloudflare.connections(tunnel.id)) == 1
    # Restart with the old token (what the role's handler does): the start fails (no READY=1: cloudflared
    # retries an "Unauthorized" cause forever) and the journal says why, in cloudflared's words.
    guest.run(f"systemctl stop {UNIT}; systemctl reset-failed {UNIT} || true", check=False)
    until(lambda: cloudflare.connections(tunnel.id) == [], "the old connections to be gone", timeout=30)
    restart = guest.run(
        f"systemd-run --unit={UNIT}-restart -p Type=notify -p TimeoutStartSec=15 {cloudflared_command()}",
        check=False,
        timeout=90,
    )
    assert restart.returncode != 0
    journal = guest.journal(f"{UNIT}-restart")
    refused = 'Register tunnel error from server side error="Unauthorized: Invalid tunnel secret"'
    assert refused in journal
    assert tunnel.token not in journal + guest.journal(UNIT)
    assert through_edge(lab, tunnel.hosts.app).status_code == 530
