"""Permission checks as PVE runs them: an endpoint's schema `permissions` (RPCEnvironment.pm
check_api2_permissions / exec_api2_perm_check) and the helpers handlers call for their own checks
(check, check_any, check_vm_perm). A refusal is HTTP 403 "Permission check failed (<what>)".
"""

from __future__ import annotations

from typing import Any

from lab.pve.access import ROOT, AccessConfig, normalize_path, split_tokenid
from lab.pve.errors import ApiError


def denied(what: str | None = None) -> ApiError:
    """PVE::Exception raise_perm_exc."""
    return ApiError(403, "Permission check failed" + (f" ({what})" if what else ""))


class Checker:
    """Checks for one authenticated request (`authid` = userid or full token id)."""

    def __init__(self, access: AccessConfig, authid: str) -> None:
        self.access = access
        self.authid = authid
        self._cache: dict[str, set[str]] = {}

    @property
    def is_root(self) -> bool:
        """Exactly root@pam logged in with a password: tokens (even root@pam's) are not."""
        return self.authid == ROOT

    def privs(self, path: str) -> set[str]:
        if path not in self._cache:
            self._cache[path] = self.access.permissions(self.authid, path)
        return self._cache[path]

    def check(self, path: str, privs: list[str], noerr: bool = False) -> bool:
        held = self.privs(path)
        for priv in privs:
            if priv not in held:
                if noerr:
                    return False
                raise denied(f"{path}, {priv}")
        return True

    def check_any(self, path: str, privs: list[str], noerr: bool = False) -> bool:
        if set(privs) & self.privs(path):
            return True
        if noerr:
            return False
        raise denied(f"{path}, {'|'.join(privs)}")

    def check_full(self, path: str, privs: list[str], any_: bool, noerr: bool = False) -> bool:
        return self.check_any(path, privs, noerr) if any_ else self.check(path, privs, noerr)

    def check_vm_perm(self, vmid: int, privs: list[str], any_: bool = False) -> bool:
        return self.check_full(f"/vms/{vmid}", privs, any_)

    def check_perm_modify(self, path: str, noerr: bool = False) -> bool:
        privs = ["Permissions.Modify"]
        if path.startswith("/storage/"):
            privs.append("Datastore.Allocate")
        elif path.startswith("/vms/"):
            privs.append("VM.Allocate")
        elif path.startswith("/pool/"):
            privs.append("Pool.Allocate")
        return self.check_any(path, privs, noerr)

    # --- the schema's permission language ---------------------------------------------------------
    def api2(self, perm: dict[str, Any] | None, params: dict[str, Any]) -> None:
        """check_api2_permissions: root@pam passes; `user: all` passes; else run `check`."""
        if self.is_root:
            return
        if not perm:
            raise denied("user != root@pam")
        if perm.get("user") in ("all", "world"):
            return
        if perm.get("check"):
            self.run(perm["check"], params)
            return
        raise denied()

    def run(self, check: list[Any], params: dict[str, Any], noerr: bool = False) -> bool:
        test, rest = check[0], check[1:]
        if test == "and":
            for sub in rest:
                self.run(sub, params)
            return True
        if test == "or":
            if any(self.run(sub, params, noerr=True) for sub in rest):
                return True
            if noerr:
                return False
            raise denied()
        if test == "perm":
            template, privs, *opts = rest
            options = dict(zip(opts[::2], opts[1::2], strict=False))
            path = normalize_path(_fill(template, params)) or template
            return self.check_full(path, privs, bool(options.get("any")), noerr)
        if test == "perm-modify":
            path = normalize_path(_fill(rest[0], params))
            return False if path is None else self.check_perm_modify(path, noerr)
        if test == "userid-param":
            return self._userid_param(rest[0], params, noerr)
        if test == "userid-group":
            privs, *opts = rest
            return self._userid_group(privs, dict(zip(opts[::2], opts[1::2], strict=False)), params, noerr)
        raise RuntimeError(f"unknown permission test {test!r}")

    def _userid_param(self, subtest: str, params: dict[str, Any], noerr: bool) -> bool:
        userid = str(params.get("userid", ""))
        if subtest == "self":
            if self.authid == userid:
                return True
            if noerr:
                return False
            raise denied()
        realm = userid.rpartition("@")[2]
        return self.check(f"/access/realm/{realm}", ["Realm.AllocateUser"], noerr)

    def _userid_group(
        self, privs: list[str], opts: dict[str, Any], params: dict[str, Any], noerr: bool
    ) -> bool:
        # No groups are emulated: without the privilege on /access/groups nothing is allowed.
        if self.check_any("/access/groups", privs, noerr=True):
            return True
        if opts.get("groups_param") and not params.get("groups"):
            raise denied(f"/access/groups, {'|'.join(privs)}")
        if noerr:
            return False
        raise denied()


def _fill(template: str, params: dict[str, Any]) -> str:
    """PVE::Tools::template_replace: {name} -> the request parameter."""
    out = template
    for key, value in params.items():
        out = out.replace("{" + key + "}", str(value))
    return out


def owns_task(authid: str, task_user: str) -> bool:
    """pve-manager API2/Tasks.pm check_task_user: a token sees its own tasks, a user its and its tokens'."""
    if authid == task_user:
        return True
    parts = split_tokenid(task_user)
    return parts is not None and parts[0] == authid
