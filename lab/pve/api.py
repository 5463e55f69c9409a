"""The HTTP side: `/api2/json` dispatch (auth, CSRF, schema validation, PVE's response shapes) and
the lab control endpoints under `/_lab/`."""

from __future__ import annotations

import json
import logging
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


def _reply(status: int, body: dict[str, Any], reason: str | None = None) -> web.Response:
    # The status line cannot carry newlines (PVE's messages often end with one) and must be
    # latin-1 (user input can appear in it).
    if reason:
        reason = reason.strip().replace("\n", " ").replace("\r", " ")
        reason = reason.encode("latin-1", "replace").decode("latin-1")
    return web.json_response(body, status=status, reason=reason)


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


async def dispatch(request: web.Request) -> web.Response:
    pve: Pve = request.app["pve"]
    method = request.method
    path = request.path[len(PREFIX) :] or "/"
    found = schema.match(path)
    info = schema.method_info(found[0], method) if found else None
    if not found or info is None or (method, found[0]) not in HANDLERS:
        return _reply(501, {"data": None}, f"Method '{method} {request.path}' not implemented")
    template, path_params = found
    try:
        ident = None if template == "/access/ticket" else _authenticate(pve, request, method)
        if "node" in path_params and faults.offline(
            pve.state.faults, path_params["node"], ident.name if ident else ""
        ):
            # The receiving node cannot reach the target node: pveproxy's answer (before any check
            # the target node would have made).
            raise ApiError(595, "Errors during connection establishment, proxy handshake")
        raw = await _params(request)
        raw.update(path_params)
        perms = Checker(pve.access, ident.name if ident else "")
        if ident is not None:
            # As PVE's REST handler: the schema's permissions are checked on the raw parameters, before
            # they are verified (an unauthorized caller learns nothing about its bad input).
            perms.api2(info.get("permissions"), raw)
        params = schema.validate(template, method, raw)
        if "node" in path_params:
            pve.check_node(path_params["node"])
        data = await HANDLERS[(method, template)](Call(pve, params, ident, perms))
    except AuthError as exc:
        return _error(request, 401, {"data": None}, str(exc))
    except schema.ParamError as exc:
        log.info("%s %s -> 400 %s", method, request.path, exc.errors)
        return _reply(400, {"errors": exc.errors, "data": None}, "Parameter verification failed.")
    except ApiError as exc:
        body = {"data": None, "message": exc.message.rstrip("\n") + "\n"}
        return _error(request, exc.status, body, exc.message)
    except json.JSONDecodeError:
        return _error(request, 400, {"data": None, "message": "malformed JSON body\n"}, "malformed JSON body")
    except Exception as exc:  # a bug in the emulator: answer like PVE's generic 500, keep the traceback
        log.exception("%s %s crashed", method, request.path)
        return _error(request, 500, {"data": None, "message": f"{exc}\n"}, str(exc) or type(exc).__name__)
    return _reply(200, {"data": data})


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


def make_app(pve: Pve) -> web.Application:
    from lab.pve import handlers  # noqa: F401  (registers the routes)

    app = web.Application(client_max_size=8 * 1024**2)
    app["pve"] = pve
    app.router.add_route("*", "/_lab/faults", faults_control)
    app.router.add_post("/_lab/unlock", unlock_control)
    app.router.add_route("*", PREFIX + "/{tail:.*}", dispatch)
    return app
