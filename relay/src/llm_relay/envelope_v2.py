"""Envelope v2 (CONTRIBUTING.md, "Relay protocol"): AES-256-GCM, a key per client, replies bound to requests.

Each client holds one 32-byte key (the same urlsafe-base64 text as a Fernet key, so the files and the
client config keep their format). HKDF-SHA256 derives from it, once per process, a key id that tells the
relay whose key to use, a request key and a response key; all the per-message work is one AES-GCM call
from `cryptography` (~1 µs here, against ~24 µs for a Fernet token: relay/docs/performance.md).

Request body (`POST`, `Content-Type: application/octet-stream`):
    0x02 | key id (8) | nonce (12) | AES-GCM(request key, nonce, plaintext, aad = 0x02 | key id)
    plaintext = u32 head length | head JSON | inner body | zero padding
    head = {"ts": unix seconds, "method", "path", "query", "headers", "token", "body_len", "epoch"?}
    (epoch: the relay process the envelope is meant for, learnt from that relay: server/replay.py)
Answer (status 200, the same content type, buffered or streamed): a sequence of frames
    u32 length | nonce (12) | AES-GCM(response key, nonce, plaintext, aad = the request's nonce)
    plaintext = kind (1) | sequence number (u32, from 0) | u32 data length | data | zero padding
    kinds: HEAD (JSON {"status", "headers"}, always first), DATA (raw bytes: the body, or one SSE event),
    END (JSON {}, always last: the terminator). The AAD binds every frame to its request; the sequence
    number and the terminator make a reordered, duplicated, dropped or truncated frame an error.

Padding rounds every plaintext up to a multiple of `pad_to` bytes (DEFAULT_PAD, 0 = off): a streamed
answer is one event per token, and exact event sizes give away token lengths, from which answers have been
reconstructed out of encrypted LLM traffic (Weiss et al., "What Was Your Prompt?", USENIX Security 2024).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from llm_relay.envelope import (
    METHODS,
    EnvelopeError,
    EnvelopeRejected,
    InnerRequest,
    InnerResponse,
    check_epoch,
    check_headers,
    check_path,
    check_query,
)
from llm_relay.tokens import NAME_RE

CONTENT_TYPE = "application/octet-stream"
VERSION = 2
DEFAULT_PAD = 128
MAX_CLOCK_SKEW = 60  # seconds an envelope may be dated ahead of the relay's clock (Fernet allows the same)
KID_LEN, NONCE_LEN, TAG_LEN = 8, 12, 16
_PREFIX = bytes([VERSION])
_U32 = struct.Struct(">I")
_FRAME_HEAD = struct.Struct(">BII")  # kind, sequence number, data length
HEAD, DATA, END = 1, 2, 3
MAX_FRAME = 80 * 1024 * 1024  # a buffered answer is one DATA frame; the relay seals at most 64 MiB


class EnvelopeUnknownKey(EnvelopeRejected):
    code = "envelope_unknown_key"


class ReplyError(EnvelopeError):
    """A sealed answer the client must not use: swapped, tampered, reordered, dropped, duplicated, cut."""

    status = 502
    code = "sealed_reply_invalid"


def _hkdf(secret: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def decode_key(text: str | bytes) -> bytes:
    """The 32 bytes of a key written as urlsafe base64 (Fernet's format); ValueError otherwise."""
    raw = text.encode("ascii") if isinstance(text, str) else text
    try:
        secret = base64.urlsafe_b64decode(raw.strip())
    except (binascii.Error, ValueError):
        raise ValueError("not a key (urlsafe base64 of 32 bytes)") from None
    if len(secret) != 32:
        raise ValueError("not a key (urlsafe base64 of 32 bytes)")
    return secret


class ClientKey:
    """One client's key and what HKDF derives from it. `name` is the client's token name (server side)."""

    __slots__ = ("kid", "name", "request", "response")

    def __init__(self, secret: str | bytes, name: str = "") -> None:
        raw = decode_key(secret)
        self.name = name
        self.kid = _hkdf(raw, b"llm-relay envelope v2 key id", KID_LEN)
        self.request = AESGCM(_hkdf(raw, b"llm-relay envelope v2 request"))
        self.response = AESGCM(_hkdf(raw, b"llm-relay envelope v2 response"))


class KeyTable:
    """The relay's client keys by key id (several per name while a client's key is rotated)."""

    def __init__(self, keys: Iterable[ClientKey]) -> None:
        self.by_kid: dict[bytes, ClientKey] = {}
        for key in keys:
            if key.kid in self.by_kid:
                raise ValueError(f"client key of {key.name!r} is listed twice (or collides)")
            self.by_kid[key.kid] = key

    def __len__(self) -> int:
        return len(self.by_kid)


def parse_client_keys(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(name, key) pairs from `name:key` lines, newest first per name; blanks and `#` comments skipped."""
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, key = text.partition(":")
        if not sep or not NAME_RE.match(name.strip()):
            raise ValueError(f"line {number}: expected `name:key` with a token name")
        try:
            decode_key(key.strip())
        except ValueError:
            # Never echo the line: it holds a key.
            raise ValueError(f"line {number}: not a key (urlsafe base64 of 32 bytes)") from None
        pairs.append((name.strip(), key.strip()))
    return pairs


def _padded(size: int, pad_to: int) -> int:
    return size if pad_to <= 0 else -(-size // pad_to) * pad_to


def _json(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _load(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise EnvelopeError(f"{what} is not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise EnvelopeError(f"{what} must be a JSON object")
    return doc


# --- requests ---


def seal_request(
    key: ClientKey, request: InnerRequest, *, pad_to: int = DEFAULT_PAD, now: float | None = None
) -> tuple[bytes, bytes]:
    """(POST body, nonce): the nonce is what the answer's frames are bound to."""
    head = {
        "ts": int(time.time() if now is None else now),
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": dict(request.headers),
        "token": request.token,
        "body_len": len(request.body),
    }
    if request.epoch:
        head["epoch"] = request.epoch
    head_bytes = _json(head)
    plain = b"".join((_U32.pack(len(head_bytes)), head_bytes, request.body))
    plain += bytes(_padded(len(plain), pad_to) - len(plain))
    nonce = os.urandom(NONCE_LEN)
    prefix = _PREFIX + key.kid
    return prefix + nonce + key.request.encrypt(nonce, plain, prefix), nonce


@dataclass(frozen=True)
class OpenedRequest:
    request: InnerRequest
    timestamp: int
    key: ClientKey
    nonce: bytes


def looks_like_v2(data: bytes) -> bool:
    return len(data) >= 1 + KID_LEN + NONCE_LEN + TAG_LEN and data[0] == VERSION


def open_request(keys: KeyTable, data: bytes) -> OpenedRequest:
    """Decrypt and validate a request. The timestamp is checked by the caller (it owns the clock and TTL)."""
    if not looks_like_v2(data):
        raise EnvelopeError("not an envelope v2 body")
    kid = data[1 : 1 + KID_LEN]
    key = keys.by_kid.get(kid)
    if key is None:
        raise EnvelopeUnknownKey("envelope rejected: unknown key")
    nonce = data[1 + KID_LEN : 1 + KID_LEN + NONCE_LEN]
    try:
        plain = key.request.decrypt(nonce, data[1 + KID_LEN + NONCE_LEN :], data[: 1 + KID_LEN])
    except InvalidTag:
        raise EnvelopeRejected("envelope rejected: wrong key or tampered") from None
    try:
        return OpenedRequest(*_inner_request(plain), key, nonce)
    except EnvelopeError as exc:
        exc.opened_by = (key, nonce)  # the sender holds this key: the relay seals its refusal under it
        raise


def _inner_request(plain: bytes) -> tuple[InnerRequest, int]:
    if len(plain) < 4:
        raise EnvelopeError("envelope payload too short")
    (head_len,) = _U32.unpack_from(plain)
    head = _load(plain[4 : 4 + head_len], "envelope head")
    ts, body_len = head.get("ts"), head.get("body_len")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise EnvelopeError("envelope field 'ts' must be an integer")
    if not isinstance(body_len, int) or not 0 <= body_len <= len(plain) - 4 - head_len:
        raise EnvelopeError("envelope field 'body_len' does not match the payload")
    method, token = head.get("method"), head.get("token")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise EnvelopeError("envelope field 'method' must be an HTTP method")
    if token is not None and not isinstance(token, str):
        raise EnvelopeError("envelope field 'token' must be a string")
    start = 4 + head_len
    request = InnerRequest(
        method=method.upper(),
        path=check_path(head.get("path")),
        query=check_query(head.get("query", "")),
        headers=check_headers(head.get("headers")),
        body=plain[start : start + body_len],
        token=token,
        epoch=check_epoch(head.get("epoch", "")),
    )
    return request, ts


def check_timestamp(timestamp: int, ttl: int, now: float | None = None) -> None:
    """Refuse an envelope older than `ttl` or dated further ahead than MAX_CLOCK_SKEW."""
    now = time.time() if now is None else now
    if timestamp > now + MAX_CLOCK_SKEW or timestamp + ttl < now:
        raise EnvelopeRejected("envelope rejected: expired or dated in the future")


def replay_expiry(timestamp: int, ttl: int) -> float:
    """Until when an accepted envelope must be remembered: past it, its timestamp alone refuses it."""
    return timestamp + ttl + MAX_CLOCK_SKEW


# --- answers ---


class ReplySealer:
    """Seals the frames of one answer under the client's response key, bound to the request's nonce."""

    __slots__ = ("aad", "aead", "pad_to", "seq")

    def __init__(self, key: ClientKey, request_nonce: bytes, pad_to: int = DEFAULT_PAD) -> None:
        self.aead, self.aad, self.pad_to, self.seq = key.response, request_nonce, pad_to, 0

    def frame(self, kind: int, data: bytes) -> bytes:
        plain = _FRAME_HEAD.pack(kind, self.seq, len(data)) + data
        size = _padded(len(plain), self.pad_to)
        if size > len(plain):
            plain += bytes(size - len(plain))
        self.seq += 1
        nonce = os.urandom(NONCE_LEN)
        sealed = self.aead.encrypt(nonce, plain, self.aad)
        return _U32.pack(NONCE_LEN + len(sealed)) + nonce + sealed

    def head(self, status: int, headers: Mapping[str, str]) -> bytes:
        return self.frame(HEAD, _json({"status": status, "headers": dict(headers)}))

    def data(self, chunk: bytes) -> bytes:
        return self.frame(DATA, chunk)

    def end(self) -> bytes:
        return self.frame(END, b"{}")

    def full(self, response: InnerResponse) -> bytes:
        return self.head(response.status, response.headers) + self.data(response.body) + self.end()


class ReplyOpener:
    """The client side: cuts the answer into frames, opens each, and enforces order and the terminator.

    Raises ReplyError naming what went wrong; once it has raised, the answer is unusable.
    """

    def __init__(self, key: ClientKey, request_nonce: bytes) -> None:
        self.aead, self.aad = key.response, request_nonce
        self.expected = 0
        self.ended = False
        self.head: tuple[int, dict[str, str]] | None = None
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The DATA payloads completed by `data`; the HEAD frame is stored in `self.head`."""
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _U32.unpack_from(buf, pos)
            if size > MAX_FRAME or size < NONCE_LEN + TAG_LEN + _FRAME_HEAD.size:
                raise ReplyError("sealed reply is malformed (bad frame length)")
            if len(buf) - pos - 4 < size:
                break
            frame = bytes(buf[pos + 4 : pos + 4 + size])
            pos += 4 + size
            payload = self._open(frame)
            if payload is not None:
                out.append(payload)
        if pos:
            del buf[:pos]
        return out

    def _open(self, frame: bytes) -> bytes | None:
        if self.ended:
            raise ReplyError("sealed reply continues after its terminator")
        try:
            plain = self.aead.decrypt(frame[:NONCE_LEN], frame[NONCE_LEN:], self.aad)
        except InvalidTag:
            raise ReplyError(
                "sealed reply does not belong to this request (swapped, tampered or another key)"
            ) from None
        kind, seq, length = _FRAME_HEAD.unpack_from(plain)
        if seq != self.expected:
            what = "duplicated or replayed" if seq < self.expected else "a frame was dropped"
            raise ReplyError(f"sealed reply out of order: expected frame {self.expected}, got {seq} ({what})")
        self.expected += 1
        data = plain[_FRAME_HEAD.size : _FRAME_HEAD.size + length]
        if (kind == HEAD) != (seq == 0):
            raise ReplyError("sealed reply does not start with its head frame")
        if kind == HEAD:
            doc = _load(data, "sealed reply head")
            status = doc.get("status")
            if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
                raise ReplyError("sealed reply head holds no HTTP status")
            self.head = (status, check_headers(doc.get("headers")))
            return None
        if kind == END:
            self.ended = True
            return None
        if kind != DATA:
            raise ReplyError(f"sealed reply holds an unknown frame kind {kind}")
        return data

    def close(self) -> None:
        """At end of input: raise unless the terminator arrived and nothing trails it."""
        if self._buf:
            raise ReplyError("sealed reply truncated inside a frame")
        if self.head is None:
            raise ReplyError("sealed reply truncated: no head frame")
        if not self.ended:
            raise ReplyError("sealed reply truncated: it ended before its terminator")
