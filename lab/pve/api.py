"""The HTTP side: `/api2/json` dispatch (auth, CSRF, schema validation, PVE's response shapes) and
the lab control endpoints under `/_lab/`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from lab.pve import faults, schema
from lab.pve.auth import AuthError, Identity
from lab.pve.errors import ApiError
from lab.pve.permcheck import Checker
from lab.pve.service import Pve

log = logging.getLogger("lab.pve.api")
PREFIX = "/api2/json"
DUPLICATE = "duplicate parameter (already defined in URI) with conflicting values!"


@dataclass
class Call:
    pve: Pve
    params: dict[str, Any]
    ident: Identity | None
    perms: Checker

    @property
    def user(self) -> str:
        return self.ident.name if self.ident else ""


Handler = Callable[[Call], Awaitable[Any]]
HANDLERS: dict[tuple[str, str], Handler] = {}


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        if schema.method_info(template, method) is None:
            raise RuntimeError(f"{method} {template} is not in the PVE schema")
        HANDLERS[(method, template)] = func
        return func

    return register


def _reason(text: str) -> str:
    # The status line cannot carry newlines (PVE's messages often end with one) and must be
    # latin-1 (user input can appear in it).
    text = text.strip().replace("\n", " ").replace("\r", " ")
    return text.encode("latin-1", "replace").decode("latin-1")


def _reply(status: int, body: dict[str, Any], reason: str | None = None) -> web.Response:
    return web.json_response(body, status=status, reason=_reason(reason) if reason else None)


async def _params(request: web.Request) -> dict[str, str]:
    params = dict(request.query)
    if request.can_read_body:
        raw = await request.read()
        ctype = request.content_type
        if ctype == "application/json" and raw:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ApiError(400, "JSON body must be an object")
            params.update({k: v for k, v in body.items() if v is not None})
        elif raw:
            params.update(parse_qsl(raw.decode(), keep_blank_values=True))
    return params


def _authenticate(pve: Pve, request: web.Request, method: str) -> Identity:
    header = request.headers.get("Authorization", "")
    if header.startswith("PVEAPIToken"):
        return pve.auth.check_token(header)
    ticket = request.cookies.get("PVEAuthCookie")
    if not ticket:
        raise AuthError("No ticket")
    ident = pve.auth.check_ticket(ticket)
    if method != "GET":
        pve.auth.check_csrf(ident, request.headers.get("CSRFPreventionToken"))
    return ident


@dataclass
class Result:
    """A handler's answer with PVE's result attributes (RPCEnvironment set_result_attrib): `total`
    (task lists and logs) goes beside `data` in the body, as pve-http-server's Formatter/Standard.pm
    puts it."""

    data: Any
    total: int | None = None


def _conflicting_path_param(raw: dict[str, Any], path_params: dict[str, str]) -> None:
    """pve-manager PVE/HTTPServer.pm rest_handler: a body/query parameter that repeats a path parameter
    with another value is refused, before the permission check."""
    for name in sorted(raw):
        if name in path_params and _perl_str(raw[name]) != path_params[name]:
            raise schema.ParamError({name: DUPLICATE})


def _perl_str(value: Any) -> str:
    # Perl compares the two with `ne`, i.e. as strings: a JSON 915 equals the path's "915".
    return ("1" if value else "0") if isinstance(value, bool) else str(value)


def _resolve_node(pve: Pve, info: dict[str, Any], path_params: dict[str, str], authid: str) -> None:
    """pve-manager PVE/HTTPServer.pm rest_handler, after the permission check: a call with `proxyto`
    goes to its node, whose address pve-cluster PVE/Cluster.pm remote_node_ip looks up (the cluster's
    node list, else pve-common PVE/Network.pm get_ip_from_hostname, whose getaddrinfo failure is
    PVE/Tools.pm getaddrinfo_all's text). The target node checks the parameters, so a node that does not
    resolve is a 500 before any parameter error. (The two /nodes/{node} reads without proxyto run on the
    receiving node, which knows no such node either: the lab refuses them alike, its handlers serve only
    its nodes.)"""
    node = path_params.get("node")
    if node is None:
        return
    if node not in pve.nodes:
        lookup = f"failed to get address info for: {node}: Name or service not known"
        raise ApiError(500, f"hostname lookup '{node}' failed - {lookup}")
    if info.get("proxyto") and faults.offline(pve.state.faults, node, authid):
        # The receiving node cannot reach the target node: pveproxy's answer.
        raise ApiError(595, "Errors during connection establishment, proxy handshake")


async def dispatch(request: web.Request) -> web.Response:
    pve: Pve = request.app["pve"]
    started = time.monotonic()
    method = request.method
    path = request.path[len(PREFIX) :] or "/"
    found = schema.match(path)
    info = schema.method_info(found[0], method) if found else None
    if not found or info is None or (method, found[0]) not in HANDLERS:
        # pve-manager PVE/HTTPServer.pm rest_handler: the path relative to /api2/json, no newline.
        text = f"Method '{method} {path}' not implemented"
        return _error(request, 501, {"data": None, "message": text}, text)
    template, path_params = found
    try:
        ident = None if template == "/access/ticket" else _authenticate(pve, request, method)
    except AuthError as exc:
        # pve-http-server PVE/APIServer/AnyEvent.pm: a failed authentication is an HTTP::Response with
        # the reason only (no body), sent after a delay (3 s on PVE; [pve] auth_failure_delay here).
        await asyncio.sleep(pve.auth_failure_delay)
        log.info("%s %s -> 401 %s", method, request.path, exc)
        return web.Response(status=401, reason=_reason(str(exc)))
    try:
        raw = await _params(request)
        _conflicting_path_param(raw, path_params)
        raw.update(path_params)
        authid = ident.name if ident else ""
        perms = Checker(pve.access, authid)
        if ident is not None:
            # As PVE's REST handler: the schema's permissions are checked on the raw parameters, before
            # they are verified (an unauthorized caller learns nothing about its bad input).
            perms.api2(info.get("permissions"), raw)
        _resolve_node(pve, info, path_params, authid)
        params = schema.validate(template, method, raw)
        data = await HANDLERS[(method, template)](Call(pve, params, ident, perms))
    except AuthError as exc:
        # POST /access/ticket refusing a login: a handler error, so a JSON body, delayed like every 401
        # (AnyEvent.pm: 3 s minus the time the call took).
        await asyncio.sleep(max(0.0, pve.auth_failure_delay - (time.monotonic() - started)))
        return _error(request, 401, _error_body(str(exc)), str(exc))
    except schema.ParamError as exc:
        log.info("%s %s -> 400 %s", method, request.path, exc.errors)
        body = {"data": None, "errors": exc.errors, "message": "Parameter verification failed.\n"}
        return _reply(400, body, "Parameter verification failed.")
    except ApiError as exc:
        return _error(request, exc.status, _error_body(exc.message), exc.message)
    except json.JSONDecodeError:
        return _error(request, 400, _error_body("malformed JSON body"), "malformed JSON body")
    except Exception as exc:  # a bug in the emulator: answer like PVE's generic 500, keep the traceback
        log.exception("%s %s crashed", method, request.path)
        return _error(request, 500, _error_body(str(exc)), str(exc) or type(exc).__name__)
    if isinstance(data, Result):
        # Formatter/Standard.pm: `total` only when set and not 0.
        return _reply(200, {"data": data.data, **({"total": data.total} if data.total else {})})
    return _reply(200, {"data": data})


def _error_body(message: str) -> dict[str, Any]:
    """pve-http-server Formatter/Standard.pm prepare_response_data: every JSON error carries `message`
    (PVE's die texts end with a newline)."""
    return {"data": None, "message": message.rstrip("\n") + "\n"}


def _error(request: web.Request, status: int, body: dict[str, Any], reason: str) -> web.Response:
    log.info("%s %s -> %d %s", request.method, request.path, status, reason.strip())
    return _reply(status, body, reason)


async def faults_control(request: web.Request) -> web.Response:
    """Lab control for injected faults; see lab/pve/faults.py for the rules."""
    pve: Pve = request.app["pve"]
    try:
        if request.method == "POST":
            faults.apply_request(pve.state.faults, await request.json(), pve.nodes)
        elif request.method == "DELETE":
            faults.clear(pve.state.faults, everything=request.query.get("all") in ("1", "true"))
        elif request.method != "GET":
            return web.json_response({"error": "GET, POST or DELETE"}, status=405)
    except (faults.FaultError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    pve.state.save()
    return web.json_response({"faults": pve.state.faults})


async def unlock_control(request: web.Request) -> web.Response:
    """Lab control standing in for `pct unlock VMID` on the node (the API cannot remove a lock: PUT
    config refuses any change on a locked CT). POST {"vmid": N} -> {"vmid": N, "was": lock or null}."""
    pve: Pve = request.app["pve"]
    try:
        body = await request.json()
        vmid = body["vmid"] if isinstance(body, dict) else None
        if isinstance(vmid, bool) or not isinstance(vmid, int):
            raise ValueError("'vmid' must be an integer")
        was = pve.unlock(vmid)
    except (ValueError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except KeyError:
        return web.json_response({"error": "no such container"}, status=404)
    return web.json_response({"vmid": vmid, "was": was})


async def status_hold_control(request: web.Request) -> web.Response:
    """Lab control over the status rounds (lab/pve/statuscache.py). POST {"vmids": [LO, HI], "seconds": S}
    holds those guests' /cluster/resources entries at the last round for S seconds (at most 120; 0
    releases them); GET -> {"interval": s, "held": [vmids]}."""
    cache = request.app["pve"].status_cache
    if request.method == "POST":
        try:
            body = await request.json()
            lo, hi = body["vmids"]
            seconds = float(body["seconds"])
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= seconds <= 120 and hi - lo <= 1000):
                raise ValueError
        except (ValueError, TypeError, KeyError, json.JSONDecodeError):
            return web.json_response({"error": 'body: {"vmids": [LO, HI], "seconds": 0..120}'}, status=400)
        cache.hold(range(lo, hi + 1), seconds)
    return web.json_response({"interval": cache.interval, "held": sorted(cache.held)})


def make_app(pve: Pve) -> web.Application:
    from lab.pve import handlers  # noqa: F401  (registers the routes)

    app = web.Application(client_max_size=8 * 1024**2)
    app["pve"] = pve
    app.router.add_route("*", "/_lab/faults", faults_control)
    app.router.add_post("/_lab/unlock", unlock_control)
    app.router.add_route("*", "/_lab/status_hold", status_hold_control)
    app.router.add_route("*", PREFIX + "/{tail:.*}", dispatch)
    return app
