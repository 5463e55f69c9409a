"""Check an envelope from its first bytes, before the rest of its body is read (issue 25).

An envelope carries its client's token inside, so until it is opened it is unauthenticated; its body is
capped by `max_envelope_body_bytes`, and these gates refuse one that cannot be anyone's as soon as its
first bytes arrive, instead of after the whole body was received and held:
- v2: byte 0 is the version and bytes 1-8 the key id (envelope_v2.py): an unknown key id is refused;
- v1: a Fernet token (base64url) starts with the version byte 0x80 and its 8-byte creation time, so
  the first 12 characters give both: a token that is no Fernet token, or expired, is refused.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable

from llm_relay import envelope, envelope_v2

from .errors import RelayError

Gate = tuple[int, Callable[[bytes], None]]  # (bytes needed, check raising RelayError)


def v2_gate(keys: envelope_v2.KeyTable) -> Gate:
    size = 1 + envelope_v2.KID_LEN

    def check(first: bytes) -> None:
        if first[0] != envelope_v2.VERSION:
            raise RelayError(400, "invalid_envelope", "not an envelope v2 body")
        if first[1:size] not in keys.by_kid:
            err = envelope_v2.EnvelopeUnknownKey("envelope rejected: unknown key")
            raise RelayError(err.status, err.code, str(err))

    return size, check


def v1_gate(ttl: int | None) -> Gate:
    def check(first: bytes) -> None:
        if first[:1].isspace():
            return  # surrounding blanks are allowed (the opener strips them): checked when opened
        try:
            raw = base64.urlsafe_b64decode(first)
        except (binascii.Error, ValueError):
            raw = b""
        if raw[:1] != b"\x80":
            raise RelayError(400, "invalid_envelope", "not an envelope v1 body (no Fernet token)")
        created = int.from_bytes(raw[1:9], "big")
        now = time.time()
        if ttl is not None and (created + ttl < now or created > now + envelope.FERNET_CLOCK_SKEW):
            raise RelayError(403, "envelope_rejected", "envelope rejected: expired or dated in the future")

    return 12, check
