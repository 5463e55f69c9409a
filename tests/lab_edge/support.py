"""Helpers for edge/stand-in tests: run the stand-in as a process, a small origin, an edge client."""

import asyncio
import contextlib
import os
import re
import ssl
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

STANDIN = Path(__file__).resolve().parents[2] / "lab" / "cloudflared_standin" / "cloudflared"


class StandIn:
    """The stand-in as a subprocess; collects its log lines (stderr) as they come."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._collect())

    @classmethod
    async def start(
        cls, edge_port: int, ca_path, *flags: str, token: str | None = None, run_args=(), env=None
    ):
        """`cloudflared tunnel --no-autoupdate --metrics 127.0.0.1:0 FLAGS run RUN_ARGS`."""
        argv = [sys.executable, str(STANDIN), "tunnel", "--no-autoupdate", "--metrics", "127.0.0.1:0", *flags]
        argv += ["run", *run_args]
        full_env = {
            **os.environ,
            "LAB_EDGE_ADDR": f"127.0.0.1:{edge_port}",
            "LAB_EDGE_CA": str(ca_path),
            **(env or {}),
        }
        if token is not None:
            full_env["TUNNEL_TOKEN"] = token
        proc = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE, env=full_env)
        return cls(proc)

    async def _collect(self) -> None:
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode().rstrip())
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
                raise AssertionError(f"no {count}x {pattern!r} in stand-in log:\n{self.log}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def metrics_url(self) -> str:
        line = (await self.wait_for(r"Starting metrics server on"))[0]
        return "http://" + re.search(r"on (\S+)/metrics", line).group(1)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
        code = await asyncio.wait_for(self.proc.wait(), 20)
        await self._reader
        return code


class Origin:
    """A small HTTP origin: /hello, /echo, /sse?n=&delay= (records when each event was emitted)."""

    def __init__(self):
        self.emitted: list[float] = []
        self.disconnected = asyncio.Event()
        self.seen_headers: list[dict] = []
        app = web.Application()
        app.router.add_get("/hello", self.hello)
        app.router.add_post("/echo", self.echo)
        app.router.add_get("/sse", self.sse)
        app.router.add_get("/{tail:.*}", self.hello)
        self.runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def start(self) -> "Origin":
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def hello(self, request: web.Request) -> web.Response:
        self.seen_headers.append(dict(request.headers))
        return web.Response(text=f"hello from origin path={request.path_qs} host={request.host}")

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body, headers={"X-Echo-Length": str(len(body))})

    async def sse(self, request: web.Request) -> web.StreamResponse:
        count, delay = int(request.query.get("n", 5)), float(request.query.get("delay", 0.2))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            for i in range(count):
                self.emitted.append(time.monotonic())
                await response.write(f"data: event {i}\n\n".encode())
                await asyncio.sleep(delay)
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return response

    async def stop(self) -> None:
        await self.runner.cleanup()


def client_session(ca_path) -> aiohttp.ClientSession:
    """A client of the edge that verifies the lab CA (never disables TLS checks)."""
    tls = ssl.create_default_context(cafile=str(ca_path))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, force_close=True))


async def get(env, path: str, host: str, **headers: str) -> tuple[int, str, dict]:
    """One GET through the edge for `host`: (status, body text, response headers)."""
    async with (
        client_session(env.ca_path) as http,
        http.get(env.client_url + path, headers={"Host": host, **headers}) as resp,
    ):
        return resp.status, await resp.text(), dict(resp.headers)


def ingress(origin_port: int, hostname: str, *extra: dict) -> dict:
    return {
        "ingress": [
            *extra,
            {"hostname": hostname, "service": f"http://127.0.0.1:{origin_port}"},
            {"service": "http_status:404"},
        ]
    }
