"""PVE's access control state (user.cfg + token secrets): users, API tokens, roles, ACLs, and how a
user's or token's privileges on a path are computed.

The rules follow pve-access-control:
- AccessControl.pm `roles()`: walk the path from `/` to the checked path; at each level the ACL entries
  of the token (privilege-separated tokens only), else of the user, else of the user's groups replace
  what was inherited, if they apply (the level is the checked path itself, or the entry propagates).
  A `NoAccess` role left at the end wins over everything.
- RPCEnvironment.pm `permissions()`: root@pam has every privilege; a token without privilege separation
  has exactly its user's privileges; a privilege-separated token has the intersection of its own and its
  user's (root@pam's tokens: their own ACLs only).
- Pools are not emulated (no /pools endpoints), so pool ACLs never apply.

Persisted in <state>/pve/access.json (0600: it holds token secrets, as /etc/pve/priv/token.cfg does).
The accounts of lab.toml are (re)asserted on every start; `root@pam!<token_id>` is created without
privilege separation, so the lab's own login stays root-equivalent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

from lab.pve.privileges import BUILTIN_ROLES, VALID_PRIVS

ROOT = "root@pam"
USER_RE = re.compile(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$")
TOKEN_SUBID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.\-_]+$")
ACL_PATH_RE = re.compile(
    r"^(/|/access|/access/groups|/access/groups/[\w.\-]+|/access/realm|/access/realm/[\w.\-]+"
    r"|/nodes|/nodes/[\w.\-]+|/pool|/pool/[\w.\-]+|/sdn|/sdn/zones/[\w.\-]+(/[\w.\-]+){0,2}"
    r"|/sdn/vnets/[\w.\-]+|/storage|/storage/[\w.\-]+|/vms|/vms/[1-9][0-9]{2,}|/mapping(/[\w.\-]+){0,2})$"
)


class AccessError(Exception):
    """A refused access-config change; PVE dies with this text (HTTP 500)."""


def normalize_path(path: str) -> str | None:
    """AccessControl.pm normalize_path: collapse slashes, drop a trailing one, refuse odd characters."""
    if not path:
        return None
    path = re.sub(r"/+", "/", path).rstrip("/") or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path if re.fullmatch(r"[A-Za-z0-9.\-_/]+", path) else None


def split_tokenid(authid: str) -> tuple[str, str] | None:
    user, sep, sub = authid.partition("!")
    if sep and USER_RE.match(user) and TOKEN_SUBID_RE.match(sub):
        return user, sub
    return None


def _hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000)
    return f"{salt.hex()}${digest.hex()}"


def _password_ok(stored: str, password: str) -> bool:
    salt, _, _digest = stored.partition("$")
    try:
        return hmac.compare_digest(_hash_password(password, bytes.fromhex(salt)), stored)
    except ValueError:
        return False


class AccessConfig:
    def __init__(self, path: Path, cfg: dict[str, Any]) -> None:
        self.path = path
        data = json.loads(path.read_text()) if path.exists() else {}
        self.users: dict[str, dict[str, Any]] = data.get("users", {})
        self.roles: dict[str, list[str]] = data.get("roles", {})  # custom roles only
        # acl[path][kind][ugid][role] = propagate (kind: users, groups, tokens), like user.cfg's tree.
        self.acl: dict[str, dict[str, dict[str, dict[str, int]]]] = data.get("acl", {})
        self.pam_passwords: dict[str, str] = {}
        self._seed(cfg)
        self.save()

    # --- persistence -------------------------------------------------------------------------------
    def _seed(self, cfg: dict[str, Any]) -> None:
        passwords = dict(cfg.get("users", {}))
        passwords.setdefault(cfg["user"], cfg["password"])
        tokens = dict(cfg.get("tokens", {}))
        main_token = f"{cfg['user']}!{cfg['token_id']}"
        tokens.setdefault(main_token, cfg["token_secret"])
        self.users.setdefault(ROOT, {"enable": 1, "expire": 0, "tokens": {}})
        for userid, password in passwords.items():
            user = self.users.setdefault(userid, {"enable": 1, "expire": 0, "tokens": {}})
            if userid.endswith("@pam"):
                self.pam_passwords[userid] = password  # PAM: the node's system password, not user.cfg
            else:
                user["password"] = _hash_password(password)
        for authid, secret in tokens.items():
            userid, sub = authid.split("!", 1)
            user = self.users.setdefault(userid, {"enable": 1, "expire": 0, "tokens": {}})
            token = user.setdefault("tokens", {}).setdefault(sub, {"privsep": 1, "expire": 0})
            token["secret"] = secret
            if authid == main_token:
                token["privsep"] = 0  # the lab login: the full privileges of its user

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"users": self.users, "roles": self.roles, "acl": self.acl}, fh, indent=1)
        tmp.replace(self.path)

    # --- authentication ----------------------------------------------------------------------------
    def check_user_enabled(self, userid: str) -> str | None:
        """None when the user may log in, else PVE's reason."""
        user = self.users.get(userid)
        if user is None:
            return f"no such user ('{userid}')"
        if not user.get("enable", 1):
            return f"user '{userid}' is disabled"
        if user.get("expire") and user["expire"] < time.time():
            return f"user '{userid}' access expired"
        return None

    def password_ok(self, userid: str, password: str) -> bool:
        if self.check_user_enabled(userid):
            return False
        if userid in self.pam_passwords:
            return hmac.compare_digest(self.pam_passwords[userid].encode(), password.encode())
        stored = self.users[userid].get("password")
        return bool(stored) and _password_ok(stored, password)

    def token_problem(self, authid: str, secret: str) -> str | None:
        """None when `authid`=`secret` is a valid, enabled, unexpired token; else PVE's reason."""
        parts = split_tokenid(authid)
        if parts is None:
            return f"'{authid}' is not a valid token ID - not able to split into user and token parts"
        userid, sub = parts
        problem = self.check_user_enabled(userid)
        if problem:
            return problem
        token = self.users[userid].get("tokens", {}).get(sub)
        if token is None:
            return f"no such token '{sub}' for user '{userid}'"
        if token.get("expire") and token["expire"] < time.time():
            return f"token '{sub}' access expired"
        if not hmac.compare_digest(str(token.get("secret", "")).encode(), secret.encode()):
            return "invalid token value!"
        return None

    # --- users and tokens --------------------------------------------------------------------------
    def add_user(self, userid: str, fields: dict[str, Any], password: str | None) -> None:
        if userid in self.users:
            raise AccessError(f"create user failed: user '{userid}' already exists")
        if fields.get("groups"):
            raise AccessError(f"create user failed: no such group '{fields['groups'].split(',')[0]}'")
        user: dict[str, Any] = {"enable": int(fields.get("enable", True)), "expire": 0, "tokens": {}}
        for key in ("expire", "firstname", "lastname", "email", "comment", "keys"):
            if fields.get(key):
                user[key] = fields[key]
        if password is not None:
            user["password"] = _hash_password(password)
        self.users[userid] = user
        self.save()

    def user(self, userid: str) -> dict[str, Any]:
        if userid not in self.users:
            raise AccessError(f"no such user ('{userid}')")
        return self.users[userid]

    def delete_user(self, userid: str) -> None:
        self.user(userid)
        del self.users[userid]
        for entry in self.acl.values():
            entry.get("users", {}).pop(userid, None)
            for tokenid in [t for t in entry.get("tokens", {}) if t.startswith(userid + "!")]:
                del entry["tokens"][tokenid]
        self.save()

    def add_token(self, userid: str, sub: str, privsep: bool, expire: int | None, comment: str | None):
        user = self.user(userid)
        if sub in user.setdefault("tokens", {}):
            raise AccessError("generating token failed: Token already exists.")
        token: dict[str, Any] = {"privsep": int(privsep), "secret": str(uuid.uuid4())}
        if expire is not None:
            token["expire"] = expire
        if comment:
            token["comment"] = comment
        user["tokens"][sub] = token
        self.save()
        return token

    def token(self, userid: str, sub: str) -> dict[str, Any]:
        token = self.user(userid).get("tokens", {}).get(sub)
        if token is None:
            raise AccessError(f"no such token '{sub}' for user '{userid}'")
        return token

    def delete_token(self, userid: str, sub: str) -> None:
        self.token(userid, sub)
        del self.users[userid]["tokens"][sub]
        for entry in self.acl.values():
            entry.get("tokens", {}).pop(f"{userid}!{sub}", None)
        self.save()

    # --- roles -------------------------------------------------------------------------------------
    def role_privs(self, role: str) -> frozenset[str] | None:
        if role in BUILTIN_ROLES:
            return BUILTIN_ROLES[role]
        return frozenset(self.roles[role]) if role in self.roles else None

    def all_roles(self) -> dict[str, frozenset[str]]:
        return {**{r: frozenset(p) for r, p in self.roles.items()}, **BUILTIN_ROLES}

    @staticmethod
    def check_privs(privs: list[str]) -> None:
        for priv in privs:
            if priv not in VALID_PRIVS:
                raise AccessError(f"invalid privilege '{priv}'")

    def set_role(self, role: str, privs: list[str], *, create: bool, append: bool = False) -> None:
        verb = "create" if create else "update"
        if role in BUILTIN_ROLES:
            raise AccessError(f"auto-generated role '{role}' cannot be modified")
        if create and role in self.roles:
            raise AccessError(f"create role failed: role '{role}' already exists")
        if not create and role not in self.roles:
            raise AccessError(f"update role failed: role '{role}' does not exist")
        try:
            self.check_privs(privs)
        except AccessError as exc:
            raise AccessError(f"{verb} role failed: {exc}") from None
        base = set(self.roles.get(role, [])) if append else set()
        self.roles[role] = sorted(base | set(privs))
        self.save()

    def delete_role(self, role: str) -> None:
        if role in BUILTIN_ROLES:
            raise AccessError(f"auto-generated role '{role}' cannot be deleted")
        if role not in self.roles:
            raise AccessError(f"delete role failed: role '{role}' does not exist")
        del self.roles[role]
        self.save()

    # --- ACLs --------------------------------------------------------------------------------------
    def update_acl(
        self, path: str, roles: list[str], members: dict[str, list[str]], propagate: bool, delete: bool
    ) -> None:
        """members: {"users": [...], "tokens": [...], "groups": [...]}; errors as PVE's."""
        for role in roles:
            if self.role_privs(role) is None:
                raise AccessError(f"ACL update failed: role '{role}' does not exist")
            for group in members.get("groups", []):
                raise AccessError(f"ACL update failed: group '{group}' does not exist")
            for userid in members.get("users", []):
                if userid not in self.users:
                    raise AccessError(f"ACL update failed: user '{userid}' does not exist")
            for tokenid in members.get("tokens", []):
                parts = split_tokenid(tokenid)
                if parts is None or parts[1] not in self.users.get(parts[0], {}).get("tokens", {}):
                    user, _, sub = tokenid.partition("!")
                    if user not in self.users:
                        raise AccessError(f"ACL update failed: no such user ('{user}')")
                    raise AccessError(f"ACL update failed: no such token '{sub}' for user '{user}'")
        node = self.acl.setdefault(path, {})
        for role in roles:
            for kind in ("users", "tokens"):
                for ugid in members.get(kind, []):
                    entry = node.setdefault(kind, {}).setdefault(ugid, {})
                    if delete:
                        entry.pop(role, None)
                    else:
                        entry[role] = int(propagate)
        self.save()

    def acl_list(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.acl):
            for kind in ("users", "groups", "tokens"):
                for ugid, roles in sorted(self.acl[path].get(kind, {}).items()):
                    for role, propagate in sorted(roles.items()):
                        out.append(
                            {
                                "path": path,
                                "type": kind[:-1],
                                "ugid": ugid,
                                "roleid": role,
                                "propagate": propagate,
                            }
                        )
        return out

    # --- permission computation -------------------------------------------------------------------
    def _roles(self, authid: str, path: str) -> dict[str, int]:
        """AccessControl.pm roles() for a user or a privilege-separated token (no pools, no groups)."""
        levels = [""] if path == "/" else path.split("/")
        roles: dict[str, int] = {}
        current = ""
        kind = "tokens" if "!" in authid else "users"
        for i, part in enumerate(levels):
            current = "/" if i == 0 else (current.rstrip("/") + "/" + part)
            final = i == len(levels) - 1
            entry = self.acl.get(current, {}).get(kind, {}).get(authid, {})
            new = {role: prop for role, prop in entry.items() if final or prop}
            if new:
                roles = new
        if "NoAccess" in roles:
            return {"NoAccess": roles["NoAccess"]}
        return roles

    def _privs_of_roles(self, roles: dict[str, int]) -> set[str]:
        privs: set[str] = set()
        for role in roles:
            privs |= self.role_privs(role) or frozenset()
        return privs

    def permissions(self, authid: str, path: str) -> set[str]:
        """RPCEnvironment.pm permissions(): the privileges `authid` (user or token id) holds on `path`."""
        if authid == ROOT:
            return set(VALID_PRIVS)
        parts = split_tokenid(authid)
        if parts is not None:
            userid, sub = parts
            token = self.users.get(userid, {}).get("tokens", {}).get(sub)
            if token is None:
                return set()
            user_privs = self.permissions(userid, path)
            if not token.get("privsep", 1):
                return user_privs
            own = self._privs_of_roles(self._roles(authid, path))
            return own if userid == ROOT else own & user_privs
        if authid not in self.users:
            return set()
        return self._privs_of_roles(self._roles(authid, path))

    def paths_of(self, authid: str) -> list[str]:
        """Paths /access/permissions reports: the top-level ones plus every path with an ACL."""
        base = {"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"}
        return sorted(base | set(self.acl))
