#!/usr/bin/env python3
"""cloudflared STAND-IN for the llm-relay lab. This is NOT Cloudflare's cloudflared.

Real cloudflared cannot be downloaded in the lab, so this file implements the part of its CLI contract our
`cloudflared` role uses, and talks to the lab edge (lab/edge) instead of Cloudflare:

    cloudflared --version | -v | version
    cloudflared tunnel [tunnel flags] run [run flags] (--token-file PATH | --token TOKEN)
                                                      (or TUNNEL_TOKEN / TUNNEL_TOKEN_FILE)

The flags are the real ones, at the real level (TUNNEL_FLAGS / RUN_FLAGS below); usage errors exit 255
with "See 'cloudflared tunnel run --help'.", an undefined flag prints "Incorrect Usage" and exits 0, as the
real binary does (see parse_command_line).

It serves /metrics (Prometheus text), /ready (200 only while connected, else 503, body
{"status", "readyConnections", "connectorId"}) and /healthcheck on the metrics address, tells systemd
READY=1 through $NOTIFY_SOCKET once the first connection is registered (the real unit is Type=notify),
receives the tunnel's remote configuration from the edge (version-aware) and applies its ingress rules to
the requests the edge hands it, streaming response bodies back as they arrive.

Lab-only settings (the real binary has no such thing, which is why they are environment-only):
    LAB_EDGE_ADDR  host:port of the lab edge's connector side (default 10.87.0.1:7844)
    LAB_EDGE_CA    PEM file of the lab CA that signs the edge's certificate (default: system trust store)

Single stdlib-only file on purpose: a role installs it as /usr/bin/cloudflared in a Debian 12 container
that has python3 and nothing else. The framing helpers below are also imported by the lab edge.
"""

import asyncio
import base64
import binascii
import contextlib
import json
import os
import platform
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

VERSION = "2025.8.1"
STANDIN = "llm-relay lab stand-in, not Cloudflare's cloudflared"
LOCATION_UNKNOWN = "unknown"
EXIT_FAILURE = 1

# ----------------------------------------------------------------------------------------------------
# Wire protocol between the lab edge and this stand-in (lab-only; real cloudflared speaks QUIC/HTTP2 RPC).
# A connector keeps long-lived TLS connections to the edge's port 7844. Each multiplexes streams with
# frames "!IIB" = payload length, stream id, frame type, then the payload.
#   stream 0: REGISTER (connector->edge JSON incl. token), REGISTERED / REGISTER_ERROR (edge JSON),
#             CONFIG (edge->connector JSON {"version", "config"}), GOAWAY (JSON {"reason"}; from the
#             connector: it is shutting down, the edge opens no new streams on that connection).
#   stream n>0, opened by the edge for one client request: HEADERS (JSON), DATA* (raw bytes), END.
#             The connector answers on the same stream: HEADERS (status, headers), DATA*, END; or RESET
#             (JSON {"error"}) when it cannot. The edge sends RESET when its client went away.
#   Flow control: each side may have at most STREAM_WINDOW body bytes of a stream in flight (plus one
#             chunk); the receiver returns credit with WINDOW (4-byte increment) once it has passed the
#             bytes on (to the client, or to the origin), so a slow reader never makes the peer buffer.
#             Both sides advertise {"window": N} in REGISTER / REGISTERED; without it there is no limit.
# ----------------------------------------------------------------------------------------------------
FRAME_HEADER = struct.Struct("!IIB")
MAX_PAYLOAD = 1 << 20
REGISTER, REGISTERED, REGISTER_ERROR, CONFIG, GOAWAY = 1, 2, 3, 4, 5
HEADERS, DATA, END, RESET, WINDOW = 10, 11, 12, 13, 14
STREAM_WINDOW = 256 * 1024
# Seconds a stopping connector keeps serving after its GOAWAY even when idle: streams the edge opened
# before it read the GOAWAY are still on their way.
GOAWAY_SETTLE = 0.5
WINDOW_INCREMENT = struct.Struct("!I")


def frame(stream_id: int, kind: int, payload: bytes = b"") -> bytes:
    return FRAME_HEADER.pack(len(payload), stream_id, kind) + payload


def json_frame(stream_id: int, kind: int, obj) -> bytes:
    return frame(stream_id, kind, json.dumps(obj, separators=(",", ":")).encode())


def window_frame(stream_id: int, consumed: int) -> bytes:
    return frame(stream_id, WINDOW, WINDOW_INCREMENT.pack(consumed))


class Credit:
    """Send credit of one stream: how many more body bytes the peer agreed to buffer."""

    def __init__(self, window: int | None = STREAM_WINDOW):
        # None: the peer did not advertise flow control (an older edge or connector): never wait.
        self.available = float("inf") if window is None else window
        self._more = asyncio.Event()

    async def take(self, size: int) -> None:
        """Waits until some credit is left, then spends `size` (one chunk may overshoot the window)."""
        while self.available <= 0:
            self._more.clear()
            await self._more.wait()
        self.available -= size

    def give(self, payload: bytes) -> None:
        self.available += WINDOW_INCREMENT.unpack(payload)[0]
        self._more.set()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """One frame; asyncio.IncompleteReadError at EOF, ValueError on an oversized frame."""
    length, stream_id, kind = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
    if length > MAX_PAYLOAD:
        raise ValueError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD} limit")
    return stream_id, kind, await reader.readexactly(length)


# ----------------------------------------------------------------------------------------------------
# Logging in cloudflared's console format: "2026-01-01T00:00:00Z INF message key=value" on stderr.
# ----------------------------------------------------------------------------------------------------
LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3, "fatal": 4}
LEVEL_TAGS = ["DBG", "INF", "WRN", "ERR", "FTL"]


class Log:
    def __init__(self, level: str = "info", logfile: str | None = None):
        self.threshold = LEVELS.get(level, 1)
        self.file = open(logfile, "a", encoding="utf-8") if logfile else None  # noqa: SIM115

    def _emit(self, level: int, msg: str, fields: dict) -> None:
        if level < self.threshold:
            return
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        parts = [f"{stamp} {LEVEL_TAGS[level]} {msg}"]
        for key, value in fields.items():
            text = str(value)
            parts.append(
                f"{key}={json.dumps(text)}" if (" " in text or '"' in text or not text) else f"{key}={text}"
            )
        line = " ".join(parts)
        print(line, file=sys.stderr, flush=True)
        if self.file:
            self.file.write(line + "\n")
            self.file.flush()

    def debug(self, msg, **f):
        self._emit(0, msg, f)

    def info(self, msg, **f):
        self._emit(1, msg, f)

    def warn(self, msg, **f):
        self._emit(2, msg, f)

    def error(self, msg, **f):
        self._emit(3, msg, f)


# ----------------------------------------------------------------------------------------------------
# Command line, as cloudflared's urfave/cli v2 parses it: `tunnel` flags before `run`, `run` flags after it;
# each level knows only its own flags (cmd/cloudflared/tunnel/cmd.go tunnelFlags() for `tunnel`,
# subcommands.go buildRunCommand() for `run`). Flags of the origin (configureProxyFlags) exist at both
# levels. The stand-in accepts every flag of those lists that the role or a user's cloudflared_extra_args
# may pass; those it has no use for (origin flags of a remotely-managed tunnel, ICMP sources...) are
# accepted and listed in the Settings log line, as the real binary does.
# ----------------------------------------------------------------------------------------------------
class UsageError(Exception):
    """cliutil.UsageError: printed with "See 'cloudflared tunnel run --help'.", exit code 255."""


class FlagError(Exception):
    """A flag urfave/cli cannot parse at that level: "Incorrect Usage: ..." and the command's help."""


# flag -> (takes a value, environment variable, default, aliases)
PROXY_FLAGS = {
    "url": (True, "TUNNEL_URL", "", ()),
    "hello-world": (False, "TUNNEL_HELLO_WORLD", False, ()),
    "socks5": (False, "TUNNEL_SOCKS", False, ()),
    "proxy-connect-timeout": (True, None, "30s", ()),
    "proxy-tls-timeout": (True, None, "10s", ()),
    "proxy-tcp-keepalive": (True, None, "30s", ()),
    "proxy-no-happy-eyeballs": (False, None, False, ()),
    "proxy-keepalive-connections": (True, None, "100", ()),
    "proxy-keepalive-timeout": (True, None, "1m30s", ()),
    "proxy-connection-timeout": (True, None, "1m30s", ()),
    "proxy-expect-continue-timeout": (True, None, "1m30s", ()),
    "http-host-header": (True, "TUNNEL_HTTP_HOST_HEADER", "", ()),
    "origin-server-name": (True, "TUNNEL_ORIGIN_SERVER_NAME", "", ()),
    "unix-socket": (True, "TUNNEL_UNIX_SOCKET", "", ()),
    "origin-ca-pool": (True, "TUNNEL_ORIGIN_CA_POOL", "", ()),
    "no-tls-verify": (False, "NO_TLS_VERIFY", False, ()),
    "no-chunked-encoding": (False, "TUNNEL_NO_CHUNKED_ENCODING", False, ()),
    "http2-origin": (False, "TUNNEL_ORIGIN_ENABLE_HTTP2", False, ()),
    "bastion": (False, "TUNNEL_BASTION", False, ()),
    "proxy-address": (True, "TUNNEL_PROXY_ADDRESS", "127.0.0.1", ()),
    "proxy-port": (True, "TUNNEL_PROXY_PORT", "0", ()),
}
# Shared by both levels (cmd.go adds selectProtocolFlag and postQuantumFlag to tunnelFlags, and
# subcommands.go to the run command's flags).
PROTOCOL_FLAGS = {
    "protocol": (True, "TUNNEL_TRANSPORT_PROTOCOL", "auto", ("p",)),
    "post-quantum": (False, "TUNNEL_POST_QUANTUM", False, ("pq",)),
}
TUNNEL_FLAGS = {
    "no-autoupdate": (False, "NO_AUTOUPDATE", False, ()),
    "autoupdate-freq": (True, None, "24h", ()),
    "metrics": (True, "TUNNEL_METRICS", "", ()),
    "loglevel": (True, "TUNNEL_LOGLEVEL", "info", ()),
    "transport-loglevel": (True, "TUNNEL_PROTO_LOGLEVEL", "info", ("proto-loglevel",)),
    "logfile": (True, "TUNNEL_LOGFILE", "", ()),
    "log-directory": (True, "TUNNEL_LOGDIRECTORY", "", ()),
    "retries": (True, "TUNNEL_RETRIES", "5", ()),
    "max-edge-addr-retries": (True, None, "8", ()),
    "grace-period": (True, "TUNNEL_GRACE_PERIOD", "30s", ()),
    "ha-connections": (True, None, "4", ()),
    # cmd.go tunnelFlags(): `Name: cfdflags.EdgeIpVersion, Value: "auto"`.
    "edge-ip-version": (True, "TUNNEL_EDGE_IP_VERSION", "auto", ()),
    "edge-bind-address": (True, "TUNNEL_EDGE_BIND_ADDRESS", "", ()),
    "region": (True, "TUNNEL_REGION", "", ()),
    "label": (True, "TUNNEL_LABEL", "", ()),
    "tag": (True, "TUNNEL_TAG", "", ()),
    "pidfile": (True, "TUNNEL_PIDFILE", "", ()),
    **PROXY_FLAGS,
    **PROTOCOL_FLAGS,
}
RUN_FLAGS = {
    "token": (True, "TUNNEL_TOKEN", "", ()),
    "token-file": (True, "TUNNEL_TOKEN_FILE", "", ()),
    "force": (False, None, False, ("f",)),
    "credentials-file": (True, "TUNNEL_CRED_FILE", "", ("cred-file",)),
    "credentials-contents": (True, "TUNNEL_CRED_CONTENTS", "", ()),
    "features": (True, "TUNNEL_FEATURES", "", ("F",)),
    "icmpv4-src": (True, "TUNNEL_ICMPV4_SRC", "", ()),
    "icmpv6-src": (True, "TUNNEL_ICMPV6_SRC", "", ()),
    "max-active-flows": (True, "TUNNEL_MAX_ACTIVE_FLOWS", "0", ()),
    "dns-resolver-addrs": (True, "TUNNEL_DNS_RESOLVER_ADDRS", "", ()),
    **PROXY_FLAGS,
    **PROTOCOL_FLAGS,
}
# Flags that may be given more than once (urfave StringSliceFlag); the stand-in keeps them comma-joined.
REPEATABLE = {"tag", "features", "dns-resolver-addrs"}
# IntFlag / DurationFlag values urfave/cli parses with the flag (a bad one is a flag error).
INT_FLAGS = {
    "retries",
    "ha-connections",
    "max-edge-addr-retries",
    "proxy-keepalive-connections",
    "max-active-flows",
}
DURATION_FLAGS = {"grace-period", "autoupdate-freq", "proxy-connect-timeout", "proxy-tls-timeout"}


def _canonical(spec: dict, name: str) -> str | None:
    if name in spec:
        return name
    return next((flag for flag, entry in spec.items() if name in entry[3]), None)


def parse_flags(args: list[str], spec: dict, opts: dict) -> list[str]:
    """Consumes the leading flags of `spec` (Go flag syntax: -x, --x, --x=v, --x v) into opts and
    returns the rest; urfave/cli stops at the first argument that is not a flag."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        if args[i] == "--":
            return args[i + 1 :]
        given, has_inline, inline = args[i].lstrip("-").partition("=")
        name = _canonical(spec, given)
        if name is None:
            raise FlagError(f"flag provided but not defined: -{given}")
        if spec[name][0]:
            if not has_inline:
                i += 1
                if i >= len(args):
                    raise FlagError(f"flag needs an argument: -{given}")
                inline = args[i]
            if (name in INT_FLAGS and not re.fullmatch(r"[+-]?\d+", inline)) or (
                name in DURATION_FLAGS and not _is_duration(inline)
            ):
                raise FlagError(f'invalid value "{inline}" for flag -{given}: parse error')
            if name in REPEATABLE and opts.get(name):
                inline = f"{opts[name]},{inline}"
            opts[name] = inline
        else:
            if has_inline and inline.lower() not in ("true", "false", "1", "0", "t", "f"):
                raise FlagError(f'invalid boolean value "{inline}" for -{given}: parse error')
            opts[name] = inline.lower() in ("true", "1", "t") if has_inline else True
        i += 1
    return args[i:]


def _is_duration(text: str) -> bool:
    """Go's time.ParseDuration: a unit is required (only "0" goes without)."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return text == "0"
    try:
        parse_duration(text)
        return True
    except UsageError:
        return False


def with_env_defaults(spec: dict, opts: dict) -> dict:
    for name, (_, env, default, _aliases) in spec.items():
        if name not in opts:
            opts[name] = os.environ.get(env, default) if env else default
    return opts


def parse_duration(text: str | int | float) -> float:
    """Go-style "30s", "1m30s", "500ms" or a plain number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, units = 0.0, {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f"invalid duration {text!r}")
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


# ----------------------------------------------------------------------------------------------------
# Tunnel token: base64 of JSON {"a": account tag, "t": tunnel id, "s": base64 secret}.
# ----------------------------------------------------------------------------------------------------
def parse_token(token: str) -> dict:
    try:
        data = json.loads(base64.b64decode(token.strip(), validate=True))
        if not all(isinstance(data.get(k), str) and data[k] for k in ("a", "t", "s")):
            raise ValueError("missing field")
        uuid.UUID(data["t"])
        return data
    except (ValueError, binascii.Error, TypeError, AttributeError) as exc:
        raise UsageError("Provided Tunnel token is not valid.") from exc


def read_token(opts: dict, args: list[str]) -> str:
    """subcommands.go runCommand: --token, else --token-file, else a tunnel name (which the stand-in, a
    runner of remotely-managed tunnels, cannot run), else a usage error."""
    if len(args) > 1:
        raise UsageError(
            '"cloudflared tunnel run" accepts only one argument, the ID or name of the tunnel to run.'
        )
    if opts["token"]:
        return opts["token"]
    if opts["token-file"]:
        try:
            with open(opts["token-file"], encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            reason = (exc.strerror or str(exc))[:1].lower() + (exc.strerror or str(exc))[1:]
            raise UsageError(f"Failed to read token file: open {opts['token-file']}: {reason}") from exc
    if args:
        raise Fatal("the stand-in runs remotely-managed tunnels from a token only, not by name")
    raise UsageError(
        '"cloudflared tunnel run" requires the ID or name of the tunnel to run as the last command line '
        "argument or in the configuration file."
    )


# ----------------------------------------------------------------------------------------------------
# Ingress rules, as cloudflared applies them: first rule whose hostname (exact or "*." wildcard) and
# path regex (searched, unanchored) match the request wins; the last rule is the catch-all.
# ----------------------------------------------------------------------------------------------------
SERVICE_STATUS = re.compile(r"^http_status:(\d{3})$")
DEFAULT_ORIGIN = {"connectTimeout": 30, "noTLSVerify": False}


class Rule:
    def __init__(self, raw: dict, defaults: dict):
        self.hostname = (raw.get("hostname") or "").lower()
        self.path = re.compile(raw["path"]) if raw.get("path") else None
        self.service = raw.get("service", "")
        self.origin = {**DEFAULT_ORIGIN, **defaults, **(raw.get("originRequest") or {})}
        status = SERVICE_STATUS.match(self.service)
        self.status = int(status.group(1)) if status else None
        if not (self.status or self.service == "hello_world" or re.match(r"^https?://[^/]+", self.service)):
            raise ValueError(
                f"unsupported service {self.service!r} (stand-in serves http, https, http_status)"
            )

    def matches(self, host: str, path: str) -> bool:
        host = host.lower()
        if self.hostname and self.hostname != "*":
            if self.hostname.startswith("*."):
                if not host.endswith(self.hostname[1:]):
                    return False
            elif host != self.hostname:
                return False
        return not self.path or bool(self.path.search(path))


def compile_ingress(config: dict) -> list[Rule]:
    defaults = config.get("originRequest") or {}
    rules = [Rule(raw, defaults) for raw in config.get("ingress") or []]
    if not rules:
        # What cloudflared does with no ingress at all: every request gets 503.
        return [Rule({"service": "http_status:503"}, defaults)]
    if rules[-1].hostname or rules[-1].path:
        raise ValueError(
            "The last ingress rule must match all URLs (i.e. it should not have a hostname or path)"
        )
    return rules


# ----------------------------------------------------------------------------------------------------
# Origin client: a minimal streaming HTTP/1.1 client on asyncio (one origin connection per request).
# ----------------------------------------------------------------------------------------------------
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "expect",  # the edge already answered 100-continue to its client; the origin gets the body at once
}


class OriginError(Exception):
    pass


async def open_origin(service: str, origin: dict):
    url = urlsplit(service)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    tls = None
    if url.scheme == "https":
        tls = ssl.create_default_context(cafile=origin.get("caPool") or None)
        if origin.get("noTLSVerify"):
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
    server_name = (origin.get("originServerName") or host) if tls else None
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, server_hostname=server_name),
            parse_duration(origin.get("connectTimeout", 30)),
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise OriginError(f"dial tcp {host}:{port}: {exc}") from exc


async def read_head(reader: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]]]:
    """The final response head; interim 1xx answers (100 Continue, 103 Early Hints) are skipped."""
    while True:
        status_line = await reader.readline()
        match = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
        if not match:
            raise OriginError(f"malformed HTTP response {status_line[:60]!r}")
        headers = []
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        status = int(match.group(1))
        if not 100 <= status < 200:
            return status, headers


async def read_exactly(reader: asyncio.StreamReader, size: int):
    """Yields `size` bytes as they arrive, in pieces of at most 64 KiB."""
    while size:
        chunk = await reader.read(min(size, 65536))
        if not chunk:
            raise OriginError("origin closed the connection mid-body")
        size -= len(chunk)
        yield chunk


async def iter_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]], has_body: bool):
    """Yields body bytes as they arrive: chunked, by Content-Length, or until the origin closes."""
    lower = {k.lower(): v for k, v in headers}
    if not has_body:
        return
    if "chunked" in lower.get("transfer-encoding", "").lower():
        while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
            async for chunk in read_exactly(reader, size):
                yield chunk
            await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):  # trailers
            pass
    elif "content-length" in lower:
        async for chunk in read_exactly(reader, int(lower["content-length"])):
            yield chunk
    else:
        while chunk := await reader.read(65536):
            yield chunk


# ----------------------------------------------------------------------------------------------------
# Runtime state shared with the metrics thread.
# ----------------------------------------------------------------------------------------------------
class State:
    def __init__(self):
        self.connector_id = str(uuid.uuid4())
        self.connected: dict[int, bool] = {}
        self.locations: dict[int, str] = {}
        self.config_version = -1
        self.total_requests = 0
        self.request_errors = 0
        self.concurrent = 0
        self.by_code: dict[int, int] = {}

    def ready_connections(self) -> int:
        return sum(1 for up in self.connected.values() if up)


def metrics_text(state: State) -> str:
    lines = [
        "# HELP build_info Build and version information",
        "# TYPE build_info gauge",
        f'build_info{{goversion="python{platform.python_version()}",revision="lab-standin",'
        f'version="{VERSION}"}} 1',
        "# HELP cloudflared_tunnel_ha_connections Number of active ha connections",
        "# TYPE cloudflared_tunnel_ha_connections gauge",
        f"cloudflared_tunnel_ha_connections {state.ready_connections()}",
        "# HELP cloudflared_tunnel_total_requests Amount of requests proxied through all the tunnels",
        "# TYPE cloudflared_tunnel_total_requests counter",
        f"cloudflared_tunnel_total_requests {state.total_requests}",
        "# HELP cloudflared_tunnel_request_errors Amount of requests errors",
        "# TYPE cloudflared_tunnel_request_errors counter",
        f"cloudflared_tunnel_request_errors {state.request_errors}",
        "# HELP cloudflared_tunnel_concurrent_requests_per_tunnel Concurrent requests per tunnel",
        "# TYPE cloudflared_tunnel_concurrent_requests_per_tunnel gauge",
        f"cloudflared_tunnel_concurrent_requests_per_tunnel {state.concurrent}",
        "# HELP cloudflared_tunnel_response_by_code Count of responses by HTTP status code",
        "# TYPE cloudflared_tunnel_response_by_code counter",
    ]
    lines += [
        f'cloudflared_tunnel_response_by_code{{status_code="{c}"}} {n}'
        for c, n in sorted(state.by_code.items())
    ]
    lines += [
        "# HELP cloudflared_tunnel_server_locations Where each tunnel is connected to",
        "# TYPE cloudflared_tunnel_server_locations gauge",
    ]
    lines += [
        f'cloudflared_tunnel_server_locations{{connection_id="{i}",edge_location="{loc}"}} 1'
        for i, loc in sorted(state.locations.items())
        if state.connected.get(i)
    ]
    lines += [
        "# HELP cloudflared_orchestration_config_version Remote configuration version in use",
        "# TYPE cloudflared_orchestration_config_version gauge",
        f"cloudflared_orchestration_config_version {state.config_version}",
    ]
    return "\n".join(lines) + "\n"


DEFAULT_METRICS_PORTS = range(20241, 20246)  # cloudflared >= 2024.12.1 without --metrics, then random


def serve_metrics(address: str, state: State, log: Log) -> ThreadingHTTPServer:
    """Serves on `address`, or without one on the first free port of 20241-20245 (else a random one)."""
    host, _, port = address.rpartition(":") if address else ("127.0.0.1", "", "")
    host = host.strip("[]") or "127.0.0.1"
    host = "127.0.0.1" if host == "localhost" else host
    candidates = [int(port)] if address else [*DEFAULT_METRICS_PORTS, 0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, "text/plain; version=0.0.4; charset=utf-8", metrics_text(state))
            elif path == "/ready":
                ready = state.ready_connections()
                code = 200 if ready else 503
                body = {"status": code, "readyConnections": ready, "connectorId": state.connector_id}
                self._send(code, "application/json", json.dumps(body))
            elif path == "/healthcheck":
                self._send(200, "text/plain; charset=utf-8", "OK\n")
            else:
                self._send(404, "text/plain; charset=utf-8", "404 page not found\n")

        def _send(self, code, ctype, text):
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # metrics scrapes are not worth a log line
            pass

    for candidate in candidates:
        try:
            server = ThreadingHTTPServer((host, candidate), Handler)
            break
        except OSError:
            if candidate == candidates[-1]:
                raise
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    bound = server.server_address
    log.info(f"Starting metrics server on {bound[0]}:{bound[1]}/metrics")
    return server


def sd_notify(message: str) -> None:
    """systemd's notify protocol: one datagram to $NOTIFY_SOCKET ("@" = abstract namespace)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        sock.sendall(message.encode())


# ----------------------------------------------------------------------------------------------------
# The tunnel: HA connections to the edge, streams proxied to origins by ingress.
# ----------------------------------------------------------------------------------------------------
class Fatal(Exception):
    """A failure that ends the process with exit code 1 (bad token after the retries, …)."""


class Channel:
    """One request stream as the connector sees it: its request body, its send credit, its answer."""

    def __init__(self, sid: int, writer: asyncio.StreamWriter, body: asyncio.Queue, credit: Credit):
        self.sid, self.writer, self.body, self.credit = sid, writer, body, credit

    async def head(self, status: int, headers: list) -> None:
        self.writer.write(json_frame(self.sid, HEADERS, {"status": status, "headers": headers}))
        await self.writer.drain()

    async def data(self, chunk: bytes) -> None:
        await self.credit.take(len(chunk))  # waits while the edge still holds a window's worth
        self.writer.write(frame(self.sid, DATA, chunk))
        await self.writer.drain()

    async def end(self) -> None:
        self.writer.write(frame(self.sid, END))
        await self.writer.drain()

    def reset(self, error: str) -> None:
        with contextlib.suppress(OSError):
            self.writer.write(json_frame(self.sid, RESET, {"error": error}))

    async def pump_request_body(self, writer_o: asyncio.StreamWriter, chunked: bool) -> None:
        """Request body to the origin; credit goes back to the edge once the origin took the bytes."""
        while (chunk := await self.body.get()) is not None:
            writer_o.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            await writer_o.drain()
            self.writer.write(window_frame(self.sid, len(chunk)))
        if chunked:
            writer_o.write(b"0\r\n\r\n")
            await writer_o.drain()


class Tunnel:
    def __init__(self, token: str, token_data: dict, opts: dict, state: State, log: Log):
        self.token = token
        self.tunnel_id = token_data["t"]
        self.opts = opts
        self.state = state
        self.log = log
        self.edge_addr = os.environ.get("LAB_EDGE_ADDR", "10.87.0.1:7844")
        self.edge_ca = os.environ.get("LAB_EDGE_CA") or None
        self.rules = compile_ingress({})
        self.max_retries = int(opts["retries"])
        self.notified = False
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.inflight: set[asyncio.Task] = set()
        self.stopping = False
        self.started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    # -- connections --------------------------------------------------------------------------------
    async def run(self) -> None:
        count = max(1, int(self.opts["ha-connections"]))
        tasks = [asyncio.create_task(self.connection_loop(i)) for i in range(count)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()

    async def connection_loop(self, index: int) -> None:
        failures = 0
        while not self.stopping:
            error, registered = await self.connect_once(index)
            if self.stopping:
                return
            # Like cloudflared: a refused registration (bad or rotated secret) is retried with backoff,
            # and only an exhausted retry budget (--retries) ends the process with exit code 1.
            failures = 0 if registered else failures + 1
            if failures > self.max_retries:
                raise Fatal(error)
            delay = min(60, 2 ** max(0, failures - 1))
            self.log.info(f"Retrying connection in up to {delay}s", connIndex=index)
            await asyncio.sleep(delay)

    async def connect_once(self, index: int) -> tuple[str, bool]:
        """Returns (error, was_registered) once the connection is gone or was refused."""
        host, _, port = self.edge_addr.rpartition(":")
        host = host.strip("[]")
        tls = ssl.create_default_context(cafile=self.edge_ca)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port), ssl=tls, server_hostname=host), 15
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            err = f"failed to dial to edge: {exc}"
            self.log.error("Unable to establish connection with Cloudflare edge", error=err, connIndex=index)
            return err, False
        registered = False
        try:
            writer.write(json_frame(0, REGISTER, self.registration(index)))
            await writer.drain()
            _, kind, payload = await asyncio.wait_for(read_frame(reader), 15)
            answer = json.loads(payload or b"{}")
            if kind == REGISTER_ERROR:
                err = answer.get("error", "registration refused")
                self.log.error("Register tunnel error from server side", error=err, connIndex=index)
                return err, False
            if kind != REGISTERED:
                raise ValueError(f"unexpected frame type {kind} during registration")
            registered = True
            self.on_registered(index, answer)
            return await self.serve(index, reader, writer, answer.get("window")), True
        except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError) as exc:
            err = str(exc) or type(exc).__name__
            self.log.error("Serve tunnel error", error=err, connIndex=index)
            return err, registered
        finally:
            self.state.connected[index] = False
            self.writers.pop(index, None)
            writer.close()
            if registered and not self.stopping:
                self.log.warn("Connection terminated", connIndex=index)

    def registration(self, index: int) -> dict:
        return {
            "token": self.token,
            "conn_index": index,
            "connector_id": self.state.connector_id,
            "version": f"{VERSION} (lab stand-in)",
            "arch": f"{platform.system().lower()}_{platform.machine()}",
            "protocol": self.protocol(),
            "run_at": self.started_at,
            "window": STREAM_WINDOW,
            "features": [],
        }

    def protocol(self) -> str:
        return "http2" if self.opts["protocol"] == "auto" else self.opts["protocol"]

    def on_registered(self, index: int, answer: dict) -> None:
        self.state.connected[index] = True
        self.state.locations[index] = answer.get("location", LOCATION_UNKNOWN)
        self.log.info(
            "Registered tunnel connection",
            connIndex=index,
            connection=answer.get("connection_id", ""),
            event=0,
            ip=self.edge_addr.rpartition(":")[0],
            location=self.state.locations[index],
            protocol=self.protocol(),
        )
        if not self.notified:
            self.notified = True
            sd_notify("READY=1")

    async def serve(self, index: int, reader, writer, window: int | None) -> str:
        self.writers[index] = writer
        streams: dict[int, asyncio.Queue] = {}
        credits: dict[int, Credit] = {}
        tasks: dict[int, asyncio.Task] = {}
        try:
            while True:
                sid, kind, payload = await read_frame(reader)
                if sid == 0:
                    if kind == CONFIG:
                        self.apply_config(json.loads(payload))
                    elif kind == GOAWAY:
                        return json.loads(payload or b"{}").get("reason", "edge closed the connection")
                    continue
                if kind == HEADERS:
                    streams[sid], credits[sid] = asyncio.Queue(), Credit(window)
                    channel = Channel(sid, writer, streams[sid], credits[sid])
                    task = asyncio.create_task(self.handle_stream(index, json.loads(payload), channel))
                    tasks[sid] = task
                    self.inflight.add(task)
                    task.add_done_callback(
                        lambda t, s=sid: (streams.pop(s, None), credits.pop(s, None), tasks.pop(s, None))
                    )
                    task.add_done_callback(self.inflight.discard)
                elif kind in (DATA, END) and sid in streams:
                    streams[sid].put_nowait(payload if kind == DATA else None)
                elif kind == WINDOW and sid in credits:
                    credits[sid].give(payload)
                elif kind == RESET and sid in tasks:
                    tasks[sid].cancel()
        except asyncio.IncompleteReadError:
            return "edge closed the connection"
        finally:
            for task in list(tasks.values()):
                task.cancel()

    def apply_config(self, message: dict) -> None:
        version = int(message.get("version", 0))
        if version <= self.state.config_version:
            return
        config = message.get("config") or {}
        try:
            rules = compile_ingress(config)
        except (ValueError, re.error) as exc:
            self.log.error("Failed to update configuration", error=str(exc), version=version)
            return
        self.rules = rules
        self.state.config_version = version
        self.log.info(
            "Updated to new configuration", config=json.dumps(config, separators=(",", ":")), version=version
        )

    # -- requests -----------------------------------------------------------------------------------
    async def handle_stream(self, index: int, request: dict, channel: "Channel") -> None:
        state = self.state
        state.total_requests += 1
        state.concurrent += 1
        host = request.get("host", "")
        path = request.get("path", "/")
        rule_no, rule = next(
            (n, r) for n, r in enumerate(self.rules) if r.matches(host, path.split("?", 1)[0])
        )
        try:
            if rule.status or rule.service == "hello_world":
                await self.answer_locally(rule, channel)
            else:
                await self.proxy(request, rule, channel)
        except OriginError as exc:
            state.request_errors += 1
            state.by_code[502] = state.by_code.get(502, 0) + 1
            self.log.error(
                f"Unable to reach the origin service. The service may be down or it may not be responding to "
                f"traffic from cloudflared: {exc}",
                connIndex=index,
                ingressRule=rule_no,
                originService=rule.service,
            )
            channel.reset(str(exc))
        except asyncio.CancelledError:
            state.request_errors += 1
            raise
        finally:
            state.concurrent -= 1

    async def answer_locally(self, rule: Rule, channel: "Channel") -> None:
        if rule.status:
            status, ctype, data = rule.status, "text/plain; charset=utf-8", b""
        else:
            status, ctype = 200, "text/html; charset=utf-8"
            data = b"<!doctype html><title>Hello</title><p>Hello from the lab cloudflared stand-in.</p>"
        self.state.by_code[status] = self.state.by_code.get(status, 0) + 1
        await channel.head(status, [["Content-Type", ctype], ["Content-Length", str(len(data))]])
        if data:
            await channel.data(data)
        await channel.end()

    async def proxy(self, request: dict, rule: Rule, channel: "Channel") -> None:
        origin = rule.origin
        reader_o, writer_o = await open_origin(rule.service, origin)
        pump = None
        try:
            target = urlsplit(rule.service).path.rstrip("/") + request.get("path", "/")
            headers = [
                (k, v) for k, v in request.get("headers", []) if k.lower() not in HOP_BY_HOP | {"host"}
            ]
            host_header = origin.get("httpHostHeader") or request.get("host", "")
            chunked = bool(request.get("chunked"))
            lines = [f"{request.get('method', 'GET')} {target} HTTP/1.1", f"Host: {host_header}"]
            lines += [f"{k}: {v}" for k, v in headers]
            lines += ["Connection: close"] + (["Transfer-Encoding: chunked"] if chunked else [])
            writer_o.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            pump = asyncio.create_task(channel.pump_request_body(writer_o, chunked))
            status, resp_headers = await read_head(reader_o)
            self.state.by_code[status] = self.state.by_code.get(status, 0) + 1
            await channel.head(status, [[k, v] for k, v in resp_headers if k.lower() not in HOP_BY_HOP])
            has_body = request.get("method") != "HEAD" and status not in (204, 304) and status >= 200
            async for chunk in iter_body(reader_o, resp_headers, has_body):
                await channel.data(chunk)
            await channel.end()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise OriginError(str(exc) or type(exc).__name__) from exc
        finally:
            if pump:
                pump.cancel()
            writer_o.close()

    async def shutdown(self, grace: float) -> None:
        """GOAWAY on every connection (the edge then routes new requests elsewhere), then serve what is
        running, including streams the edge opened before it read the GOAWAY, for at most `grace`."""
        self.stopping = True
        deadline = time.monotonic() + grace
        for writer in list(self.writers.values()):
            with contextlib.suppress(OSError):
                writer.write(json_frame(0, GOAWAY, {"reason": "connector shutting down"}))
        # Streams already on the wire towards us still arrive: give the edge a moment to see the GOAWAY.
        await asyncio.sleep(min(GOAWAY_SETTLE, grace))
        while self.inflight and time.monotonic() < deadline:
            await asyncio.wait(list(self.inflight), timeout=deadline - time.monotonic())
        for writer in list(self.writers.values()):
            writer.close()


# ----------------------------------------------------------------------------------------------------
# Entry points.
# ----------------------------------------------------------------------------------------------------
def version_line() -> str:
    built = time.strftime("%Y-%m-%d-%H%M", time.gmtime(0))
    return f"cloudflared version {VERSION} (built {built} UTC) [{STANDIN}]"


HELP = f"""NAME:
   cloudflared - Cloudflare's command-line tool and agent ({STANDIN})

USAGE:
   cloudflared [global options] command [command options]

VERSION:
   {VERSION} (lab stand-in)

COMMANDS:
   version   Print the version
   tunnel    Use Cloudflare Tunnel to expose private services (stand-in subset):
             tunnel [--no-autoupdate] [--metrics ADDR] [--protocol P] [--loglevel L] [--logfile F]
                    [--retries N] [--grace-period D] [--ha-connections N]
                    run [--token-file F | --token T]

LAB-ONLY ENVIRONMENT (the real cloudflared has no such settings):
   LAB_EDGE_ADDR   host:port of the lab edge connector side (default 10.87.0.1:7844)
   LAB_EDGE_CA     lab CA certificate (PEM) that signs the edge certificate
"""


async def run_tunnel(token: str, token_data: dict, opts: dict, log: Log) -> int:
    # Signals first: a SIGTERM during start-up is still a graceful stop (exit 0), as under systemd.
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    state = State()
    log.info("Starting tunnel", tunnelID=token_data["t"])
    log.info(f"Version {VERSION} ({STANDIN})")
    log.info(f"GOOS: {sys.platform}, Python: {platform.python_version()}, Arch: {platform.machine()}")
    # Like cloudflared's "Settings" line: the flags given on the command line, the token masked.
    settings = {k: opts[k] for k in opts.get("_given", []) if k not in ("token", "token-file")}
    settings |= {"token": "*****"} if opts["token"] else {"token-file": opts["token-file"]}
    log.info("Settings: map[" + " ".join(f"{k}:{v}" for k, v in settings.items()) + "]")
    log.info(f"Generated Connector ID: {state.connector_id}")
    log.info("Will be fetching remotely managed configuration from the lab edge (stand-in for Cloudflare).")
    protocol = opts["protocol"]
    log.info(f"Initial protocol {'http2' if protocol == 'auto' else protocol}")
    try:
        metrics = serve_metrics(opts["metrics"], state, log)
    except (OSError, ValueError) as exc:
        log.error("Error opening metrics server listener", error=str(exc), address=opts["metrics"])
        return EXIT_FAILURE
    tunnel = Tunnel(token, token_data, opts, state, log)
    runner = asyncio.create_task(tunnel.run())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([runner, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("Initiating graceful shutdown due to signal terminated ...")
            sd_notify("STOPPING=1")
            await tunnel.shutdown(parse_duration(opts["grace-period"]))
            runner.cancel()
            log.info("Tunnel server stopped")
            return 0
        runner.result()
        return 0
    except Fatal as exc:
        log.error("Couldn't start tunnel", error=str(exc))
        return EXIT_FAILURE
    finally:
        stopper.cancel()
        metrics.shutdown()


RUN_HELP = """NAME:
   cloudflared tunnel run - Proxy a local web server by running the given tunnel (lab stand-in)

USAGE:
   cloudflared tunnel [tunnel command options] run [subcommand options] [TUNNEL]

SUBCOMMAND OPTIONS:
   """ + " ".join(f"--{name}" for name in RUN_FLAGS)
TUNNEL_HELP = """NAME:
   cloudflared tunnel - Use Cloudflare Tunnel to expose private services (lab stand-in: `run` only)

USAGE:
   cloudflared tunnel [tunnel command options] run [subcommand options] [TUNNEL]

OPTIONS:
   """ + " ".join(f"--{name}" for name in TUNNEL_FLAGS)
# cmd/cloudflared/tunnel/cmd.go TunnelCommand: `cloudflared tunnel` without a subcommand or --url.
TUNNEL_CMD_ERROR = """You did not specify any valid additional argument to the cloudflared tunnel command.

If you are trying to run a Quick Tunnel then you need to explicitly pass the --url flag.
Eg. cloudflared tunnel --url localhost:8080/.
"""


def incorrect_usage(exc: FlagError, help_text: str) -> int:
    """urfave/cli's answer to a flag it cannot parse: "Incorrect Usage" and the help on stdout. Its error
    goes back to cloudflared's runApp, which ignores it (cmd/cloudflared/linux_service.go, runApp:
    `app.Run(os.Args)`), so the process ends with exit code 0 without running anything."""
    print(f"Incorrect Usage: {exc}\n\n{help_text}")
    return 0


def parse_command_line(args: list[str]) -> tuple[dict, list[str]] | int:
    """`tunnel [flags] run [flags] [TUNNEL]` -> (options, positional args), or an exit code."""
    tunnel_opts: dict = {}
    try:
        rest = parse_flags(args, TUNNEL_FLAGS, tunnel_opts)
    except FlagError as exc:
        return incorrect_usage(exc, TUNNEL_HELP)
    if not rest:
        print(TUNNEL_CMD_ERROR, file=sys.stderr)
        return EXIT_FAILURE
    if rest[0] != "run":
        print(
            f"the stand-in implements only 'cloudflared tunnel [flags] run', not {rest[0]!r}", file=sys.stderr
        )
        return EXIT_FAILURE
    run_opts: dict = {}
    try:
        rest = parse_flags(rest[1:], RUN_FLAGS, run_opts)
    except FlagError as exc:
        return incorrect_usage(exc, RUN_HELP)
    # A flag both levels know: the run level's value wins (urfave looks up the subcommand's set first).
    opts = {**tunnel_opts, **run_opts}
    given = sorted(opts)
    with_env_defaults({**TUNNEL_FLAGS, **RUN_FLAGS}, opts)
    opts["_given"] = given
    return opts, rest


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("help", "--help", "-h"):
        print(HELP)
        return 0
    if args[0] in ("--version", "-v", "-V", "version"):
        print(version_line())
        return 0
    if args[0] != "tunnel":
        print(
            f"Incorrect Usage: the stand-in implements only 'tunnel' and 'version', not {args[0]!r}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    parsed = parse_command_line(args[1:])
    if isinstance(parsed, int):
        return parsed
    opts, rest = parsed
    log = Log(str(opts["loglevel"]).lower(), opts["logfile"] or None)
    try:
        token = read_token(opts, rest)
        token_data = parse_token(token)
    except UsageError as exc:
        # cliutil/errors.go ErrorHandler: the message, the help hint, cli.Exit(msg, -1) = exit code 255.
        print(f"{exc}\nSee 'cloudflared tunnel run --help'.", file=sys.stderr)
        return 255
    except Fatal as exc:
        log.error(str(exc))
        return EXIT_FAILURE
    if opts["protocol"] not in ("auto", "http2", "quic"):
        log.error("Couldn't start tunnel", error=f"Unknown protocol {opts['protocol']}")
        return EXIT_FAILURE
    return asyncio.run(run_tunnel(token, token_data, opts, log))


if __name__ == "__main__":
    sys.exit(main())
