"""Envelope v1 (CONTRIBUTING.md, "Relay protocol"): Fernet-sealed requests and responses.

Shared by the server and the client CLI. Everything inside a Fernet token is UTF-8 JSON parsed with
`json.loads` and validated field by field; nothing is ever evaluated.

Request:   POST, Content-Type `application/vnd.llm-relay.fernet`, body = Fernet token of
           {"v": 1, "method", "path", "query", "headers", "body": base64, "token"?}.
Response:  Fernet token of {"status", "headers", "body": base64} (same content type), or, when the inner
           answer is `text/event-stream`, an SSE stream whose events are `data: <fernet token>`: the first
           decrypts to {"status", "headers"}, each next one to the raw bytes of one upstream SSE event.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

CONTENT_TYPE = "application/vnd.llm-relay.fernet"
VERSION = 1
DEFAULT_TTL = 120
FERNET_CLOCK_SKEW = 60  # cryptography.fernet accepts tokens dated this far ahead
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_SSE_DATA_PREFIX = b"data: "
# Characters an inner request may not carry where they would break or smuggle into the HTTP head.
_BAD_NAME = re.compile(r"[\r\n:\0 ]")
_BAD_VALUE = re.compile(r"[\r\n\0]")
_BAD_PATH = re.compile(r"[ \r\n\0?#]")
_BAD_QUERY = re.compile(r"[ \r\n\0#]")
_EPOCH = re.compile(r"[0-9a-f]{32}")


class EnvelopeError(ValueError):
    """An envelope that cannot be used. `status` is the HTTP status the server answers with.

    `opened_by` is set when the envelope decrypted and only its content is wrong: the key that opened it
    (v1) or (key, nonce) (v2), so the relay answers sealed and the proxy does not learn which field."""

    status = 400
    code = "invalid_envelope"
    opened_by: object = None


class EnvelopeRejected(EnvelopeError):
    """Wrong key, tampered, expired or replayed token: 403."""

    status = 403
    code = "envelope_rejected"


class EnvelopeReplayed(EnvelopeRejected):
    code = "envelope_replayed"


def parse_keys(lines: Iterable[str]) -> list[bytes]:
    """Fernet keys from text lines (newest first); blank lines and `#` comments skipped, each key checked."""
    keys: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            Fernet(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise ValueError(f"line {number}: not a Fernet key (urlsafe base64 of 32 bytes)") from None
        keys.append(text.encode("ascii"))
    return keys


class KeyRing(MultiFernet):
    """MultiFernet (newest key first) that can also tell which key opened a token.

    The relay answers an envelope under the key that opened it: during a rotation the relay already holds
    the new key first, while clients that still hold only the previous one must be able to read the answer.
    """

    def __init__(self, fernets: Sequence[Fernet], owners: Sequence[str | None] = ()) -> None:
        super().__init__(fernets)
        self.fernets = tuple(fernets)
        # A client's own key (envelope v2's key, also a Fernet key) opens only that client's v1 envelopes.
        self._owners = {id(f): o for f, o in zip(self.fernets, owners, strict=False)}

    def owner(self, key: Fernet | MultiFernet) -> str | None:
        """The client name a key belongs to; None for the shared keys of the fernet-keys file."""
        return self._owners.get(id(key))

    def decrypt_keyed(self, token: bytes, ttl: int | None = None) -> tuple[bytes, Fernet]:
        for key in self.fernets:
            try:
                return (key.decrypt(token, ttl=ttl) if ttl else key.decrypt(token)), key
            except InvalidToken:
                continue
        raise InvalidToken


def make_fernet(keys: Sequence[str | bytes], client_keys: Sequence[tuple[str, str | bytes]] = ()) -> KeyRing:
    """KeyRing over `keys` (newest first: encrypts with the first, decrypts with any), then each client's
    own key, which opens only that client's envelopes."""
    every = [*keys, *(k for _, k in client_keys)]
    if not every:
        raise ValueError("at least one Fernet key is required")
    owners = [None] * len(keys) + [name for name, _ in client_keys]
    return KeyRing([Fernet(k if isinstance(k, bytes) else k.encode("ascii")) for k in every], owners)


def fernet_timestamp(token: bytes) -> int:
    """The creation time a Fernet token carries (bytes 1-8, big endian); 0 when it has none."""
    try:
        raw = base64.urlsafe_b64decode(token.strip())
    except (binascii.Error, ValueError):
        return 0
    return int.from_bytes(raw[1:9], "big") if len(raw) > 9 else 0


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


@dataclass(frozen=True)
class InnerRequest:
    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    token: str | None = None
    # The relay process the envelope is meant for (server/replay.py): "" until the client has learnt it.
    epoch: str = ""


@dataclass(frozen=True)
class InnerResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError(f"envelope field {what!r} must be a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise EnvelopeError(f"envelope field {what!r} is not valid base64") from None


def check_headers(value: object) -> dict[str, str]:
    """An envelope's `headers` field: an object of strings that cannot break an HTTP head."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise EnvelopeError("envelope field 'headers' must be an object of strings")
    for k, v in value.items():
        if not k or _BAD_NAME.search(k) or _BAD_VALUE.search(v):
            raise EnvelopeError("envelope field 'headers' holds an invalid header")
    return dict(value)


def check_epoch(value: object) -> str:
    """The relay-process epoch an envelope names: "" or 32 lowercase hex digits (server/replay.py)."""
    if value == "" or (isinstance(value, str) and _EPOCH.fullmatch(value)):
        return value  # type: ignore[return-value]
    raise EnvelopeError("envelope field 'epoch' must be 32 hex digits")


def check_path(path: object) -> str:
    if not isinstance(path, str) or not path.startswith("/") or _BAD_PATH.search(path):
        raise EnvelopeError("envelope field 'path' must be an absolute path without query")
    return path


def check_query(query: object) -> str:
    if not isinstance(query, str) or _BAD_QUERY.search(query):
        raise EnvelopeError("envelope field 'query' must be a string")
    return query.removeprefix("?")


def _decrypt(fernet: MultiFernet, data: bytes, ttl: int | None) -> dict:
    return _decrypt_keyed(fernet, data, ttl)[0]


def _decrypt_keyed(fernet: MultiFernet, data: bytes, ttl: int | None) -> tuple[dict, Fernet | MultiFernet]:
    """The JSON document and the key that opened it (the whole MultiFernet when it cannot tell)."""
    try:
        if isinstance(fernet, KeyRing):
            plain, key = fernet.decrypt_keyed(data, ttl)
        else:
            plain, key = (fernet.decrypt(data, ttl=ttl) if ttl else fernet.decrypt(data)), fernet
    except InvalidToken:
        # One message for wrong key, tampering and expiry: do not tell an attacker which.
        raise EnvelopeRejected("envelope rejected: wrong key, tampered or expired") from None
    except (TypeError, ValueError):
        raise EnvelopeError("envelope is not a Fernet token") from None
    try:
        doc = json.loads(plain)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        doc = None
    if not isinstance(doc, dict):
        error = EnvelopeError("envelope payload must be a JSON object (UTF-8)")
        error.opened_by = key  # it decrypted: the sender holds the key (the relay seals its refusal)
        raise error
    return doc, key


def _encrypt(fernet: MultiFernet, doc: dict) -> bytes:
    return fernet.encrypt(json.dumps(doc, separators=(",", ":")).encode("utf-8"))


def seal_request(fernet: MultiFernet, request: InnerRequest) -> bytes:
    """The POST body carrying `request`."""
    doc = {
        "v": VERSION,
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": dict(request.headers),
        "body": _b64(request.body),
    }
    if request.token is not None:
        doc["token"] = request.token
    if request.epoch:
        doc["epoch"] = request.epoch
    return _encrypt(fernet, doc)


def open_request(fernet: MultiFernet, data: bytes, ttl: int | None = DEFAULT_TTL) -> InnerRequest:
    """Decrypt and validate a request envelope. Raises EnvelopeError (400) or EnvelopeRejected (403)."""
    return open_request_keyed(fernet, data, ttl)[0]


def open_request_keyed(
    fernet: MultiFernet, data: bytes, ttl: int | None = DEFAULT_TTL
) -> tuple[InnerRequest, Fernet | MultiFernet]:
    """`open_request`, plus the key that opened the envelope: the one to seal the answer with."""
    doc, key = _decrypt_keyed(fernet, data.strip(), ttl)
    try:
        return _inner_request(doc), key
    except EnvelopeError as exc:
        exc.opened_by = key  # the sender holds this key: the relay seals its refusal under it
        raise


def _inner_request(doc: dict) -> InnerRequest:
    if doc.get("v") != VERSION:
        raise EnvelopeError("unsupported envelope version (expected v=1)")
    method = doc.get("method")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise EnvelopeError("envelope field 'method' must be an HTTP method")
    path, query = check_path(doc.get("path")), check_query(doc.get("query", ""))
    token = doc.get("token")
    if token is not None and not isinstance(token, str):
        raise EnvelopeError("envelope field 'token' must be a string")
    epoch = check_epoch(doc.get("epoch", ""))
    request = InnerRequest(
        method=method.upper(),
        path=path,
        query=query,
        headers=check_headers(doc.get("headers")),
        body=_unb64(doc.get("body", ""), "body"),
        token=token,
        epoch=epoch,
    )
    return request


def seal_response(fernet: MultiFernet, response: InnerResponse) -> bytes:
    return _encrypt(
        fernet, {"status": response.status, "headers": dict(response.headers), "body": _b64(response.body)}
    )


def _status(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 100 <= value <= 599:
        raise EnvelopeError("envelope field 'status' must be an HTTP status code")
    return value


def open_response(fernet: MultiFernet, data: bytes, ttl: int | None = None) -> InnerResponse:
    doc = _decrypt(fernet, data.strip(), ttl)
    return InnerResponse(
        _status(doc.get("status")), check_headers(doc.get("headers")), _unb64(doc.get("body"), "body")
    )


def sse_event(token: bytes) -> bytes:
    """One SSE event carrying a Fernet token."""
    return _SSE_DATA_PREFIX + token + b"\n\n"


def seal_stream_head(fernet: MultiFernet, status: int, headers: Mapping[str, str]) -> bytes:
    """First SSE event of an encrypted stream: the inner status and headers."""
    return sse_event(_encrypt(fernet, {"status": status, "headers": dict(headers)}))


def seal_stream_event(fernet: MultiFernet, raw_event: bytes) -> bytes:
    """An SSE event carrying one upstream SSE event (raw bytes, blank line included)."""
    return sse_event(fernet.encrypt(raw_event))


def open_stream_head(fernet: MultiFernet, token: bytes, ttl: int | None = None) -> tuple[int, dict[str, str]]:
    doc = _decrypt(fernet, token, ttl)
    return _status(doc.get("status")), check_headers(doc.get("headers"))


def open_stream_event(fernet: MultiFernet, token: bytes, ttl: int | None = None) -> bytes:
    try:
        return fernet.decrypt(token, ttl=ttl) if ttl else fernet.decrypt(token)
    except InvalidToken:
        raise EnvelopeRejected("stream event rejected: wrong key, tampered or expired") from None


class SSESplitter:
    """Cuts a byte stream into complete SSE events, each including its terminating blank line.

    Events end at the first empty line; lines end with CRLF, LF or CR (the SSE spec allows all three).
    """

    def __init__(self, max_event: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._max_event = max_event

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        events: list[bytes] = []
        start = 0
        buf = self._buf
        while True:
            end = _event_end(buf, start)
            if end < 0:
                break
            events.append(bytes(buf[start:end]))
            start = end
        if start:
            del buf[:start]
        if len(buf) > self._max_event:
            raise ValueError("SSE event exceeds the size limit")
        return events

    def flush(self) -> bytes:
        """Whatever trails the last complete event (an unterminated event at end of stream)."""
        rest, self._buf = bytes(self._buf), bytearray()
        return rest


def _event_end(buf: bytearray, start: int) -> int:
    """Index just past the blank line ending the first event at `start`, or -1."""
    best = -1
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        i = buf.find(sep, start)
        if i >= 0 and (best < 0 or i + len(sep) < best):
            best = i + len(sep)
    # "\r\n\n" or "\n\r\n" are line-end mixes; rare enough that the three separators above cover real
    # producers (OpenAI, OpenRouter and our lab emit "\n\n").
    return best


def iter_sse_data(splitter: SSESplitter, chunk: bytes) -> list[bytes]:
    """The `data:` payloads of the complete events in `chunk` (client side of an encrypted stream)."""
    out: list[bytes] = []
    for event in splitter.feed(chunk):
        for line in event.splitlines():
            if line.startswith(b"data:"):
                out.append(line[5:].strip())
    return out


class ReplayCache:
    """Envelopes already accepted, each remembered until its own timestamp can refuse it.

    An entry lives until the envelope's timestamp + TTL + the allowed clock skew (wall clock, the clock the
    timestamps use): an envelope dated ahead of the relay's clock stays acceptable by its timestamp for
    longer than TTL after it was first seen, so its entry must too. Only envelopes that authenticated
    (decrypted, and their token is the key owner's) are added, so forged traffic cannot fill the cache.
    Expiry is a heap pop; memory is bounded by `max_entries` (when full, the entry nearest its expiry goes).
    """

    def __init__(self, ttl: int = DEFAULT_TTL, max_entries: int = 1_000_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: dict[bytes, float] = {}
        self._expiries: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, key: bytes, expires: float, now: float | None = None) -> bool:
        """Record `key` until `expires` (unix time); return False when it is already recorded (a replay)."""
        now = time.time() if now is None else now
        seen, heap = self._seen, self._expiries
        while heap and (heap[0][0] <= now or len(seen) >= self.max_entries):
            _, old = heapq.heappop(heap)
            seen.pop(old, None)
        if key in seen:
            return False
        seen[key] = expires
        heapq.heappush(heap, (expires, key))
        return True


def replay_key(token: bytes) -> bytes:
    """A v1 token's identity: its decoded 32-byte HMAC (immune to base64 spelling variants)."""
    try:
        return base64.urlsafe_b64decode(token.strip())[-32:]
    except (binascii.Error, ValueError):
        return token.strip()


def replay_expiry(token: bytes, ttl: int) -> float:
    """Until when a v1 token must be remembered: Fernet accepts tokens dated up to 60 s ahead."""
    return fernet_timestamp(token) + ttl + FERNET_CLOCK_SKEW
