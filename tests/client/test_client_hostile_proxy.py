"""An on-path proxy of our own that forges and replays: it cannot switch the envelope off or replay it.

`OnPath` sits between the client and the relay (as a TLS-inspecting corporate proxy does) and can answer a
request itself with a plain `401 missing_token` - the forgery that used to make clients fall back to
envelope v1 - and keeps every request body it forwarded, to replay them: to the same relay, to a second
relay with the same keys (another replica), and to the relay after a restart.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from aiohttp import ClientSession, web
from client_harness import ServedApp
from llm_relay import envelope_v2
from llm_relay.client.codec_v2 import EnvelopeRefused
from llm_relay.client.config import Profile
from llm_relay.client.factory import http_client, openai_client

PROMPT = "Quarterly numbers, please."
MODEL = "openai/gpt-4o-mini"


class OnPath:
    """A reverse proxy on 127.0.0.1 in front of `targets` (round robin per request, as the lab edge
    balances replicas); `forge` plain 401s to answer instead of them."""

    def __init__(self, bg, *targets: str) -> None:
        self.targets, self.forge, self.seen = targets, 0, []  # seen: (path, body, status) per request
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.served = ServedApp(bg, app)
        self.url = self.served.url

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.forge:
            self.forge -= 1
            self.seen.append((request.path_qs, body, "forged"))
            error = {"error": {"message": "no client token", "type": "x", "code": "missing_token"}}
            return web.json_response(error, status=401)
        headers = {"Content-Type": request.headers.get("Content-Type", "")}
        target = self.targets[len(self.seen) % len(self.targets)]
        async with (
            ClientSession() as session,
            session.request(request.method, target + request.path_qs, data=body, headers=headers) as answer,
        ):
            raw = await answer.read()
            self.seen.append((request.path_qs, body, answer.status))
            return web.Response(status=answer.status, body=raw, content_type=answer.content_type)


@pytest.fixture
def profile_for(keys):
    def make(url: str) -> Profile:
        return Profile(url=url, token=keys["token"], fernet_key=keys["fernet_key"], proxy="", timeout=20)

    return make


def test_a_forged_plain_401_fails_the_request_and_never_switches_to_v1(bg, relay, profile_for):
    proxy = OnPath(bg, relay.url)
    try:
        client = openai_client(profile_for(proxy.url), max_retries=0)
        proxy.forge = 1
        with pytest.raises(openai.APIConnectionError) as caught:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
        refused = caught.value.__cause__
        assert isinstance(refused, EnvelopeRefused), caught.value
        assert "not sealed (401 missing_token)" in str(refused) and "llm-relay doctor" in str(refused)
        # The same client goes on in v2: the forgery changed nothing (no /envelope, no v1 content type).
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
        assert answer.choices[0].message.content
        assert [path for path, _, _ in proxy.seen] == ["/"] * len(proxy.seen) and len(proxy.seen) >= 2
        assert all(body[:1] == b"\x02" for _, body, _ in proxy.seen)  # every request an envelope v2
    finally:
        proxy.served.stop()


def _inner_status(keys, sealed: bytes, answer: httpx.Response) -> tuple[int, dict]:
    """Open a replayed envelope's answer with the client's key (bound to the envelope's nonce)."""
    assert answer.status_code == 200 and answer.headers["content-type"] == envelope_v2.CONTENT_TYPE
    nonce = sealed[1 + envelope_v2.KID_LEN : 1 + envelope_v2.KID_LEN + envelope_v2.NONCE_LEN]
    opener = envelope_v2.ReplyOpener(envelope_v2.ClientKey(keys["fernet_key"]), nonce)
    parts = opener.feed(answer.content)
    opener.close()
    assert opener.head is not None
    return opener.head[0], json.loads(b"".join(parts))


def test_a_replayed_envelope_is_refused_by_a_second_relay_and_after_a_restart(
    bg, relay_factory, keys, profile_for, upstream
):
    def start():
        return relay_factory([keys["token_line"]], [], client_key_lines=[keys["client_key_line"]])

    first, second = start(), start()  # two replicas: same keys, nothing shared
    proxy = OnPath(bg, first.url)
    try:
        client = openai_client(profile_for(proxy.url), max_retries=0)
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
        assert answer.choices[0].message.content
        accepted = proxy.seen[-1][1]  # the envelope the relay answered (after learning its epoch)
        reached = len(upstream.state.requests)

        def replay(url: str) -> tuple[int, dict]:
            sent = httpx.post(url + "/", content=accepted, headers={"Content-Type": envelope_v2.CONTENT_TYPE})
            return _inner_status(keys, accepted, sent)

        status, doc = replay(first.url)
        assert (status, doc["error"]["code"]) == (403, "envelope_replayed")
        status, doc = replay(second.url)
        assert (status, doc["error"]["code"]) == (409, "envelope_epoch")  # another replica: refused
        first.stop()
        restarted = start()  # the same secrets in a new process: what a restart is
        status, doc = replay(restarted.url)
        assert (status, doc["error"]["code"]) == (409, "envelope_epoch")  # accepted before the restart
        assert len(upstream.state.requests) == reached  # no replay reached the provider
        # The real client still works against the restarted relay: it learns the new epoch and resends.
        again = openai_client(profile_for(restarted.url), max_retries=0)
        assert again.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}]).id
    finally:
        proxy.served.stop()


def test_two_replicas_behind_a_round_robin_balancer_serve_every_request(bg, relay_factory, keys, profile_for):
    """Each envelope is valid at one replica only; the client learns both epochs and picks one at random,
    so strict alternation cannot starve it. Prints the sends per request it took."""

    def start():
        return relay_factory([keys["token_line"]], [], client_key_lines=[keys["client_key_line"]])

    first, second = start(), start()
    balancer = OnPath(bg, first.url, second.url)
    try:
        client = openai_client(profile_for(balancer.url), max_retries=0)
        count = 20
        for n in range(count):
            reply = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"{n}"}]
            )
            assert reply.choices[0].message.content
        statuses = [status for _, _, status in balancer.seen]
        assert statuses == [200] * len(statuses)  # every refusal is sealed: the balancer sees only 200s
        print(f"\n{count} requests over 2 round-robin replicas: {len(statuses)} sends")
        first_log, second_log = first.wait_requests(1), second.wait_requests(1)
        assert first_log and second_log  # both replicas answered requests
    finally:
        balancer.served.stop()


def test_after_both_replicas_restart_their_old_epochs_are_dropped_and_every_request_served(
    bg, relay_factory, keys, profile_for
):
    """A rolling restart leaves the client knowing two dead epochs beside the two new ones; each dead one is
    dropped once refused twice in a row (transport.EPOCH_REFUSALS) instead of being picked for
    EPOCH_FRESH_S, where about 1 request in 100 ran out of sends (the lab's rolling upgrade under load)."""

    def start():
        return relay_factory([keys["token_line"]], [], client_key_lines=[keys["client_key_line"]])

    balancer = OnPath(bg, *(r.url for r in (start(), start())))
    try:
        client = http_client(profile_for(balancer.url))
        codec = client._transport.codec
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
        while len(codec.epochs) < 2:  # both replicas' epochs learnt
            assert client.post(balancer.url + "/v1/chat/completions", json=chat).status_code == 200
        old = set(codec.epochs)
        balancer.targets = (start().url, start().url)  # both restarted: new processes, new epochs
        sends = len(balancer.seen)
        for _ in range(30):
            assert client.post(balancer.url + "/v1/chat/completions", json=chat).status_code == 200
        print(f"\n30 requests after both replicas restarted: {len(balancer.seen) - sends} sends")
        assert not old & set(codec.epochs)  # both dead epochs dropped, long before EPOCH_FRESH_S
        assert len(codec.epochs) == 2
    finally:
        balancer.served.stop()
