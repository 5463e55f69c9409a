"""Envelope v1 encode/decode, MultiFernet rotation, TTL, replay cache, SSE splitting."""

import base64
import json

import pytest
from cryptography.fernet import Fernet
from llm_relay import envelope as env


@pytest.fixture
def keys():
    return [env.generate_key(), env.generate_key()]


def test_request_round_trip(keys):
    f = env.make_fernet(keys)
    req = env.InnerRequest(
        "POST",
        "/v1/chat/completions",
        "a=1",
        {"Content-Type": "application/json"},
        b'{"model":"m"}',
        token="lrt_x",
    )
    sealed = env.seal_request(f, req)
    assert env.open_request(f, sealed) == req
    # The wire payload is exactly the documented JSON shape.
    doc = json.loads(Fernet(keys[0]).decrypt(sealed))
    assert doc == {
        "v": 1,
        "method": "POST",
        "path": "/v1/chat/completions",
        "query": "a=1",
        "headers": {"Content-Type": "application/json"},
        "body": base64.b64encode(b'{"model":"m"}').decode(),
        "token": "lrt_x",
    }


def test_rotation_old_key_still_opens_until_removed(keys):
    old_only = env.make_fernet([keys[1]])
    sealed = env.seal_request(old_only, env.InnerRequest("GET", "/v1/models"))
    rotated = env.make_fernet(keys)  # new key first, old one kept
    assert env.open_request(rotated, sealed).path == "/v1/models"
    with pytest.raises(env.EnvelopeRejected):
        env.open_request(env.make_fernet([keys[0]]), sealed)


def test_ttl_expiry_is_rejected(keys):
    f = Fernet(keys[0])
    old = f.encrypt_at_time(json.dumps({"v": 1, "method": "GET", "path": "/v1/models"}).encode(), 1_000)
    with pytest.raises(env.EnvelopeRejected) as err:
        env.open_request(env.make_fernet(keys), old, ttl=120)
    assert err.value.status == 403


@pytest.mark.parametrize(
    "payload",
    [
        b"[1]",
        b"not json",
        b'{"v": 2, "method": "GET", "path": "/x"}',
        b'{"v": 1, "method": "EVAL", "path": "/x"}',
        b'{"v": 1, "method": "GET", "path": "x"}',
        b'{"v": 1, "method": "GET", "path": "/x", "body": "***"}',
        b'{"v": 1, "method": "GET", "path": "/x", "headers": {"a": 1}}',
        b'{"v": 1, "method": "GET", "path": "/x", "headers": {"a": "b\\r\\nX: y"}}',
        b'{"v": 1, "method": "GET", "path": "/x", "token": 5}',
        b"__import__('os')",
    ],
)
def test_malformed_payloads_are_400(keys, payload):
    f = env.make_fernet(keys)
    with pytest.raises(env.EnvelopeError) as err:
        env.open_request(f, f.encrypt(payload))
    assert err.value.status == 400


def test_garbage_and_truncation(keys):
    f = env.make_fernet(keys)
    sealed = env.seal_request(f, env.InnerRequest("GET", "/v1/models"))
    for bad in (sealed[:-5], b"garbage", b"", sealed[:20]):
        with pytest.raises(env.EnvelopeError):
            env.open_request(f, bad)


def test_response_and_stream_round_trip(keys):
    f = env.make_fernet(keys)
    resp = env.InnerResponse(429, {"Retry-After": "3"}, b'{"error":{}}')
    assert env.open_response(f, env.seal_response(f, resp)) == resp
    events = [b'data: {"a":1}\n\n', b"data: [DONE]\n\n"]
    stream = env.seal_stream_head(f, 200, {"Content-Type": "text/event-stream"}) + b"".join(
        env.seal_stream_event(f, e) for e in events
    )
    splitter = env.SSESplitter()
    tokens = []
    for i in range(0, len(stream), 7):  # arbitrary chunking
        tokens += env.iter_sse_data(splitter, stream[i : i + 7])
    assert env.open_stream_head(f, tokens[0]) == (200, {"Content-Type": "text/event-stream"})
    assert [env.open_stream_event(f, t) for t in tokens[1:]] == events


def test_splitter_line_endings_and_remainder():
    s = env.SSESplitter()
    assert s.feed(b"data: 1\r\n\r\ndata: 2\n\nda") == [b"data: 1\r\n\r\n", b"data: 2\n\n"]
    assert s.feed(b"ta: 3\r\r") == [b"data: 3\r\r"]
    assert s.feed(b"tail") == [] and s.flush() == b"tail"
    with pytest.raises(ValueError):
        env.SSESplitter(max_event=10).feed(b"x" * 11)


def test_replay_cache_window_and_spelling_variants(keys):
    f = env.make_fernet(keys)
    token = f.encrypt_at_time(b"{}", 1000)
    expires = env.replay_expiry(token, 120)
    assert expires == 1000 + 120 + env.FERNET_CLOCK_SKEW  # the token's own date, not when it was seen
    cache = env.ReplayCache(ttl=120)
    assert cache.check_and_add(env.replay_key(token), expires, now=1000)
    assert not cache.check_and_add(env.replay_key(token), expires, now=1001)
    # Fernet's base64 decoding skips stray characters, so this spelling decrypts to the same token: a replay.
    variant = token[:10] + b"!" + token[10:]
    assert f.decrypt(variant) == b"{}"
    assert not cache.check_and_add(env.replay_key(variant), expires, now=1002)
    assert cache.check_and_add(env.replay_key(f.encrypt(b"{}")), expires, now=1003)
    assert not cache.check_and_add(env.replay_key(token), expires, now=expires - 1)
    assert cache.check_and_add(env.replay_key(token), expires, now=expires)  # its date refuses it now
    bounded = env.ReplayCache(ttl=120, max_entries=10)
    for i in range(100):
        bounded.check_and_add(env.replay_key(f.encrypt(str(i).encode())), 5000 + i, now=i / 1000)
    assert len(bounded) <= 10


def test_parse_keys_rejects_bad_lines():
    good = env.generate_key()
    assert env.parse_keys(["# newest first", good, ""]) == [good.encode()]
    with pytest.raises(ValueError, match="line 2"):
        env.parse_keys([good, "not-a-key"])
    with pytest.raises(ValueError):
        env.make_fernet([])
