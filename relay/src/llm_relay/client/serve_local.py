"""`llm-relay serve-local`: an OpenAI-compatible endpoint on loopback that forwards to the relay.

Tools on the PC (Aider, the OpenAI or Anthropic SDK, curl) point at `http://127.0.0.1:8788/v1` (Anthropic:
`http://127.0.0.1:8788/<provider>`) with any API key; each request goes to the relay through the configured
proxy with the client token added and, with `--encrypt`, sealed in a Fernet envelope. Responses (SSE
streams included) are opened and streamed back as they come; a complete answer keeps its Content-Length.
Only this PC's tools are served: local_guard.py refuses foreign Host names (DNS rebinding), web pages'
Origins not allowed, and, with --local-key-file, requests without the local key.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import sys
from typing import Any

from aiohttp import web

from . import access
from ._http import httpx
from .codec_v2 import AccessRefused
from .config import Profile
from .factory import async_http_client
from .local_guard import guard, normalise_origin, read_local_key
from .transport import HOP_BY_HOP

# Not the relay's own default listen port (8787): both may run on one machine (a test box, the lab).
DEFAULT_PORT = 8788
SERVER_NAME = "llm-relay"  # what the relay itself says; aiohttp would otherwise name itself and its version
CLIENT_KEY = web.AppKey("relay_client", object)
PROFILE_KEY = web.AppKey("relay_profile", Profile)
# Request headers the local tool sets that must not travel: its placeholder key (OpenAI SDKs: Authorization;
# Anthropic SDKs, Claude Code: x-api-key), the local Host.
_DROP_REQUEST = HOP_BY_HOP | {"host", "authorization", "content-length", "x-relay-token", "x-api-key"}
# Response headers recomputed here: the body is re-chunked and already decoded by the HTTP client.
_DROP_RESPONSE = HOP_BY_HOP | {"content-length", "content-encoding"}
# Bytes of a refusal read to tell Cloudflare Access's page from the relay's JSON: those pages are a few
# hundred bytes; an answer longer than this is passed on as it is.
ACCESS_PEEK = 64 * 1024


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "llm_relay_client", "code": code}}
    return web.json_response(body, status=status)


async def forward(request: web.Request) -> web.StreamResponse:
    if request.path == "/healthz":
        return web.json_response({"status": "ok"})
    profile, client = request.app[PROFILE_KEY], request.app[CLIENT_KEY]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    url = profile.root + request.rel_url.raw_path_qs
    outgoing = client.build_request(request.method, url, headers=headers, content=await request.read())
    try:
        upstream = await client.send(outgoing, stream=True)
    except AccessRefused as exc:  # an encrypted request refused at the edge (plain ones: _access_refusal)
        return _refused_by_access(403, str(exc))
    except httpx.TimeoutException as exc:
        return _error(504, f"relay did not answer in time: {exc!r}", "relay_timeout")
    except httpx.HTTPError as exc:
        return _error(502, f"cannot reach the relay ({exc!r}); run `llm-relay doctor`", "relay_unreachable")
    try:
        chunks = upstream.aiter_bytes()
        first, refused = await _access_refusal(upstream, chunks)
        if refused is not None:
            return _refused_by_access(403 if upstream.status_code < 400 else upstream.status_code, refused)
        response = web.StreamResponse(status=upstream.status_code)
        for key, value in upstream.headers.multi_items():
            if key.lower() not in _DROP_RESPONSE:
                response.headers.add(key, value)
        response.headers.setdefault("Server", SERVER_NAME)
        length = upstream.headers.get("content-length")
        if length and length.isdigit() and "content-encoding" not in upstream.headers:
            response.content_length = int(length)  # a complete answer stays one, not re-chunked
        await response.prepare(request)
        if first:
            await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        await upstream.aclose()


async def _access_refusal(upstream: Any, chunks: Any) -> tuple[bytes, str | None]:
    """(bytes read ahead, the message) when Cloudflare Access refused this plain request; (bytes read
    ahead, None) otherwise. Only answers that look like Cloudflare's refusals are read ahead, at most
    ACCESS_PEEK bytes; the caller sends those bytes before the rest."""
    if upstream.status_code not in (401, 403) or not access.from_cloudflare(upstream):
        return b"", access.refusal_message(upstream, b"")  # a redirect to the Access login needs no body
    head = b""
    while len(head) < ACCESS_PEEK:
        chunk = await anext(chunks, None)
        if chunk is None:
            break
        head += chunk
    return head, access.refusal_message(upstream, head)


def _refused_by_access(status: int, message: str) -> web.Response:
    """The tool gets the reason as an OpenAI-shaped error; the serve-local console gets one line."""
    print(f"serve-local: {message}", file=sys.stderr, flush=True)
    return _error(status, message, "access_refused")


def create_app(
    profile: Profile, origins: tuple[str, ...] = (), local_key: str | None = None
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[guard(origins, local_key)])
    app[PROFILE_KEY] = profile
    app.router.add_route("*", "/{tail:.*}", forward)

    async def client_context(app: web.Application) -> Any:
        app[CLIENT_KEY] = async_http_client(profile)
        yield
        await app[CLIENT_KEY].aclose()

    app.cleanup_ctx.append(client_context)
    return app


def check_loopback(host: str) -> None:
    """The endpoint adds our token to whatever reaches it: it must never listen beyond this machine."""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"serve-local listens on loopback only, not {host!r}")


async def _serve(
    profile: Profile, host: str, port: int, origins: tuple[str, ...], local_key: str | None
) -> None:
    runner = web.AppRunner(create_app(profile, origins, local_key), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    mode = "encrypted envelopes" if profile.encrypting else f"plain, token via {profile.token_channel}"
    print(f"serve-local: http://{host}:{bound}/v1 -> {profile.root} ({mode}); Ctrl-C to stop", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises KeyboardInterrupt instead
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(
    profile: Profile,
    host: str,
    port: int,
    allow_origins: list[str] | tuple[str, ...] = (),
    local_key_file: str | None = None,
) -> int:
    check_loopback(host)
    origins = tuple(normalise_origin(o) for o in allow_origins)
    local_key = read_local_key(local_key_file) if local_key_file else None
    try:
        asyncio.run(_serve(profile, host, port, origins, local_key))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"serve-local: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
