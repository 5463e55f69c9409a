"""Who serve-local serves: programs of this PC's user, and nobody who merely reaches its port.

serve-local adds the client token to everything it forwards, so whatever can make a request to it spends
the user's tokens and reads their answers. Listening on loopback keeps other machines out, but not web
pages in the user's browser:
- DNS rebinding: a page on `rebind.attacker.example` re-points its own name to 127.0.0.1 and then reads
  serve-local's answers as same-origin responses. Its requests still say `Host: rebind.attacker.example`,
  so only the loopback names with this port are answered (421 otherwise: RFC 9110 "Misdirected Request").
- Cross-site requests: a `text/plain` POST needs no preflight, so a page can send one anywhere; the
  browser adds `Origin`, which tools (SDKs, CLIs) never send. Any `Origin` not configured with
  `--allow-origin` gets 403.
- Other local users and processes: `--local-key-file` makes serve-local require that key as the tool's API
  key (`Authorization: Bearer <key>` or `x-api-key: <key>`, what the OpenAI and Anthropic SDKs send).
Refused requests get an answer here and never reach the relay.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "llm_relay_client", "code": code}}
    return web.json_response(body, status=status)


def normalise_origin(value: str) -> str:
    """`scheme://host[:port]` in lower case; ValueError for anything that is not an origin."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"--allow-origin {value!r} is not an origin (scheme://host[:port])")
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"--allow-origin {value!r} is not an origin (scheme://host[:port])")
    return f"{parts.scheme}://{parts.netloc}".lower()


def read_local_key(path: str) -> str:
    """The key a tool must present; ValueError when the file is missing, empty or readable by others."""
    file = Path(path).expanduser()
    try:
        key = file.read_text(encoding="utf-8").strip()
        mode = file.stat().st_mode
    except OSError as exc:
        raise ValueError(f"--local-key-file {file}: {exc.strerror}") from None
    if len(key) < 16:
        raise ValueError(f"--local-key-file {file}: holds no key of at least 16 characters")
    if mode & 0o077:
        raise ValueError(f"--local-key-file {file}: readable by others (chmod 600)")
    return key


def allowed_hosts(port: int) -> frozenset[str]:
    hosts = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    if port == 80:  # a client may leave the default port out of Host
        hosts.update(LOOPBACK_NAMES)
    return frozenset(hosts)


def _presented_key(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key", "").strip()


def guard(origins: Iterable[str] = (), local_key: str | None = None) -> Callable:
    """The aiohttp middleware: Host, then Origin, then the local key; the request goes on only past all."""
    allowed_origins = frozenset(origins)
    key = local_key.encode() if local_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if sockname else 0
        host = request.headers.get("Host", "").lower()
        if host not in allowed_hosts(port):
            return _error(
                421,
                f"serve-local answers only Host 127.0.0.1:{port}, localhost:{port} or [::1]:{port}",
                "misdirected_request",
            )
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() not in allowed_origins:
            return _error(
                403,
                "requests from web pages are refused; allow a page's origin with serve-local --allow-origin",
                "origin_not_allowed",
            )
        presented = _presented_key(request).encode()
        if key is not None and request.path != "/healthz" and not hmac.compare_digest(presented, key):
            return _error(401, "serve-local requires its local key as the API key", "local_key_required")
        return await handler(request)

    return middleware
