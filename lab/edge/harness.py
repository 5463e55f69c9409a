"""An in-process edge + Cloudflare emulator on ephemeral ports, for the edge tests and the SSE bench.

Never binds the lab's fixed ports: the emulator app and the edge listen on port 0 of 127.0.0.1 with a
throw-away CA, the real cloudflared (lab/edge/binary.py) runs as a process against them, and
tunnels/records are made through the emulator's REST API (``CloudflareApi``, plain requests), as the
e2e test does against the real lab.
"""

import asyncio
import base64
import contextlib
import os
import re
import secrets
import shutil
import ssl
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import requests
from aiohttp import web

from lab import ca
from lab.cloudflare import create_app, state_of
from lab.context import LabContext
from lab.edge import binary
from lab.edge.component import start as start_edge

ACCOUNT = "0123456789abcdef0123456789abcdef"
ZONE = "lab.test"
HARNESS_TOKEN = "edge-harness-" + "x" * 27  # 40 chars, valid only for the in-process emulator
HARNESS_CLOUDFLARE = {
    "account_id": ACCOUNT,
    # Closed connections are forgotten at once (Cloudflare lists them pending reconnect for minutes; the
    # emulator's default): these tests check a stopped connector's connections are gone.
    "pending_reconnect_seconds": 0,
    "zones": [{"name": ZONE}],
    "tokens": [
        {
            "name": "edge-harness",
            "value": HARNESS_TOKEN,
            "permissions": [
                "Cloudflare Tunnel:Edit",
                "DNS:Edit",
                "Zone:Read",
                "Access: Apps and Policies:Edit",
                "Access: Service Tokens:Edit",
            ],
            "accounts": [ACCOUNT],
            "zones": [ZONE],
        }
    ],
}


class CloudflareApi:
    """The few emulator calls the edge tests need, through /client/v4; remembers what it made."""

    def __init__(self, base_url: str, token: str, account_id: str, ca_path, zone: str = ZONE):
        self.base = base_url.rstrip("/") + "/client/v4"
        self.account = account_id
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.verify = str(ca_path)  # per request: REQUESTS_CA_BUNDLE would override Session.verify
        self.zone_id = self.call("GET", "/zones", params={"name": zone})[0]["id"]
        self.tunnels: list[str] = []
        self.records: list[str] = []

    def call(self, method: str, path: str, retry_for: float = 60, **kwargs):
        """One API call; connection errors are retried for `retry_for` seconds (the shared lab daemon
        may be restarting), API errors are not."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                response = self.http.request(
                    method, self.base + path, timeout=30, verify=self.verify, **kwargs
                )
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        answer = response.json()
        if not answer["success"]:
            raise RuntimeError(f"{method} {path}: {answer['errors']}")
        return answer["result"]

    def create_tunnel(self, name: str) -> tuple[str, str]:
        """A remotely-managed tunnel; returns (id, connector token)."""
        body = {"name": name, "config_src": "cloudflare"}
        tunnel_id = self.call("POST", f"/accounts/{self.account}/cfd_tunnel", json=body)["id"]
        self.tunnels.append(tunnel_id)
        return tunnel_id, self.call("GET", f"/accounts/{self.account}/cfd_tunnel/{tunnel_id}/token")

    def put_config(self, tunnel_id: str, config: dict) -> int:
        path = f"/accounts/{self.account}/cfd_tunnel/{tunnel_id}/configurations"
        return self.call("PUT", path, json={"config": config})["version"]

    def route(self, hostname: str, tunnel_id: str) -> None:
        body = {
            "type": "CNAME",
            "name": hostname,
            "content": f"{tunnel_id}.cfargotunnel.com",
            "proxied": True,
        }
        self.records.append(self.call("POST", f"/zones/{self.zone_id}/dns_records", json=body)["id"])

    def rotate(self, tunnel_id: str) -> None:
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.call("PATCH", f"/accounts/{self.account}/cfd_tunnel/{tunnel_id}", json={"tunnel_secret": secret})

    def delete_tunnel(self, tunnel_id: str) -> None:
        """DELETE with cascade, as `cloudflared tunnel delete -f` sends it."""
        path = f"/accounts/{self.account}/cfd_tunnel/{tunnel_id}"
        self.call("DELETE", path, params={"cascade": "true"})

    def connections(self, tunnel_id: str) -> list[dict]:
        return self.call("GET", f"/accounts/{self.account}/cfd_tunnel/{tunnel_id}/connections")

    def delete_connections(self, tunnel_id: str) -> None:
        self.call("DELETE", f"/accounts/{self.account}/cfd_tunnel/{tunnel_id}/connections")

    def sweep(self, tunnel_prefix: str, record_prefix: str) -> None:
        """Deletes leftovers of an interrupted earlier run: tunnels and CNAMEs whose names carry these
        prefixes (names a suite owns alone)."""
        tunnels = self.call(
            "GET", f"/accounts/{self.account}/cfd_tunnel", params={"is_deleted": "false", "per_page": 100}
        )
        self.tunnels += [t["id"] for t in tunnels if t["name"].startswith(tunnel_prefix)]
        records = self.call(
            "GET", f"/zones/{self.zone_id}/dns_records", params={"type": "CNAME", "per_page": 100}
        )
        self.records += [r["id"] for r in records if r["name"].startswith(record_prefix)]
        self.cleanup()

    def cleanup(self) -> None:
        """Removes every record and tunnel this client made (tunnels with cascade: connectors may run)."""
        for record_id in self.records:
            with contextlib.suppress(RuntimeError, requests.RequestException):
                self.call("DELETE", f"/zones/{self.zone_id}/dns_records/{record_id}")
        for tunnel_id in self.tunnels:
            with contextlib.suppress(RuntimeError, requests.RequestException):
                path = f"/accounts/{self.account}/cfd_tunnel/{tunnel_id}"
                self.call("DELETE", path, params={"cascade": "true"})
        self.records.clear()
        self.tunnels.clear()


class InThread:
    """Calls a blocking client's methods in a worker thread (the emulator runs on the caller's loop)."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name: str):
        method = getattr(self._target, name)

        async def call(*args, **kwargs):
            return await asyncio.to_thread(method, *args, **kwargs)

        return call


class Cloudflared:
    """The real cloudflared as a subprocess; collects its log lines (stderr) as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, home: str):
        self.proc = proc
        self.home = home
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._collect())

    @classmethod
    async def start(
        cls,
        edge_port: int,
        ca_path,
        *flags: str,
        token: str | None = None,
        run_args=(),
        env=None,
        connections: int = 1,
    ):
        """`cloudflared tunnel --no-autoupdate --metrics 127.0.0.1:0 FLAGS run RUN_ARGS`, pointed at the
        in-process edge by cloudflared's own environment variables (as the lab inventory does).

        cloudflared opens one connection per distinct edge address it is given (at most --ha-connections);
        listing the one lab address `connections` times gives that many connections to the same edge."""
        argv = [str(binary.locate()), "tunnel", "--no-autoupdate", "--metrics", "127.0.0.1:0", *flags]
        argv += ["run", *run_args]
        home = tempfile.mkdtemp(prefix="cloudflared-home-")  # no ~/.cloudflared config of the caller's
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "TUNNEL_EDGE": ",".join([f"127.0.0.1:{edge_port}"] * connections),
            "TUNNEL_CACERT": str(ca_path),
            "TUNNEL_TRANSPORT_PROTOCOL": "http2",
            **(env or {}),
        }
        if token is not None:
            full_env["TUNNEL_TOKEN"] = token
        if os.environ.get("NOTIFY_SOCKET"):  # a test's socket in place of systemd's
            full_env["NOTIFY_SOCKET"] = os.environ["NOTIFY_SOCKET"]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=full_env, cwd=home
        )
        return cls(proc, home)

    async def _collect(self) -> None:
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._changed.set()
        self._changed.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, pattern: str, within: float = 15, count: int = 1) -> list[str]:
        """Waits until `count` log lines match `pattern` (regex); returns them."""
        deadline = time.monotonic() + within
        while True:
            found = [line for line in self.lines if re.search(pattern, line)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.returncode is not None and self._reader.done()):
                raise AssertionError(f"no {count}x {pattern!r} in cloudflared's log:\n{self.log}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def metrics_url(self) -> str:
        line = (await self.wait_for(r"Starting metrics server on"))[0]
        return "http://" + re.search(r"on (\S+)/metrics", line).group(1)

    async def stop(self, within: float = 40) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
        code = await asyncio.wait_for(self.proc.wait(), within)
        await self._reader
        shutil.rmtree(self.home, ignore_errors=True)
        return code


class Origin:
    """A small HTTP origin: /hello, /echo, /status/N, /big?mib=N (as fast as it can),
    /sse?n=&delay= (records when each event was emitted)."""

    def __init__(self):
        self.emitted: list[float] = []
        self.disconnected = asyncio.Event()
        self.seen_headers: list[dict] = []
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/echo", self.echo)
        app.router.add_get("/sse", self.sse)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_get("/big", self.big)
        app.router.add_get("/{tail:.*}", self.hello)
        self.runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def start(self) -> "Origin":
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def hello(self, request: web.Request) -> web.Response:
        self.seen_headers.append(dict(request.headers))
        return web.Response(text=f"hello from origin path={request.path_qs} host={request.host}")

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def big(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        piece = bytes(range(256)) * 256  # 64 KiB
        for _ in range(int(request.query.get("mib", 1)) * 16):
            await response.write(piece)
        return response

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body, headers={"X-Echo-Length": str(len(body))})

    async def sse(self, request: web.Request) -> web.StreamResponse:
        """`n` events `delay` seconds apart; each carries the origin's monotonic emit time."""
        count, delay = int(request.query.get("n", 5)), float(request.query.get("delay", 0.2))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            for i in range(count):
                if i:
                    await asyncio.sleep(delay)
                self.emitted.append(time.monotonic())
                await response.write(f"data: event {i} t={self.emitted[-1]:.6f}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return response

    async def stop(self) -> None:
        await self.runner.cleanup()


def server_tls(certs: dict) -> ssl.SSLContext:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs["crt"], certs["key"])
    return tls


@asynccontextmanager
async def edge_harness(work_dir: Path, bind_host: str = "127.0.0.1"):
    """Yields a namespace: api (CloudflareApi whose methods are awaitable), cloudflare (emulator state),
    edge, client_url, connector_port, ca_path. On exit what `api` made is deleted and all is stopped."""
    certs = ca.ensure(work_dir / "ca")
    tls = server_tls(certs)
    app = create_app(HARNESS_CLOUDFLARE, None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    api_port = runner.addresses[0][1]
    ctx = LabContext(
        config={"edge": {"port": 0, "ports": [0]}},
        ssl_context=tls,
        ca_path=certs["ca_crt"],
        state_dir=work_dir,
        cache_dir=work_dir,
        bind_hosts=[bind_host],
        registry={"cloudflare": state_of(app)},
    )
    stop_edge = await start_edge(ctx)
    edge = ctx.registry["edge"]
    api = await asyncio.to_thread(
        CloudflareApi, f"https://127.0.0.1:{api_port}", HARNESS_TOKEN, ACCOUNT, certs["ca_crt"]
    )
    try:
        yield SimpleNamespace(
            api=InThread(api),
            cloudflare=state_of(app),
            edge=edge,
            client_url=f"https://{bind_host}:{edge.client_port}",
            connector_port=edge.connector_port,
            ca_path=certs["ca_crt"],
        )
    finally:
        await asyncio.to_thread(api.cleanup)
        await stop_edge()
        await runner.cleanup()
