"""In envelope mode the access log and the metrics record the inner request: its method, the provider's
status inside the sealed answer (a 429 is counted as 429, not as the envelope's 200). A refusal of an
envelope that decrypted but holds a bad field is sealed too."""

from __future__ import annotations

import asyncio
import json
import os
import time

from llm_relay import envelope as env
from llm_relay import envelope_v2 as v2

CHAT = {"model": "lab/echo", "messages": [{"role": "user", "content": "hello"}]}


def sealed(relay, method: str, path: str, body: bytes = b"") -> tuple[bytes, bytes, v2.ClientKey]:
    key = v2.ClientKey(relay.client_key())
    headers = {"Content-Type": "application/json"} if body else {}
    inner = env.InnerRequest(method, path, "", headers, body, relay.token, relay.epoch)
    data, nonce = v2.seal_request(key, inner)
    return data, nonce, key


async def post(http, relay, data: bytes, nonce: bytes, key: v2.ClientKey) -> tuple[int, dict]:
    async with http.post(relay.url + "/", data=data, headers={"Content-Type": v2.CONTENT_TYPE}) as r:
        assert r.status == 200 and r.headers["Content-Type"] == v2.CONTENT_TYPE  # outside: only 200s
        raw = await r.read()
    opener = v2.ReplyOpener(key, nonce)
    parts = opener.feed(raw)
    opener.close()
    return opener.head[0], json.loads(b"".join(parts) or b"{}")


async def lines(relay, count: int) -> list[dict]:
    for _ in range(100):  # the line is written when the request ends, just after its answer
        entries = [json.loads(x) for x in relay.log.lines]
        found = [e for e in entries if e.get("event") == "request"]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} access lines, got {relay.log.lines}")


async def metrics(http, relay) -> str:
    async with http.get(relay.metrics_url + "/metrics") as r:
        return await r.text()


async def test_envelope_log_and_metrics_carry_inner_method_and_provider_status(relay, upstream, http):
    status, doc = await post(http, relay, *sealed(relay, "GET", "/v1/models"))
    assert status == 200 and doc["data"]
    upstream.state.add_fault({"path": "chat", "status": 429, "retry_after": 2, "times": 1})
    status, doc = await post(
        http, relay, *sealed(relay, "POST", "/v1/chat/completions", json.dumps(CHAT).encode())
    )
    assert status == 429
    models, limited = await lines(relay, 2)
    assert (models["method"], models["path"], models["status"], models["envelope"]) == (
        "GET",
        "/v1/models",
        200,
        True,
    )
    assert (limited["method"], limited["path"], limited["status"]) == ("POST", "/v1/chat/completions", 429)
    text = await metrics(http, relay)
    assert (
        'llm_relay_requests_total{token="alice",provider="openrouter",status="429",method="POST"} 1' in text
    )
    assert 'llm_relay_requests_total{token="alice",provider="openrouter",status="200",method="GET"} 1' in text
    assert 'status="200",method="POST"' not in text  # no envelope counted as what it looks like outside


async def test_a_bad_inner_field_is_refused_sealed(relay, http):
    """Sealed properly under the client's key, but the head names a method no relay accepts: the refusal
    names the field, so it goes out sealed (it used to be a plain 400 the proxy could read)."""
    key = v2.ClientKey(relay.client_key())
    head = json.dumps({"ts": int(time.time()), "method": "BREW", "path": "/", "body_len": 0}).encode()
    plain = len(head).to_bytes(4, "big") + head
    plain += bytes(-len(plain) % 128)
    prefix, nonce = bytes([v2.VERSION]) + key.kid, os.urandom(v2.NONCE_LEN)
    data = prefix + nonce + key.request.encrypt(nonce, plain, prefix)
    status, doc = await post(http, relay, data, nonce, key)
    assert (
        status == 400 and doc["error"]["code"] == "invalid_envelope" and "method" in doc["error"]["message"]
    )
    (line,) = await lines(relay, 1)
    assert line["status"] == 400 and line["envelope"] is True


async def test_a_v1_envelope_that_decrypts_to_no_json_object_is_refused_sealed(relay, http):
    fernet = env.make_fernet(relay.fernet_keys)
    for payload in (b"not json", b"[1, 2]"):
        async with http.post(
            relay.url + "/envelope", data=fernet.encrypt(payload), headers={"Content-Type": env.CONTENT_TYPE}
        ) as r:
            assert r.status == 200 and r.headers["Content-Type"] == env.CONTENT_TYPE
            refused = env.open_response(fernet, await r.read())
        assert refused.status == 400 and json.loads(refused.body)["error"]["code"] == "invalid_envelope"


async def test_a_reload_keeps_the_epoch_and_a_new_process_draws_another(relay):
    from llm_relay.server.state import RelayState

    state = relay.server.relay.state
    reloaded, restarted = RelayState(state.settings, previous=state), RelayState(state.settings)
    try:
        assert reloaded.epoch == state.epoch  # SIGHUP: the same process
        assert restarted.epoch != state.epoch  # what a restart does
    finally:
        restarted.close()
