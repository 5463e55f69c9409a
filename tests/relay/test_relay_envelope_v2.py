"""Envelope v2 through the relay: the outer form, replies bound to their request, a key per client, replay."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.fernet import Fernet
from llm_relay import envelope as env
from llm_relay import envelope_v2 as v2
from relay_support import CHAT

from lab.upstream import answers

V2_CT = {"Content-Type": v2.CONTENT_TYPE}
# What a sealed v2 answer may carry outside: framing and caching, nothing that names the tool or the API.
OUTER_HEADERS = {"content-type", "cache-control", "date", "content-length", "transfer-encoding"}


def sealed(
    key: v2.ClientKey,
    token: str | None,
    body: object = CHAT,
    path: str = "/v1/chat/completions",
    epoch: str = "",
    **kw,
):
    inner = env.InnerRequest(
        "POST", path, "", {"Content-Type": "application/json"}, json.dumps(body).encode(), token, epoch
    )
    return v2.seal_request(key, inner, **kw)


async def post(http, relay, data: bytes):
    async with http.post(relay.url + "/", data=data, headers=V2_CT) as r:
        return r.status, r.headers, await r.read()


def opened(key: v2.ClientKey, nonce: bytes, raw: bytes) -> tuple[int, dict, list[bytes]]:
    opener = v2.ReplyOpener(key, nonce)
    parts = opener.feed(raw)
    opener.close()
    assert opener.head is not None
    return opener.head[0], opener.head[1], parts


def frames(raw: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(raw):
        size = int.from_bytes(raw[pos : pos + 4], "big")
        out.append(raw[pos : pos + 4 + size])
        pos += 4 + size
    return out


def check_outer(status: int, headers) -> None:
    assert status == 200
    assert headers["Content-Type"] == v2.CONTENT_TYPE
    assert {h.lower() for h in headers} <= OUTER_HEADERS, dict(headers)
    assert not any("llm-relay" in v.lower() or "fernet" in v.lower() for v in headers.values())


async def test_json_round_trip_looks_like_any_api_call(relay, upstream, http):
    key = v2.ClientKey(relay.client_key())
    body, nonce = sealed(key, relay.token, epoch=relay.epoch)
    status, headers, raw = await post(http, relay, body)
    check_outer(status, headers)
    assert b"chat.completion" not in raw
    inner_status, inner_headers, parts = opened(key, nonce, raw)
    doc = json.loads(b"".join(parts))
    assert inner_status == 200 and doc["choices"][0]["message"]["content"] == answers.chat_answer(CHAT)[0]
    assert inner_headers["X-Generation-Id"] == doc["id"]
    assert upstream.state.requests[-1]["authorized"]
    line = json.loads(relay.log.lines[-1])
    assert line["envelope"] is True and line["token"] == "alice"


async def test_stream_has_the_same_outer_form_and_a_terminator(relay, http):
    key = v2.ClientKey(relay.client_key())
    body, nonce = sealed(key, relay.token, {**CHAT, "stream": True}, epoch=relay.epoch)
    status, headers, raw = await post(http, relay, body)
    check_outer(status, headers)
    assert "event-stream" not in json.dumps(dict(headers))
    inner_status, inner_headers, events = opened(key, nonce, raw)
    assert inner_status == 200 and inner_headers["Content-Type"].startswith("text/event-stream")
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == answers.chat_answer({**CHAT, "stream": True})[0]
    # Padding: every frame is a multiple of the 128-byte bucket plus the fixed framing.
    overhead = 4 + v2.NONCE_LEN + v2.TAG_LEN
    assert all((len(f) - overhead) % v2.DEFAULT_PAD == 0 for f in frames(raw))


async def test_errors_are_sealed_with_outer_200(relay, http):
    key = v2.ClientKey(relay.client_key())
    for token, path, expected, code in (
        ("lrt_" + "z" * 43, "/v1/chat/completions", 401, "invalid_token"),
        (None, "/v1/chat/completions", 401, "missing_token"),
        (relay.token, "/nope/v1/x", 404, "unknown_provider"),
    ):
        body, nonce = sealed(key, token, path=path, epoch=relay.epoch)
        status, headers, raw = await post(http, relay, body)
        check_outer(status, headers)
        inner_status, _, parts = opened(key, nonce, raw)
        assert inner_status == expected and json.loads(b"".join(parts))["error"]["code"] == code


async def test_replies_are_bound_to_their_request(relay, http):
    key = v2.ClientKey(relay.client_key())
    body_a, nonce_a = sealed(key, relay.token, {**CHAT, "stream": True}, epoch=relay.epoch)
    body_b, nonce_b = sealed(key, relay.token, {**CHAT, "stream": True}, epoch=relay.epoch)
    raw_a = (await post(http, relay, body_a))[2]
    await post(http, relay, body_b)
    with pytest.raises(v2.ReplyError, match="does not belong to this request"):
        v2.ReplyOpener(key, nonce_b).feed(raw_a)  # A's answer delivered as B's
    parts = frames(raw_a)
    assert len(parts) >= 5
    cases = {
        "reordered": [parts[0], parts[2], parts[1], *parts[3:]],
        "duplicated": [parts[0], parts[1], parts[1], *parts[2:]],
        "dropped": [parts[0], *parts[2:]],
        "tampered": [parts[0], parts[1][:-1] + bytes([parts[1][-1] ^ 1]), *parts[2:]],
    }
    messages = {
        "reordered": "expected frame 1, got 2",
        "duplicated": "duplicated",
        "dropped": "dropped",
        "tampered": "does not belong",
    }
    for name, shuffled in cases.items():
        with pytest.raises(v2.ReplyError, match=messages[name]):
            v2.ReplyOpener(key, nonce_a).feed(b"".join(shuffled))
    for cut in (parts[:-1], parts[:1], [parts[0], parts[1][:10]]):  # no terminator / no events / mid-frame
        opener = v2.ReplyOpener(key, nonce_a)
        opener.feed(b"".join(cut))
        with pytest.raises(v2.ReplyError, match="truncated"):
            opener.close()
    opener = v2.ReplyOpener(key, nonce_a)
    with pytest.raises(v2.ReplyError, match="after its terminator"):
        opener.feed(raw_a + parts[-1])


async def test_one_clients_key_opens_no_other_clients_traffic(relay, http):
    alice, bob = v2.ClientKey(relay.client_key("alice")), v2.ClientKey(relay.client_key("bob"))
    body, nonce = sealed(bob, relay.other_token, epoch=relay.epoch)
    raw = (await post(http, relay, body))[2]
    assert opened(bob, nonce, raw)[0] == 200
    with pytest.raises(v2.ReplyError):
        v2.ReplyOpener(alice, nonce).feed(raw)  # alice cannot read bob's answer
    with pytest.raises(env.EnvelopeRejected):
        v2.open_request(v2.KeyTable([v2.ClientKey(relay.client_key("alice"), "bob")]), body)
    # bob's key as a v1 Fernet key opens nothing of alice's either, and alice's own key cannot carry bob.
    with pytest.raises(env.EnvelopeRejected):
        env.open_request(
            env.make_fernet([relay.client_key("bob")]),
            env.seal_request(
                env.make_fernet([relay.client_key("alice")]), env.InnerRequest("GET", "/v1/models")
            ),
        )
    body, nonce = sealed(alice, relay.other_token, epoch=relay.epoch)  # alice's key, bob's token
    status, _, raw = await post(http, relay, body)
    inner_status, _, parts = opened(alice, nonce, raw)
    assert status == 200 and inner_status == 403
    assert "different clients" in json.loads(b"".join(parts))["error"]["message"]


async def test_unopenable_envelopes_get_plain_errors_and_never_fill_the_replay_cache(relay, http):
    key = v2.ClientKey(relay.client_key())
    replay = relay.server.relay.state.replay
    before = len(replay)
    stranger = v2.ClientKey(env.generate_key())
    body, _ = sealed(stranger, relay.token, epoch=relay.epoch)
    status, _, raw = await post(http, relay, body)
    assert status == 403 and json.loads(raw)["error"]["code"] == "envelope_unknown_key"
    good, _ = sealed(key, relay.token, epoch=relay.epoch)
    flipped = good[:-1] + bytes([good[-1] ^ 1])
    status, _, raw = await post(http, relay, flipped)
    assert status == 403 and json.loads(raw)["error"]["code"] == "envelope_rejected"
    # Issue 16: an envelope that opens but whose token is wrong is refused before the replay cache.
    for token in ("lrt_" + "z" * 43, None, relay.other_token):
        await post(http, relay, sealed(key, token, epoch=relay.epoch)[0])
    assert len(replay) == before
    await post(http, relay, good)
    assert len(replay) == before + 1


async def test_future_dated_envelope_replayed_after_ttl_is_refused(relay_factory, http, monkeypatch):
    relay = await relay_factory(ttl=10)
    key = v2.ClientKey(relay.client_key())
    ahead = time.time() + 50
    body, nonce = sealed(key, relay.token, now=ahead, epoch=relay.epoch)
    status, _, raw = await post(http, relay, body)
    assert status == 200 and opened(key, nonce, raw)[0] == 200
    v1_body = Fernet(relay.fernet_keys[0]).encrypt_at_time(
        json.dumps(
            {"v": 1, "method": "GET", "path": "/v1/models", "token": relay.token, "epoch": relay.epoch}
        ).encode(),
        int(ahead),
    )
    async with http.post(
        relay.url + "/envelope", data=v1_body, headers={"Content-Type": env.CONTENT_TYPE}
    ) as r:
        assert env.open_response(relay.fernet, await r.read()).status == 200
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 11.5)  # first seen + ttl + 1.5 s
    status, _, raw = await post(http, relay, body)
    inner_status, _, parts = opened(key, nonce, raw)
    assert status == 200 and inner_status == 403
    assert json.loads(b"".join(parts))["error"]["code"] == "envelope_replayed"
    async with http.post(
        relay.url + "/envelope", data=v1_body, headers={"Content-Type": env.CONTENT_TYPE}
    ) as r:
        again = env.open_response(relay.fernet, await r.read())
    assert again.status == 403 and json.loads(again.body)["error"]["code"] == "envelope_replayed"
    monkeypatch.setattr(time, "time", lambda: real() + 200)  # past ts + ttl: the timestamp refuses it
    inner_status, _, parts = opened(key, nonce, (await post(http, relay, body))[2])
    assert inner_status == 403 and "expired" in json.loads(b"".join(parts))["error"]["message"]


async def test_v1_refused_by_default_and_padding_off(relay_factory, http):
    relay = await relay_factory(extra_envelope="# accept_v1 left at its default\npad_to = 0")
    v1_body = env.seal_request(relay.fernet, env.InnerRequest("GET", "/v1/models", token=relay.token))
    async with http.post(
        relay.url + "/envelope", data=v1_body, headers={"Content-Type": env.CONTENT_TYPE}
    ) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "envelope_disabled"
    key = v2.ClientKey(relay.client_key())
    body, nonce = sealed(key, relay.token, pad_to=0, epoch=relay.epoch)
    raw = (await post(http, relay, body))[2]
    assert opened(key, nonce, raw)[0] == 200
    assert frames(raw)[-1] == raw[-(4 + v2.NONCE_LEN + v2.TAG_LEN + 9 + 2) :]  # END frame: 9 + "{}", no pad
