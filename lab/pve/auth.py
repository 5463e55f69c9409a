"""PVE authentication: tickets (PVEAuthCookie) + CSRFPreventionToken, and API tokens.

Tickets look like PVE's: `PVE:<userid>:<HEXTIME>::<signature>`, valid two hours; the CSRF token is
`<HEXTIME>:<signature over userid>`. The signing key lives in the state dir (0600) so tickets stay
valid across `lab restart`, as they do across a pveproxy restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from lab.pve.access import AccessConfig

TICKET_LIFETIME = 7200
CLUSTER_NAME = "llm-relay-lab"


class AuthError(Exception):
    """HTTP 401 with PVE's reason text."""


@dataclass(frozen=True)
class Identity:
    userid: str
    tokenid: str | None = None  # "root@pam!lab" when authenticated by API token

    @property
    def name(self) -> str:
        return self.tokenid or self.userid


class Authenticator:
    def __init__(self, access: AccessConfig, key_file: Path) -> None:
        self.access = access
        self.key = self._load_key(key_file)

    @staticmethod
    def _load_key(path: Path) -> bytes:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        return path.read_bytes()

    def _sign(self, text: str) -> str:
        digest = hmac.new(self.key, text.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode().rstrip("=")

    def login(self, username: str, password: str, realm: str | None = None) -> dict[str, str]:
        """POST /access/ticket: password (or a still-valid ticket) → new ticket + CSRF token."""
        userid = username if "@" in username or not realm else f"{username}@{realm}"
        if password.startswith("PVE:"):
            ident = self.check_ticket(password)
            if ident.userid != userid:
                raise AuthError("authentication failure")
        elif not self.access.password_ok(userid, password):
            raise AuthError("authentication failure")
        stamp = f"{int(time.time()):08X}"
        plain = f"PVE:{userid}:{stamp}"
        return {
            "username": userid,
            "ticket": f"{plain}::{self._sign(plain)}",
            "CSRFPreventionToken": f"{stamp}:{self._sign(stamp + ':' + userid)}",
            "clustername": CLUSTER_NAME,
        }

    def check_ticket(self, ticket: str) -> Identity:
        plain, sep, sig = ticket.partition("::")
        parts = plain.split(":")
        if not sep or len(parts) != 3 or parts[0] != "PVE" or not hmac.compare_digest(sig, self._sign(plain)):
            raise AuthError("invalid PVE ticket")
        try:
            age = time.time() - int(parts[2], 16)
        except ValueError:
            raise AuthError("invalid PVE ticket") from None
        if age > TICKET_LIFETIME or age < -300:
            raise AuthError("invalid PVE ticket")
        return Identity(parts[1])

    def check_csrf(self, ident: Identity, token: str | None) -> None:
        stamp, _, sig = (token or "").partition(":")
        ok = bool(token) and hmac.compare_digest(sig, self._sign(stamp + ":" + ident.userid))
        if ok:
            try:
                ok = time.time() - int(stamp, 16) <= TICKET_LIFETIME
            except ValueError:
                ok = False
        if not ok:
            raise AuthError("Permission denied - invalid csrf token")

    def check_token(self, header: str) -> Identity:
        """`PVEAPIToken=USER@REALM!TOKENID=SECRET` (also accepts ':' before the secret, like PVE)."""
        value = header.removeprefix("PVEAPIToken=")
        for sep in ("=", ":"):
            tokenid, found, secret = value.partition(sep)
            if found and "!" in tokenid:
                break
        else:
            raise AuthError("invalid token value!")
        problem = self.access.token_problem(tokenid, secret)
        if problem:
            raise AuthError(problem)
        return Identity(tokenid.split("!", 1)[0], tokenid)
