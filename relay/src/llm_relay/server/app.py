"""The relay's request handler: routing, authentication, body limits, envelope unwrapping.

Routes (any method unless noted; all but /healthz and /readyz need a client token):
  /healthz, /readyz                 liveness / readiness (503 while draining)
  /metrics                          Prometheus text (also served without token on `metrics_listen`)
  /v1/providers              GET    configured providers
  /v1/usage                  GET    the calling client's own token usage (and budget)
  /relay                     POST   original notes' contract: chat body -> default provider's chat/completions
  /v1/{path}                        default provider (or route), passed through
  /{provider}/v1/{path}             that provider, passed through
  /{route}/v1/{path}                a [routes.NAME] table: its providers in order (fallback)
  /t/{token}/...                    any of the above, authenticated by the path token
  POST with Content-Type application/octet-stream on a path that is none of the above: Envelope v2
  POST with Content-Type application/vnd.llm-relay.fernet on any path: Envelope v1 (unless refused)
  OPTIONS CORS preflight (with [cors] allow_origins): answered without a token
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import unquote

from llm_relay import __version__, envelope, envelope_v2

from . import cors, replay, token_budget
from .access_jwt import ASSERTION_HEADER
from .auth import retry_after_header, token_from_headers
from .budget import MemoryBudget
from .envelope_gate import v1_gate, v2_gate
from .errors import RelayError
from .forward import Outbound, Outcome, forward
from .headers import from_mapping, upstream_request_headers
from .http11 import Request, Response
from .inner import effective as inner_effective
from .inner import observe as observe_inner
from .inner import sealed_refusal
from .labels import ModelLabels
from .logs import AccessLog, log_path
from .metrics import Metrics, own_lines
from .reply import PlainReply, SealedReply, SealedReplyV2
from .state import Provider, RelayState
from .upstream import UpstreamError
from .usage import seconds_to_midnight

log = logging.getLogger("llm_relay.server")
PLAIN = PlainReply()
# JSON bodies up to this size are parsed to check them; larger ones only get a shape check. Parsing runs
# on the event loop and its cost grows with the number of values, not bytes (a 9 MB object of 900k keys
# took 2-4 s here, with ~150 MB of transient objects): unbounded, one authenticated client could stall
# every other connection. The provider validates what it receives anyway and its 400 passes through.
JSON_CHECK_BYTES = 64 * 1024
_JSON_BLANK = b" \t\r\n"
MISSING_CREDENTIAL_MESSAGE = (
    "no client token: use Authorization: Bearer, X-Relay-Token, x-api-key, a /t/<token>/ path prefix "
    "or the envelope's token"
)
NO_BODY_PATHS = frozenset({"/healthz", "/readyz"})
LOCAL_PATHS = frozenset({"/metrics", "/v1/providers", "/v1/usage"})
_KEY_NOT_TOKENS = (403, "envelope_rejected", "envelope key and token belong to different clients")


class Route:
    """Where a request goes: `local`, or `proxy`/`relay` to `attempts` ((provider, model) in order) with
    `path` below each provider's base URL."""

    __slots__ = ("attempts", "kind", "name", "path")

    def __init__(
        self, kind: str, name: str = "", attempts: list[tuple[Provider, str]] | None = None, path: str = ""
    ) -> None:
        self.kind, self.name, self.attempts, self.path = kind, name, attempts or [], path


class RequestInfo:
    """What one access-log line and the metrics record about a request."""

    __slots__ = ("bytes_in", "envelope", "path", "provider", "token_name")

    def __init__(self, path: str) -> None:
        self.token_name = "-"  # noqa: S105 - "no token" placeholder in logs
        self.provider = "-"
        self.path = path
        self.bytes_in = 0
        self.envelope = False


class RelayApp:
    def __init__(self, state: RelayState, access_log: AccessLog | None = None) -> None:
        self.state = state
        self.metrics = Metrics()
        self.access_log = access_log or AccessLog(enabled=state.server.access_log, flush_interval=0.1)
        self.in_flight = 0
        self.draining = False
        # The process's memory budget (budget.py), shared by every listener of the runner.
        self.budget = MemoryBudget(state.settings.server.memory_budget_bytes)
        self.models = ModelLabels()  # bounded model label values (labels.py)
        self._idle = asyncio.Event()
        self._idle.set()

    # --- lifecycle hooks used by the runner ---
    def swap_state(self, new: RelayState) -> None:
        old, self.state = self.state, new
        self.access_log.enabled = new.server.access_log
        new.close_retired()
        del old  # in-flight requests keep their reference until they finish

    async def wait_idle(self, limit_s: float) -> bool:
        try:
            async with asyncio.timeout(limit_s):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    # --- the handler our HTTP server calls (None = the answer was streamed) ---
    async def handle(self, request: Request) -> Response | None:
        started = time.perf_counter()
        state = self.state
        raw_path = request.raw_path
        path, _, query = raw_path.partition("?")
        info = RequestInfo(log_path(path))
        outcome = Outcome()
        self.in_flight += 1
        self.metrics.in_flight += 1
        self._idle.clear()
        response: Response | None = None
        settings_cors = state.settings.cors
        try:
            try:
                if settings_cors.allow_origins and cors.is_preflight(request.method, request.headers):
                    response = cors.preflight(settings_cors, request.headers)
                else:
                    origin = request.headers.get("Origin")
                    outcome.reply_headers = cors.answer_headers(settings_cors, origin)
                    response = await self._dispatch(request, state, path, query, info, outcome)
            except RelayError as err:
                response = PLAIN.error(err)
            except UpstreamError as exc:
                response = PLAIN.error(RelayError(exc.status, exc.kind, str(exc)))
            if response is not None:
                outcome.status = response.status
                if outcome.reply_headers:
                    response.headers = cors.merge(response.headers, outcome.reply_headers)
                if self.draining:
                    response.close = True
            return response
        except asyncio.CancelledError:
            outcome.status = 499  # client went away (nginx's convention)
            outcome.client_gone = True
            raise
        except ConnectionError:
            # The client vanished while we were writing a stream to it: same as a disconnect.
            outcome.status = 499
            outcome.client_gone = True
            request.conn.abort()
            return None
        finally:
            self.in_flight -= 1
            self.metrics.in_flight -= 1
            if not self.in_flight:
                self._idle.set()
            self._finish(request, info, outcome, started, response)

    def rejected(self, method: str, path: str, status: int, code: str) -> None:
        """Access line + metrics for a request refused before the handler (400/408/413/414/431)."""
        self.metrics.observe("-", "-", status, 0.0)
        path = log_path(path.partition("?")[0])
        self.access_log.write(
            {
                "event": "request",
                "token": "-",
                "provider": "-",
                "method": method[:16],
                "path": path,
                "status": status,
                "error": code,
            }
        )

    def admit(self, request: Request, max_body: int) -> int:
        """Runs when the request head is complete, before any body byte is read (http11's admission
        hook): checks the header or path token, so an unauthenticated client never gets to send a body
        (401 at once). Returns the request's body cap. An envelope whose token is inside is
        unauthenticated until opened: without a valid outer token its body gets the smaller
        `max_envelope_body_bytes` cap. What it found is kept on the request, so the token is hashed once.
        With [access], the edge's Cloudflare Access assertion is checked first (access_jwt.py)."""
        path = request.path
        access = self.state.access
        if access is not None and not (path == "/healthz" and request.method in ("GET", "HEAD")):
            try:
                access.check(request.headers.get(ASSERTION_HEADER))
            except RelayError as err:
                self.metrics.access_refusals[err.code] += 1
                raise
        if path in NO_BODY_PATHS:
            return 0  # token-free routes take no body: one is refused (413) without being read
        state = self.state
        headers = request.headers
        cors_settings = state.settings.cors
        if cors_settings.allow_origins and cors.is_preflight(request.method, headers):
            return 0  # a preflight carries no token by design (the handler answers it), nor a body
        token = path[3:].partition("/")[0] if path.startswith("/t/") else None
        token = token or token_from_headers(headers)
        name = state.tokens.authenticate(token) if token else None
        ctype = headers.get("Content-Type") or ""
        if request.method == "POST" and _envelope_form(state, ctype, path):
            if name is None:
                # Unauthenticated until opened: a smaller cap, and refused from its first bytes when it
                # cannot be anyone's (envelope_gate.py).
                if ctype.startswith(envelope.CONTENT_TYPE):
                    request.gate = v1_gate(state.settings.envelope_ttl)
                elif state.client_keys is not None:
                    request.gate = v2_gate(state.client_keys)
                return min(max_body, state.server.max_envelope_body_bytes)
        elif name is None:
            # A page from an allowed origin must be able to read why it was refused.
            extra = dict(cors.answer_headers(cors_settings, headers.get("Origin")))
            if not token:
                raise RelayError(401, "missing_token", MISSING_CREDENTIAL_MESSAGE, extra)
            raise RelayError(401, "invalid_token", "unknown client token", extra)
        request.admitted = (state, token, name)
        route_path = "/" + path[3:].partition("/")[2] if path.startswith("/t/") else path
        if route_path in LOCAL_PATHS:
            return 0  # local routes answer GET only: no body
        return max_body

    def _finish(
        self,
        request: Request,
        info: RequestInfo,
        outcome: Outcome,
        started: float,
        response: Response | None,
    ) -> None:
        duration = time.perf_counter() - started
        if outcome.provider:
            info.provider = outcome.provider  # the provider that answered (after any fallback)
            outcome.usage.model = self.models.label(outcome.usage.model)
        status = outcome.status
        if outcome.client_gone:
            pass
        elif outcome.streamed and outcome.upstream_error:
            status = 502  # the client got a truncated stream
        elif response is not None and not outcome.streamed:
            status = response.status
        status, method = inner_effective(outcome, status, request.method)  # an envelope's inner request
        token_budget.settle(self.metrics.usage, info.token_name, outcome, status)
        self.metrics.observe(info.token_name, info.provider, status, duration, method)
        if outcome.upstream_error:
            self.metrics.upstream_errors[(info.provider, outcome.upstream_error)] += 1
        bytes_out = outcome.bytes_out
        if response is not None and not outcome.streamed:
            bytes_out = len(response.body)
        self.access_log.request(
            info.token_name,
            info.provider,
            method,
            info.path,
            status,
            duration,
            info.bytes_in,
            bytes_out,
            info.envelope,
            outcome.streamed,
            outcome.upstream_error,
            outcome.fallbacks,
        )

    async def _dispatch(
        self,
        request: Request,
        state: RelayState,
        path: str,
        query: str,
        info: RequestInfo,
        outcome: Outcome,
    ) -> Response | None:
        if path == "/healthz":
            return PLAIN.json(200, {"status": "ok"})
        if path == "/readyz":
            return self._readyz()
        path_token = None
        if path.startswith("/t/"):
            path_token, sep, rest = path[3:].partition("/")
            path = "/" + rest
            info.path = "/t/***" + log_path(path)  # never log the token
            if not sep or not path_token:
                raise RelayError(404, "unknown_route", "no route after the path token")
        headers = request.headers
        ctype = headers.get("Content-Type") or ""
        if request.method == "POST":
            if ctype.startswith(envelope.CONTENT_TYPE):
                return await self._envelope(request, state, path_token, info, outcome)
            if state.client_keys and ctype.startswith(envelope_v2.CONTENT_TYPE) and _v2_path(path):
                return await self._envelope_v2(request, state, info, outcome)
        # A path token wins over every header channel, which is then not even looked at: behind a proxy
        # the SDK still sends its placeholder key as `Authorization`, and that must not spoil the request.
        admitted = request.admitted
        if admitted is not None and admitted[0] is state:  # type: ignore[index]
            self._rate_limit(state, admitted[2], info)  # type: ignore[index]
        else:  # the settings were reloaded since admission: check again
            self._authenticate(state, path_token or token_from_headers(headers), info)
        route = self._route(state, request.method, path)
        if route.kind == "local":
            return self._local(state, path, PLAIN, info)
        self._check_budget(state, info)
        body = request.body
        info.bytes_in = len(body)
        info.provider = route.name
        if "Content-Encoding" in headers:
            ctype = ""  # compressed bodies are passed through as they are (not decompressed, not checked)
        doc, is_json = None, route.kind == "relay" or ("json" in ctype and bool(body))
        if is_json:
            doc = _check_json(body, require_object=route.kind == "relay")
        client_headers = upstream_request_headers(headers.items(), envelope=False)
        if route.kind == "relay":
            client_headers = [(n, v) for n, v in client_headers if n.lower() != "content-type"]
            client_headers.append(("Content-Type", "application/json"))
        out = Outbound(request.method, route.path, query, client_headers, body, doc, is_json)
        _request_model(doc, outcome)
        token_budget.reserve(self.metrics.usage, state.settings.usage, info.token_name, body, doc, outcome)
        return await forward(request, route.attempts, out, PLAIN, outcome, self.metrics)

    def _authenticate(
        self, state: RelayState, token: str | None, info: RequestInfo, admitted: object = None
    ) -> None:
        self._identify(state, token, info, admitted)
        self._rate_limit(state, info.token_name, info)

    def _identify(
        self, state: RelayState, token: str | None, info: RequestInfo, admitted: object = None
    ) -> None:
        """401 unless `token` is a client's; its name goes to `info` (no rate limit counted yet)."""
        if not token:
            raise RelayError(401, "missing_token", MISSING_CREDENTIAL_MESSAGE)
        if admitted is not None and admitted[0] is state and admitted[1] == token:  # type: ignore[index]
            name = admitted[2]  # type: ignore[index]
        else:
            name = state.tokens.authenticate(token)
        if name is None:
            raise RelayError(401, "invalid_token", "unknown client token")
        info.token_name = name

    def _rate_limit(self, state: RelayState, name: str, info: RequestInfo) -> None:
        info.token_name = name
        wait = state.limiter.check(name)
        if wait:
            raise RelayError(
                429,
                "rate_limited",
                f"rate limit of {state.limiter.per_minute} requests/minute exceeded",
                {"Retry-After": retry_after_header(wait)},
            )

    def _check_budget(self, state: RelayState, info: RequestInfo) -> None:
        """429 once the client's daily token budget is spent (local routes, /v1/usage too, stay open)."""
        budget = state.settings.usage.budget_of(info.token_name)
        if not budget:
            return
        used = self.metrics.usage.used_today(info.token_name)
        if used >= budget:
            raise RelayError(
                429,
                "token_budget_exhausted",
                f"daily token budget of {budget} tokens for client {info.token_name!r} is spent "
                f"({used} used today); it resets at 00:00 UTC",
                {"Retry-After": str(seconds_to_midnight())},
            )

    def _route(self, state: RelayState, method: str, path: str) -> Route:
        route = self._find_route(state, method, path)
        for provider, _ in route.attempts:  # every provider the request may reach must take its method
            if method not in provider.settings.methods:
                raise RelayError(
                    405, "method_not_allowed", f"provider {provider.name!r} does not take {method} requests"
                )
        return route

    def _find_route(self, state: RelayState, method: str, path: str) -> Route:
        if "." in path or "%" in path:
            segments = unquote(path).split("/")
            if "." in segments or ".." in segments:
                raise RelayError(400, "invalid_path", "dot segments are not allowed in the path")
        if path in ("/metrics", "/v1/providers", "/v1/usage"):
            if method not in ("GET", "HEAD"):
                raise RelayError(405, "method_not_allowed", f"{path} only answers GET")
            return Route("local")
        if path == "/relay":
            if method != "POST":
                raise RelayError(405, "method_not_allowed", "/relay only answers POST")
            return Route("relay", state.default_name, state.default_target, "/chat/completions")
        if path.startswith("/v1/"):
            return Route("proxy", state.default_name, state.default_target, path[3:])
        name, _, rest = path[1:].partition("/")
        if rest.startswith("v1/") or rest == "v1":
            target = state.targets.get(name)
            if target is None:
                raise RelayError(404, "unknown_provider", f"no provider named {name[:64]!r}")
            return Route("proxy", name, target, "/" + rest[3:])
        raise RelayError(404, "unknown_route", "no such route")

    def _local(self, state: RelayState, path: str, reply: PlainReply, info: RequestInfo) -> Response:
        if path == "/metrics":
            text = own_lines(self.render_metrics(state), info.token_name)  # a client sees only its own
            resp = reply.full(200, [("Content-Type", "text/plain; version=0.0.4")], text.encode())
            return resp
        if path == "/v1/usage":
            budget = state.settings.usage.budget_of(info.token_name)
            return reply.json(200, self.metrics.usage.report(info.token_name, budget))
        data = [
            {"id": p.name, "base_url": p.public_base_url, "default": p.name == state.default_name}
            for p in state.providers.values()
        ]
        data += [  # fallback routes: the providers they try, in order
            {"id": name, "route": [a.provider for a in r.attempts], "default": name == state.default_name}
            for name, r in state.settings.routes.items()
        ]
        # The relay's version, for a client that holds a token (doctor compares it with its own).
        return reply.json(200, {"object": "list", "data": data, "relay_version": __version__})

    def render_metrics(self, state: RelayState) -> str:
        fetches = state.access.fetch_results if state.access is not None else None
        return self.metrics.render(
            access_fetches=fetches,
            extra_gauges={
                "llm_relay_client_tokens": len(state.tokens),
                "llm_relay_replay_cache_entries": len(state.replay),
                "llm_relay_draining": int(self.draining),
                "llm_relay_memory_budget_used_bytes": self.budget.used,
                "llm_relay_memory_budget_bytes": self.budget.limit,
            },
        )

    def _readyz(self) -> Response:
        if self.draining:
            return PLAIN.json(503, {"status": "draining"})
        return PLAIN.json(200, {"status": "ready"})

    async def _envelope(
        self,
        request: Request,
        state: RelayState,
        path_token: str | None,
        info: RequestInfo,
        outcome: Outcome,
    ) -> Response | None:
        info.envelope = True
        if state.fernet is None:
            raise RelayError(400, "envelope_disabled", "envelope v1 is not enabled on this relay")
        sealed = request.body
        info.bytes_in = len(sealed)
        try:
            inner, key = envelope.open_request_keyed(state.fernet, sealed, ttl=state.settings.envelope_ttl)
        except envelope.EnvelopeError as exc:
            return sealed_refusal(exc, state, outcome) or PLAIN.error(
                RelayError(exc.status, exc.code, str(exc))
            )
        # From here on every answer, errors included, is sealed: the proxy learns nothing more.
        # Sealed under the key that opened the request, so a client still on the previous key of a rotation
        # reads the answer.
        reply = observe_inner(SealedReply(key), outcome, inner.method)
        try:
            token = inner.token or path_token or token_from_headers(request.headers)
            self._identify(state, token, info, request.admitted)
            owner = state.fernet.owner(key)
            if owner is not None and owner != info.token_name:
                raise RelayError(*_KEY_NOT_TOKENS)
            # Rate-limited before the replay cache: a client over its rate adds no entries to it.
            self._rate_limit(state, info.token_name, info)
            # Only authenticated envelopes enter the replay cache: forged ones cannot fill it.
            expires = envelope.replay_expiry(sealed, state.settings.envelope_ttl)
            replay.admit(state, inner.epoch, envelope.replay_key(sealed), expires)
        except RelayError as err:
            return reply.error(err)
        return await self._inner(request, state, inner, reply, info, outcome)

    async def _envelope_v2(
        self, request: Request, state: RelayState, info: RequestInfo, outcome: Outcome
    ) -> Response | None:
        info.envelope = True
        sealed = request.body
        info.bytes_in = len(sealed)
        assert state.client_keys is not None
        try:
            opened = envelope_v2.open_request(state.client_keys, sealed)
        except envelope.EnvelopeError as exc:
            # Not opened: no key to seal with, so this answer is plain (it concerns no client's data).
            return sealed_refusal(exc, state, outcome) or PLAIN.error(
                RelayError(exc.status, exc.code, str(exc))
            )
        sealer = envelope_v2.ReplySealer(opened.key, opened.nonce, state.settings.envelope_pad_to)
        reply = observe_inner(SealedReplyV2(sealer), outcome, opened.request.method)
        inner = opened.request
        ttl = state.settings.envelope_ttl
        try:
            envelope_v2.check_timestamp(opened.timestamp, ttl)
            self._identify(state, inner.token, info)
            if info.token_name != opened.key.name:
                raise RelayError(*_KEY_NOT_TOKENS)
            self._rate_limit(state, info.token_name, info)  # before the replay cache, as for v1
            replay_id = opened.key.kid + opened.nonce
            replay.admit(state, inner.epoch, replay_id, envelope_v2.replay_expiry(opened.timestamp, ttl))
        except envelope.EnvelopeError as exc:
            return reply.error(RelayError(exc.status, exc.code, str(exc)))
        except RelayError as err:
            return reply.error(err)
        return await self._inner(request, state, inner, reply, info, outcome)

    async def _inner(
        self,
        request: Request,
        state: RelayState,
        inner: envelope.InnerRequest,
        reply: PlainReply,
        info: RequestInfo,
        outcome: Outcome,
    ) -> Response | None:
        """The request an envelope carried, from an authenticated client; every answer sealed by `reply`."""
        info.path = log_path(inner.path)
        try:
            if inner.path.startswith("/t/") or len(inner.body) > state.server.max_body_bytes:
                raise RelayError(400, "invalid_envelope", "inner request path or body not allowed")
            route = self._route(state, inner.method, inner.path)
            if route.kind == "local":
                return self._local(state, inner.path, reply, info)
            self._check_budget(state, info)
            info.provider = route.name
            body = inner.body
            ctype = next((v for k, v in inner.headers.items() if k.lower() == "content-type"), "")
            doc, is_json = None, route.kind == "relay" or ("json" in ctype and bool(body))
            if is_json:
                doc = _check_json(body, require_object=route.kind == "relay")
            client_headers = upstream_request_headers(from_mapping(inner.headers), envelope=True)
            if route.kind == "relay" and not ctype:
                client_headers.append(("Content-Type", "application/json"))
            out = Outbound(inner.method, route.path, inner.query, client_headers, body, doc, is_json)
            _request_model(doc, outcome)
            token_budget.reserve(
                self.metrics.usage, state.settings.usage, info.token_name, body, doc, outcome
            )
            return await forward(request, route.attempts, out, reply, outcome, self.metrics)
        except RelayError as err:
            return reply.error(err)
        except UpstreamError as exc:
            return reply.error(RelayError(exc.status, exc.kind, str(exc)))


def _envelope_form(state: RelayState, ctype: str, path: str) -> bool:
    """A POST that is an envelope (v1 by its content type, v2 by its content type on a v2 path)."""
    if ctype.startswith(envelope.CONTENT_TYPE):
        return True
    return bool(state.client_keys) and ctype.startswith(envelope_v2.CONTENT_TYPE) and _v2_path(path)


def _v2_path(path: str) -> bool:
    """Envelope v2 is posted to a path that routes nowhere else, so no plain upload is mistaken for one."""
    if path.startswith("/v1/") or path == "/relay":
        return False
    return not path[1:].partition("/")[2].startswith("v1")


def _check_json(body: bytes, require_object: bool) -> dict | None:
    """400 for a body that is not JSON (not a JSON object, when required). Parsed in full up to
    JSON_CHECK_BYTES; beyond, only its first and last characters are checked (see JSON_CHECK_BYTES).
    Returns the parsed object when it was parsed and is one (forward.Outbound parses a large body only if
    a fallback entry must change its model)."""
    if len(body) > JSON_CHECK_BYTES:
        first, last = _ends(body)
        if not ((first == b"{" and last == b"}") or (first == b"[" and last == b"]" and not require_object)):
            raise RelayError(400, "invalid_json", "request body must be a JSON object or array")
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise RelayError(400, "invalid_json", "request body is not valid JSON") from None
    if require_object and not isinstance(doc, dict):
        raise RelayError(400, "invalid_json", "request body must be a JSON object")
    return doc if isinstance(doc, dict) else None


def _ends(body: bytes) -> tuple[bytes, bytes]:
    """The first and last non-blank bytes of a body, without the copy `strip()` would make of it."""
    start, end = 0, len(body)
    while start < end and body[start] in _JSON_BLANK:
        start += 1
    while end > start and body[end - 1] in _JSON_BLANK:
        end -= 1
    return body[start : start + 1], body[end - 1 : end] if end > start else b""


def _request_model(doc: dict | None, outcome: Outcome) -> None:
    """The model the client asked for: the usage label until the answer names the one that served it."""
    model = doc.get("model") if doc else None
    if isinstance(model, str):
        outcome.usage.model = model[:128]


class MetricsApp:
    """The localhost-only listener: /metrics, /healthz and /readyz without a token."""

    def __init__(self, relay: RelayApp) -> None:
        self.relay = relay

    def admit(self, request: Request, max_body: int) -> int:
        return 0  # every route of this listener is a GET: no body is ever read

    async def handle(self, request: Request) -> Response:
        if request.path == "/metrics":
            body = self.relay.render_metrics(self.relay.state).encode()
            return PLAIN.full(200, [("Content-Type", "text/plain; version=0.0.4")], body)
        if request.path == "/healthz":
            # The version is told here (loopback only) and to token holders (/v1/providers), not on the
            # public listener's token-less /healthz: nobody without a token learns what runs.
            return PLAIN.json(200, {"status": "ok", "version": __version__})
        if request.path == "/readyz":
            return self.relay._readyz()
        return PLAIN.error(
            RelayError(404, "unknown_route", "this listener serves /metrics, /healthz, /readyz")
        )
