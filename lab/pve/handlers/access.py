"""/access: the login (ticket), users and their API tokens, roles, ACLs and effective permissions."""

from __future__ import annotations

import re
from typing import Any

from lab.pve.access import ACL_PATH_RE, AccessError, normalize_path
from lab.pve.api import Call, route
from lab.pve.errors import ApiError
from lab.pve.formats import split_list
from lab.pve.privileges import BUILTIN_ROLES
from lab.pve.schema import ParamError


@route("GET", "/access/ticket")
async def ticket_dummy(call: Call) -> None:
    return None


@route("POST", "/access/ticket")
async def ticket(call: Call) -> dict[str, Any]:
    """pve-access-control src/PVE/API2/AccessControl.pm create_ticket: the ticket, `cap` (the caller's
    API permissions) and the cluster name only for a caller with Sys.Audit on /."""
    p = call.params
    res = call.pve.auth.login(p["username"], p["password"], p.get("realm"))
    userid = res["username"]
    clustername = res.pop("clustername")
    res["cap"] = api_capabilities(call.pve.access, userid)
    if "Sys.Audit" in call.pve.access.permissions(userid, "/"):
        res["clustername"] = clustername
    return res


# src/PVE/RPCEnvironment.pm compute_api_permission: which privileges each part of the GUI gets told about.
CAP_PRIVS = {
    "vms": re.compile(r"VM\.|Permissions\.Modify"),
    "access": re.compile(r"(User|Group)\.|Permissions\.Modify"),
    "storage": re.compile(r"Datastore\.|Permissions\.Modify"),
    "nodes": re.compile(r"Sys\.|Permissions\.Modify"),
    "sdn": re.compile(r"SDN\.|Permissions\.Modify"),
    "dc": re.compile(r"Sys\.Audit|Sys\.Modify|SDN\."),
    "mapping": re.compile(r"Mapping\.|Permissions.Modify"),
}
CAP_PATHS = ["/", "/nodes", "/access/groups", "/vms", "/storage", "/sdn", "/mapping"]


def api_capabilities(access, userid: str) -> dict[str, dict[str, int]]:
    """compute_api_permission: the privileges held on the top-level paths and every path with an ACL,
    each filed under its top-level part (`/` is `dc`) when that part's pattern matches it."""
    cap: dict[str, dict[str, int]] = {part: {} for part in CAP_PRIVS}
    for path in dict.fromkeys(CAP_PATHS + sorted(access.acl)):
        top = path.split("/")[1] if path != "/" else "dc"
        if top not in CAP_PRIVS:
            continue
        for priv in access.permissions(userid, path):
            if CAP_PRIVS[top].search(priv):
                cap[top][priv] = 1
    return cap


# --- users, tokens, roles, ACLs (pve-access-control API2/User.pm, Role.pm, ACL.pm) -------------------


def _config_error(exc: AccessError) -> ApiError:
    return ApiError(500, str(exc))


def _token_info(token: dict[str, Any]) -> dict[str, Any]:
    return {k: token[k] for k in ("privsep", "expire", "comment") if k in token}


def _user_entry(userid: str, user: dict[str, Any], full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"userid": userid, "realm-type": userid.rpartition("@")[2]}
    out.update(
        {k: user[k] for k in ("enable", "expire", "firstname", "lastname", "email", "comment") if k in user}
    )
    if full:
        out["groups"] = ""
        out["tokens"] = [
            {"tokenid": sub, **_token_info(t)} for sub, t in sorted(user.get("tokens", {}).items())
        ]
    return out


@route("GET", "/access/users")
async def list_users(call: Call) -> list[dict[str, Any]]:
    access, perms = call.pve.access, call.perms
    see_all = perms.check_any("/access/groups", ["User.Modify", "Sys.Audit"], noerr=True)
    me = call.ident.userid if call.ident else ""
    out = []
    for userid, user in sorted(access.users.items()):
        if not (see_all or userid == me):
            continue
        enabled = call.params.get("enabled")
        if enabled is not None and bool(user.get("enable", 1)) != enabled:
            continue
        out.append(_user_entry(userid, user, bool(call.params.get("full"))))
    return out


@route("POST", "/access/users")
async def create_user(call: Call) -> None:
    p = call.params
    try:
        call.pve.access.add_user(p["userid"], p, p.get("password"))
    except AccessError as exc:
        raise _config_error(exc) from None


@route("GET", "/access/users/{userid}")
async def read_user(call: Call) -> dict[str, Any]:
    try:
        user = call.pve.access.user(call.params["userid"])
    except AccessError as exc:
        raise _config_error(exc) from None
    out = _user_entry(call.params["userid"], user, False)
    del out["userid"], out["realm-type"]
    out["groups"] = []
    out["tokens"] = {sub: _token_info(t) for sub, t in user.get("tokens", {}).items()}
    return out


@route("DELETE", "/access/users/{userid}")
async def delete_user(call: Call) -> None:
    try:
        call.pve.access.delete_user(call.params["userid"])
    except AccessError as exc:
        raise ApiError(500, f"delete user failed: {exc}") from None


@route("GET", "/access/users/{userid}/token")
async def list_tokens(call: Call) -> list[dict[str, Any]]:
    try:
        user = call.pve.access.user(call.params["userid"])
    except AccessError as exc:
        raise _config_error(exc) from None
    return [{"tokenid": sub, **_token_info(t)} for sub, t in sorted(user.get("tokens", {}).items())]


@route("GET", "/access/users/{userid}/token/{tokenid}")
async def read_token(call: Call) -> dict[str, Any]:
    try:
        return _token_info(call.pve.access.token(call.params["userid"], call.params["tokenid"]))
    except AccessError as exc:
        raise _config_error(exc) from None


@route("POST", "/access/users/{userid}/token/{tokenid}")
async def generate_token(call: Call) -> dict[str, Any]:
    p, access = call.params, call.pve.access
    userid, sub = p["userid"], p["tokenid"]
    if userid in access.users and sub in access.users[userid].get("tokens", {}):
        raise ParamError({"tokenid": "Token already exists."})
    try:
        token = access.add_token(userid, sub, p.get("privsep", True), p.get("expire"), p.get("comment"))
    except AccessError as exc:
        raise _config_error(exc) from None
    return {"full-tokenid": f"{userid}!{sub}", "info": _token_info(token), "value": token["secret"]}


@route("PUT", "/access/users/{userid}/token/{tokenid}")
async def update_token(call: Call) -> dict[str, Any]:
    p = call.params
    try:
        token = call.pve.access.token(p["userid"], p["tokenid"])
    except AccessError as exc:
        raise _config_error(exc) from None
    for key in ("privsep", "expire"):
        if p.get(key) is not None:
            token[key] = int(p[key])
    if p.get("comment"):
        token["comment"] = p["comment"]
    call.pve.access.save()
    return _token_info(token)


@route("DELETE", "/access/users/{userid}/token/{tokenid}")
async def remove_token(call: Call) -> None:
    try:
        call.pve.access.delete_token(call.params["userid"], call.params["tokenid"])
    except AccessError as exc:
        raise _config_error(exc) from None


@route("GET", "/access/roles")
async def list_roles(call: Call) -> list[dict[str, Any]]:
    return [
        {"roleid": role, "privs": ",".join(sorted(privs)), "special": int(role in BUILTIN_ROLES)}
        for role, privs in sorted(call.pve.access.all_roles().items())
    ]


@route("POST", "/access/roles")
async def create_role(call: Call) -> None:
    role = call.params["roleid"]
    if role.upper().startswith("PVE"):
        raise ParamError(
            {"roleid": "cannot use role ID starting with the (case-insensitive) 'PVE' namespace"}
        )
    try:
        call.pve.access.set_role(role, split_list(call.params.get("privs", "")), create=True)
    except AccessError as exc:
        raise _config_error(exc) from None


@route("GET", "/access/roles/{roleid}")
async def read_role(call: Call) -> dict[str, int]:
    privs = call.pve.access.role_privs(call.params["roleid"])
    if privs is None:
        raise ApiError(500, f"role '{call.params['roleid']}' does not exist")
    return {p: 1 for p in sorted(privs)}


@route("PUT", "/access/roles/{roleid}")
async def update_role(call: Call) -> None:
    p = call.params
    try:
        call.pve.access.set_role(
            p["roleid"], split_list(p.get("privs", "")), create=False, append=bool(p.get("append"))
        )
    except AccessError as exc:
        raise _config_error(exc) from None


@route("DELETE", "/access/roles/{roleid}")
async def delete_role(call: Call) -> None:
    try:
        call.pve.access.delete_role(call.params["roleid"])
    except AccessError as exc:
        raise _config_error(exc) from None


@route("GET", "/access/acl")
async def read_acl(call: Call) -> list[dict[str, Any]]:
    audit = call.perms.check("/access", ["Sys.Audit"], noerr=True)
    return [
        e for e in call.pve.access.acl_list() if audit or call.perms.check_perm_modify(e["path"], noerr=True)
    ]


@route("PUT", "/access/acl")
async def update_acl(call: Call) -> None:
    p = call.params
    members = {k: split_list(p[k]) for k in ("users", "groups", "tokens") if p.get(k)}
    if not members:
        raise ParamError(
            {k: "either 'users', 'groups' or 'tokens' is required." for k in ("users", "groups", "tokens")}
        )
    path = normalize_path(p["path"])
    if path is None or (not p.get("delete") and not ACL_PATH_RE.match(path)):
        raise ParamError({"path": f"invalid ACL path '{p['path']}'"})
    try:
        call.pve.access.update_acl(
            path, split_list(p["roles"]), members, p.get("propagate", True), bool(p.get("delete"))
        )
    except AccessError as exc:
        raise _config_error(exc) from None


@route("GET", "/access/permissions")
async def permissions(call: Call) -> dict[str, dict[str, int]]:
    """AccessControl.pm `permissions`: yourself and your tokens freely; others with Sys.Audit on /access."""
    me = call.user
    target = call.params.get("userid") or me
    own = target == me or (call.ident is not None and target.split("!", 1)[0] == call.ident.userid)
    if not own:
        call.perms.check("/access", ["Sys.Audit"])
    access = call.pve.access
    paths = (
        [normalize_path(call.params["path"]) or "/"] if call.params.get("path") else access.paths_of(target)
    )
    out = {}
    for path in paths:
        privs = access.permissions(target, path)
        if privs or call.params.get("path"):
            out[path] = {p: 1 for p in sorted(privs)}
    return out
