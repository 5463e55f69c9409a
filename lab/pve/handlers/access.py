"""/access/ticket: PVE's login."""

from __future__ import annotations

from typing import Any

from lab.pve.api import Call, route


@route("GET", "/access/ticket")
async def ticket_dummy(call: Call) -> None:
    return None


@route("POST", "/access/ticket")
async def ticket(call: Call) -> dict[str, Any]:
    p = call.params
    return call.pve.auth.login(p["username"], p["password"], p.get("realm"))
