"""Client tokens: generation, SHA-256 hashing and the `name:sha256hex` line format.

The server never stores a token, only its SHA-256 hex digest next to a name (the name is what logs and
metrics show). Tokens are `lrt_` + 43 urlsafe-base64 characters (32 random bytes, no padding).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

TOKEN_PREFIX = "lrt_"  # noqa: S105 - a format prefix, not a secret
TOKEN_RE = re.compile(r"^lrt_[A-Za-z0-9_-]{43}$")
TOKEN_LENGTH = 47
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


class TokenLineError(ValueError):
    """A `name:sha256hex` line that cannot be used."""


def generate_token() -> str:
    """A new random client token (256 bits of entropy)."""
    raw = secrets.token_bytes(32)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def is_well_formed(token: str) -> bool:
    """True when `token` has the exact shape of a client token (cheap pre-check before hashing)."""
    return bool(TOKEN_RE.match(token))


def hash_token(token: str) -> str:
    """SHA-256 hex digest of the token's UTF-8 bytes: what the server stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def format_token_line(name: str, token: str) -> str:
    """The `name:sha256hex` line a server's tokens file holds for `token`."""
    if not NAME_RE.match(name):
        raise TokenLineError(f"invalid token name {name!r}: use 1-64 chars of [A-Za-z0-9._@-]")
    return f"{name}:{hash_token(token)}"


def parse_token_line(line: str) -> tuple[str, str] | None:
    """Parse one tokens-file line into (name, sha256hex); None for blank lines and `#` comments."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    name, sep, digest = text.partition(":")
    digest = digest.strip().lower()
    if not sep or not NAME_RE.match(name.strip()) or not _HEX64_RE.match(digest):
        # Never echo the line: it might be a raw token pasted by mistake.
        raise TokenLineError("expected `name:sha256hex` (64 lowercase hex digits)")
    return name.strip(), digest


def parse_token_lines(text: str) -> dict[str, str]:
    """Parse a whole tokens file into {sha256hex: name}; errors name the line number only."""
    by_hash: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            parsed = parse_token_line(line)
        except TokenLineError as exc:
            raise TokenLineError(f"line {number}: {exc}") from None
        if parsed is None:
            continue
        name, digest = parsed
        if digest in by_hash:
            raise TokenLineError(f"line {number}: duplicate token hash (also used by {by_hash[digest]!r})")
        by_hash[digest] = name
    return by_hash
