"""Loopback-only test plumbing for the client tests: aiohttp apps in a background loop, a recording TCP
tap, a real squid forward proxy, and a way to run the `llm-relay` CLI exactly as a user does.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "llm_relay.client.cli"]
# A relay name that can never resolve (RFC 6761): tests that use it must dial through `connect_to`.
RELAY_NAME = "relay.client-tests.invalid"


class BackgroundLoop:
    """One asyncio loop in a daemon thread, hosting every in-process server a test needs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class ServedApp:
    """An aiohttp app served on 127.0.0.1:<ephemeral> inside a BackgroundLoop."""

    def __init__(self, bg: BackgroundLoop, app: web.Application, ssl_context: Any = None) -> None:
        self.bg, self.app = bg, app
        self.runner = web.AppRunner(app, access_log=None)

        async def start() -> int:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
            return self.runner.addresses[0][1]

        self.port: int = bg.run(start())
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.bg.run(self.runner.cleanup())


class Tap:
    """A TCP forwarder that records every byte in both directions: what crossed the wire to the relay."""

    def __init__(
        self, bg: BackgroundLoop, target_port: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """With `ssl_context` the tap terminates TLS: an HTTPS front for the plain-HTTP relay."""
        self.bg, self.target_port = bg, target_port
        self.sent = bytearray()  # towards the relay
        self.received = bytearray()  # back from the relay

        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_context)

        self.server = bg.run(start())
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray
    ) -> None:
        try:
            while data := await reader.read(65536):
                record += data
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pipe(reader, up_writer, self.sent), self._pipe(up_reader, writer, self.received)
        )

    def clear(self) -> None:
        self.sent.clear()
        self.received.clear()

    def stop(self) -> None:
        async def stop() -> None:
            self.server.close()

        self.bg.run(stop())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


SQUID_CONF = """\
http_port 127.0.0.1:{port}
pid_filename {dir}/squid.pid
cache_log {dir}/cache.log
# The capture: client address, method, full URL, status, every request header as received and every
# reply header as sent back to the client.
logformat capture %ts.%03tu %>a %rm %ru %>Hs headers=[%>h] reply=[%<h]
access_log stdio:{dir}/access.log capture
cache deny all
visible_hostname corporate-proxy.test
dns_nameservers 127.0.0.1
pinger_enable off
coredump_dir {dir}
shutdown_lifetime 0 seconds
# What breaks the original client: the corporate proxy strips API-key headers.
request_header_access Authorization deny all
{strip}{auth}
http_access deny all
"""
SQUID_AUTH = """\
auth_param basic program /usr/lib/squid/basic_ncsa_auth {dir}/passwd
auth_param basic realm corporate-proxy
acl authenticated proxy_auth REQUIRED
http_access allow localhost authenticated
"""


class Squid:
    """A real squid forward proxy on 127.0.0.1, foreground, own config; optionally demanding Basic auth."""

    def __init__(
        self, user: str | None = None, password: str | None = None, strip_headers: tuple[str, ...] = ()
    ) -> None:
        """`strip_headers`: request headers removed on the way too (as some proxies remove CF-Access-*)."""
        # Not under pytest's tmp dir: squid runs as `proxy`, which cannot traverse root's 0700 dirs.
        self.dir = Path(tempfile.mkdtemp(prefix="llm-relay-client-squid-"))
        self.port = free_port()
        auth = "http_access allow localhost"
        if user:
            hashed = subprocess.run(
                ["openssl", "passwd", "-apr1", "-stdin"],
                input=password,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            (self.dir / "passwd").write_text(f"{user}:{hashed}\n")
            auth = SQUID_AUTH.format(dir=self.dir)
        strip = "".join(f"request_header_access {name} deny all\n" for name in strip_headers)
        conf = SQUID_CONF.format(port=self.port, dir=self.dir, auth=auth, strip=strip)
        (self.dir / "squid.conf").write_text(conf)
        shutil.chown(self.dir, "proxy", "proxy")  # squid drops root privileges to `proxy` for its logs
        for path in self.dir.iterdir():
            shutil.chown(path, "proxy", "proxy")
        self.proc = subprocess.Popen(
            ["squid", "-N", "-f", str(self.dir / "squid.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "wb"),  # noqa: SIM115 - lives as long as the process
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            errors = (self.dir / "stderr.log").read_text()[-2000:]
            self.stop()
            raise RuntimeError(f"squid did not start: {errors}") from None
        self.url = f"http://127.0.0.1:{self.port}"

    def _log_size(self) -> int:
        path = self.dir / "access.log"
        return path.stat().st_size if path.exists() else 0

    def new_capture(self) -> None:
        """Start a fresh capture: access_log() returns only what is logged from now on."""
        self.log_offset = self._log_size()

    def access_log(self) -> str:
        """Lines logged since the last new_capture() (squid logs a transaction when it ends)."""
        until(lambda: self._log_size() > getattr(self, "log_offset", 0))
        time.sleep(0.3)  # let the rest of a burst land
        with (self.dir / "access.log").open("rb") as handle:
            handle.seek(getattr(self, "log_offset", 0))
            return handle.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class CliRunner:
    """Runs `llm-relay` in a subprocess with a private HOME/config and a clean proxy environment."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.config_dir = home / ".config" / "llm-relay"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.config_dir / "config.toml"

    def write_config(self, text: str) -> Path:
        self.config_path.write_text(text)
        self.config_path.chmod(0o600)
        return self.config_path

    def env(self, **extra: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH")}
        return {**keep, "HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"), **extra}

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env=self.env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
            check=False,
            cwd=self.home,
        )

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CLI, *args],
            env=self.env(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.home,
        )


def until(predicate: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("condition not met")


UPSTREAM_KEY = "sk-or-v1-client-tests-upstream-key"
RELAY_CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
metrics_listen = ""
access_log = true

[auth]
tokens_file = "client-tokens"

[envelope]
keys_file = "fernet-keys"
accept_v1 = {accept_v1}

[providers.openrouter]
base_url = "{upstream}/api/v1"
keys_file = "openrouter-keys"

[providers.anthropic]
base_url = "{upstream}/v1"
keys_file = "openrouter-keys"
auth = "x-api-key"
headers = {{ "anthropic-version" = "2023-06-01" }}
"""


LOG_FLUSH_S = 0.1  # how long the relay holds an access-log line at most (AccessLog's flush_interval)


class RelayServer:
    """`llm-relay-server` (the relay package's console entry point) with its own config and secret files."""

    def __init__(
        self,
        workdir: Path,
        upstream_url: str,
        token_lines: list[str],
        fernet_keys: list[str],
        upstream_key: str = UPSTREAM_KEY,
        client_key_lines: list[str] | None = None,
        accept_v1: bool | None = None,
    ) -> None:
        """`client_key_lines` (`name:key`) enable envelope v2; without them the relay answers v1 only
        (`accept_v1`, by default: exactly when there are no client keys, as an older relay did)."""
        workdir.mkdir(parents=True, exist_ok=True)
        secrets = {
            "client-tokens": token_lines,
            "fernet-keys": fernet_keys,
            "openrouter-keys": [upstream_key],
        }
        if client_key_lines:
            secrets["client-keys"] = client_key_lines
        for name, lines in secrets.items():
            path = workdir / name
            path.write_text("\n".join(lines) + "\n")
            path.chmod(0o600)
        self.port = free_port()
        config = workdir / "relay.toml"
        v1 = (not client_key_lines) if accept_v1 is None else accept_v1
        config.write_text(
            RELAY_CONFIG.format(port=self.port, upstream=upstream_url, accept_v1=str(v1).lower())
        )
        self.log = workdir / "relay.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llm_relay.server", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            env={**os.environ, "LLM_RELAY_CONFIG": str(config)},
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"relay did not start:\n{self.log.read_text()[-3000:]}") from None
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict]:
        """The access-log entries so far (JSON lines on stderr with event=request)."""
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [entry for entry in lines if entry.get("event") == "request"]

    def settled_requests(self) -> list[dict]:
        """The entries once every request that already ended has its line (see `wait_requests`): what a
        test counts before its own requests, on a relay that earlier tests used."""
        time.sleep(LOG_FLUSH_S * 3)
        return self.requests()

    def wait_requests(self, count: int, timeout: float = 10) -> list[dict]:
        """At least `count` access-log entries. A request's line is written when it ends and buffered for
        up to LOG_FLUSH_S (the relay batches its log writes), so it can lag the answer the client has."""

        def enough() -> list[dict] | None:
            entries = self.requests()
            return entries if len(entries) >= count else None

        return until(enough, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def client_toml(url: str, keys: dict[str, str], **extra: object) -> str:
    """A client config file with one profile; `extra` values are written as TOML scalars."""
    lines = [f'url = "{url}"', f'token = "{keys["token"]}"', f'fernet_key = "{keys["fernet_key"]}"']
    for key, value in extra.items():
        rendered = str(value).lower() if isinstance(value, bool) else json.dumps(value)
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def keygen(name: str) -> dict[str, str]:
    """What `llm-relay keygen --format json` prints (run as the user runs it)."""
    out = subprocess.run(
        [*CLI, "keygen", "--name", name, "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(out.stdout)


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue-relay.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName(RELAY_NAME),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path
