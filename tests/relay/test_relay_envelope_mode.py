"""Envelope v1 through the relay: JSON and streamed round trips, errors, replay, key rotation."""

from __future__ import annotations

import json
import time

from conftest import write_secret
from cryptography.fernet import Fernet
from llm_relay import envelope as env
from relay_support import CHAT

from lab.upstream import answers

FERNET_CT = {"Content-Type": env.CONTENT_TYPE}


def sealed_chat(
    fernet, token: str | None, body: dict, path: str = "/v1/chat/completions", epoch: str = ""
) -> bytes:
    inner = env.InnerRequest(
        "POST", path, "", {"Content-Type": "application/json"}, json.dumps(body).encode(), token, epoch
    )
    return env.seal_request(fernet, inner)


async def test_json_round_trip_with_token_inside(relay, upstream, http):
    f = relay.fernet
    async with http.post(
        relay.url + "/envelope", data=sealed_chat(f, relay.token, CHAT, epoch=relay.epoch), headers=FERNET_CT
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == env.CONTENT_TYPE
        inner = env.open_response(f, await r.read())
    assert inner.status == 200
    doc = json.loads(inner.body)
    assert doc["choices"][0]["message"]["content"] == answers.chat_answer(CHAT)[0]
    assert inner.headers["X-Generation-Id"] == doc["id"]
    seen = upstream.state.requests[-1]
    assert seen["path"] == "/api/v1/chat/completions" and seen["authorized"]
    assert json.loads(relay.log.lines[-1])["envelope"] is True


async def test_stream_round_trip_one_token_per_event(relay, http):
    f = relay.fernet
    body = {**CHAT, "stream": True}
    async with http.post(
        relay.url + "/envelope", data=sealed_chat(f, relay.token, body, epoch=relay.epoch), headers=FERNET_CT
    ) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        raw = await r.read()
    assert b"chat.completion" not in raw  # nothing readable on the wire
    tokens = env.iter_sse_data(env.SSESplitter(), raw)
    status, headers = env.open_stream_head(f, tokens[0])
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [env.open_stream_event(f, t) for t in tokens[1:]]
    assert all(e.endswith(b"\n\n") for e in events)
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == answers.chat_answer(body)[0]


async def test_errors_after_decryption_are_sealed(relay, http):
    f = relay.fernet
    async with http.post(
        relay.url + "/envelope",
        data=sealed_chat(f, "lrt_" + "z" * 43, CHAT, epoch=relay.epoch),
        headers=FERNET_CT,
    ) as r:
        # The outer status is 200 for every sealed answer: the proxy does not see the 401.
        assert r.status == 200 and r.headers["Content-Type"] == env.CONTENT_TYPE
        inner = env.open_response(f, await r.read())
    assert inner.status == 401 and json.loads(inner.body)["error"]["code"] == "invalid_token"
    async with http.post(
        relay.url + "/envelope",
        data=sealed_chat(f, relay.token, CHAT, path="/nope/v1/x", epoch=relay.epoch),
        headers=FERNET_CT,
    ) as r:
        assert r.status == 200
        inner = env.open_response(f, await r.read())
    assert inner.status == 404 and json.loads(inner.body)["error"]["code"] == "unknown_provider"


async def test_outer_header_token_also_authenticates(relay, http):
    data = sealed_chat(relay.fernet, None, CHAT, epoch=relay.epoch)
    async with http.post(
        relay.url + "/envelope", data=data, headers={**FERNET_CT, "X-Relay-Token": relay.token}
    ) as r:
        assert r.status == 200


async def test_bad_expired_and_replayed_envelopes(relay, http):
    f = relay.fernet
    for garbage in (b"", b"garbage", sealed_chat(f, relay.token, CHAT, epoch=relay.epoch)[:-10]):
        async with http.post(relay.url + "/envelope", data=garbage, headers=FERNET_CT) as r:
            assert r.status in (400, 403) and r.headers["Content-Type"] == "application/json"
    wrong = env.make_fernet([env.generate_key()])
    async with http.post(
        relay.url + "/envelope",
        data=sealed_chat(wrong, relay.token, CHAT, epoch=relay.epoch),
        headers=FERNET_CT,
    ) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "envelope_rejected"
    old_doc = {"v": 1, "method": "GET", "path": "/v1/models", "body": "", "token": relay.token}
    expired = Fernet(relay.fernet_keys[0]).encrypt_at_time(
        json.dumps(old_doc).encode(), int(time.time()) - 500
    )
    async with http.post(relay.url + "/envelope", data=expired, headers=FERNET_CT) as r:
        assert r.status == 403
    once = sealed_chat(f, relay.token, CHAT, epoch=relay.epoch)
    async with http.post(relay.url + "/envelope", data=once, headers=FERNET_CT) as r:
        assert r.status == 200
    async with http.post(relay.url + "/envelope", data=once, headers=FERNET_CT) as r:
        replayed = env.open_response(f, await r.read())
    assert replayed.status == 403 and json.loads(replayed.body)["error"]["code"] == "envelope_replayed"
    inner_bad = f.encrypt(b'{"v": 1, "method": "GET", "path": "/v1/models", "body": "!!"}')
    async with http.post(relay.url + "/envelope", data=inner_bad, headers=FERNET_CT) as r:
        # It decrypted: the refusal naming the bad field is sealed, the proxy sees a 200 like any other.
        assert r.status == 200 and r.headers["Content-Type"] == env.CONTENT_TYPE
        refused = env.open_response(f, await r.read())
    assert refused.status == 400 and json.loads(refused.body)["error"]["code"] == "invalid_envelope"
    assert "body" in json.loads(refused.body)["error"]["message"]


async def test_key_rotation_old_key_accepted_until_removed(relay, http):
    old = relay.fernet_keys[0]
    new = env.generate_key()
    old_client = env.make_fernet([old])
    write_secret(relay.dir / "fernet-keys", f"{new}\n{old}\n")
    assert relay.server.reload()
    new_client = env.make_fernet([new])
    async with http.post(
        relay.url + "/envelope",
        data=sealed_chat(old_client, relay.token, CHAT, epoch=relay.epoch),
        headers=FERNET_CT,
    ) as r:
        assert r.status == 200
        # Sealed under the key that opened the request: a client still on the old key reads it.
        sealed = await r.read()
    assert env.open_response(old_client, sealed).status == 200
    async with http.post(
        relay.url + "/envelope",
        data=sealed_chat(old_client, relay.token, {**CHAT, "stream": True}, epoch=relay.epoch),
        headers=FERNET_CT,
    ) as r:
        assert r.status == 200
        events = [line[6:] for line in (await r.read()).split(b"\n") if line.startswith(b"data: ")]
    assert env.open_stream_head(old_client, events[0])[0] == 200
    assert all(env.open_stream_event(old_client, e) for e in events[1:])
    async with http.post(
        relay.url + "/envelope",
        data=sealed_chat(new_client, relay.token, CHAT, epoch=relay.epoch),
        headers=FERNET_CT,
    ) as r:
        sealed = await r.read()
    assert env.open_response(new_client, sealed).status == 200
    write_secret(relay.dir / "fernet-keys", f"{new}\n")
    assert relay.server.reload()
    async with http.post(
        relay.url + "/envelope",
        data=sealed_chat(old_client, relay.token, CHAT, epoch=relay.epoch),
        headers=FERNET_CT,
    ) as r:
        assert r.status == 403


async def test_reload_picks_up_new_tokens_and_rejects_broken_files(relay, http):
    from llm_relay import tokens

    newcomer = tokens.generate_token()
    async with http.get(relay.url + "/v1/models", headers={"X-Relay-Token": newcomer}) as r:
        assert r.status == 401
    path = relay.dir / "client-tokens"
    write_secret(path, path.read_text() + tokens.format_token_line("carol", newcomer) + "\n")
    assert relay.server.reload()
    async with http.get(relay.url + "/v1/models", headers={"X-Relay-Token": newcomer}) as r:
        assert r.status == 200
    write_secret(path, "carol:not-a-hash\n")
    assert not relay.server.reload()  # broken edit: the previous tokens stay active
    async with http.get(relay.url + "/v1/models", headers={"X-Relay-Token": newcomer}) as r:
        assert r.status == 200
    write_secret(path, tokens.format_token_line("carol", newcomer) + "\n")
    path.chmod(0o644)
    assert not relay.server.reload()  # a valid but world-readable secret file is refused
    path.chmod(0o600)
    assert relay.server.reload()
