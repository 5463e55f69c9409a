"""Which request headers reach the provider (allow-list) and RFC 9110 checks on every forwarded field."""

from __future__ import annotations

import json

import pytest
from llm_relay import envelope as env
from llm_relay.server.errors import RelayError
from llm_relay.server.headers import check_target, upstream_request_headers
from relay_support import CHAT, bearer

FERNET_CT = {"Content-Type": env.CONTENT_TYPE}
# What the edge and proxies add about the client: none of it is the provider's business.
EDGE_HEADERS = {
    "Cf-Access-Jwt-Assertion": "eyJhbGciOi.x.y",
    "Cf-Connecting-Ipv6": "2001:db8::1",
    "Cf-Connecting-Ip": "192.0.2.7",
    "True-Client-IP": "192.0.2.7",
    "Via": "1.1 edge",
    "X-Forwarded-For": "192.0.2.7",
    "Forwarded": "for=192.0.2.7",
    "Cookie": "session=1",
    "X-Api-Key": "sk-client-own-key",
    "X-Made-Up-Later": "1",
}
SDK_HEADERS = {
    "User-Agent": "OpenAI/Python 1.0",
    "Accept": "application/json",
    "OpenAI-Beta": "assistants=v2",
    "anthropic-version": "2023-06-01",
    "X-Stainless-Retry-Count": "0",
    "Idempotency-Key": "abc",
}


def test_allow_list_keeps_sdk_headers_and_drops_the_rest():
    pairs = [*EDGE_HEADERS.items(), *SDK_HEADERS.items(), ("Content-Type", "application/json")]
    out = dict(upstream_request_headers(pairs, envelope=False))
    assert out == {**SDK_HEADERS, "Content-Type": "application/json", "Accept-Encoding": "identity"}


@pytest.mark.parametrize("envelope", [False, True])
def test_connection_named_headers_are_dropped_even_when_allowed(envelope):
    pairs = [("Connection", "close, User-Agent"), ("User-Agent", "x"), ("Accept", "*/*")]
    out = upstream_request_headers(pairs, envelope=envelope)
    assert [p for p in out if p[0] != "Accept-Encoding"] == [("Accept", "*/*")]


@pytest.mark.parametrize("envelope", [False, True])
def test_the_relay_asks_for_identity_encoding_in_both_modes(envelope):
    """It reads the usage from every answer (a gzipped one counted 0 tokens) and seals SSE per event."""
    out = upstream_request_headers([("Accept-Encoding", "gzip, br")], envelope=envelope)
    assert out == [("Accept-Encoding", "identity")]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Transfer-Encoding\t", "chunked"),  # the smuggling shape the security review saw upstream
        ("X-\x01", "1"),
        ("Accept", "a\x01b"),
        ("Accept", "a\x7fb"),
        ("Accept", "a\nb"),
        ("", "x"),
        ("Bad Name", "x"),
        ("X(y)", "x"),
    ],
)
def test_invalid_fields_are_refused_not_forwarded(name, value):
    with pytest.raises(RelayError) as err:
        upstream_request_headers([(name, value)], envelope=True)
    assert err.value.status == 400 and err.value.code == "invalid_header"


def test_tab_and_obs_text_are_valid_values():
    pairs = [("User-Agent", "a\tb"), ("Accept-Language", "caf\xe9")]
    assert upstream_request_headers(pairs, envelope=False) == [*pairs, ("Accept-Encoding", "identity")]


@pytest.mark.parametrize(
    "target",
    ["/api/v1/echo\tHTTP/1.0\tX", "/a b", "/a\x01", "/a\x7f", "/caf\xe9", "/a#frag", "relative", "/a\u2028"],
)
def test_bad_request_targets_are_refused(target):
    with pytest.raises(RelayError) as err:
        check_target(target)
    assert err.value.code == "invalid_path"


def test_good_request_targets_pass():
    for target in ("/v1/chat/completions", "/v1/models?x=%20&y=a|b{c}", "/v1/a:b@c!$&'()*+,;="):
        assert check_target(target) == target


async def test_edge_and_credential_headers_never_reach_the_provider(relay, upstream, http):
    headers = {**bearer(relay.token), **EDGE_HEADERS, **SDK_HEADERS}
    async with http.post(relay.url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
        assert r.status == 200
    seen = {k.lower() for k in upstream.state.requests[-1]["headers"]}
    assert not seen & {k.lower() for k in EDGE_HEADERS}
    assert {k.lower() for k in SDK_HEADERS} <= seen


def _sealed(relay, path: str = "/v1/chat/completions", headers: dict | None = None) -> bytes:
    inner = env.InnerRequest(
        "POST",
        path,
        "",
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(CHAT).encode(),
        token=relay.token,
        epoch=relay.epoch,
    )
    return env.seal_request(relay.fernet, inner)


@pytest.mark.parametrize(
    ("path", "headers", "code"),
    [
        ("/v1/chat/completions", {"Transfer-Encoding\t": "chunked"}, "invalid_header"),
        ("/v1/chat/completions", {"X-\x01": "1"}, "invalid_header"),
        ("/v1/chat/completions", {"Accept": "a\x0bb"}, "invalid_header"),
        ("/v1/chat/completions\tHTTP/1.0\tX", {}, "invalid_path"),
        ("/v1/chat/completions\x7f", {}, "invalid_path"),
    ],
)
async def test_envelope_inner_fields_are_validated_before_the_provider(
    relay, upstream, http, path, headers, code
):
    before = len(upstream.state.requests)
    async with http.post(relay.url + "/envelope", data=_sealed(relay, path, headers), headers=FERNET_CT) as r:
        assert r.status == 200  # sealed answers are 200 outside (issue 15): the real status is inside
        inner = env.open_response(relay.fernet, await r.read())
    assert inner.status == 400 and json.loads(inner.body)["error"]["code"] == code
    assert len(upstream.state.requests) == before  # nothing was sent upstream


def test_coding_agent_headers_declined_beside_the_allow_list_are_not_forwarded():
    """Claude Code's and Codex's own headers: decided one by one in headers.py (DECLINED), dropped."""
    from llm_relay.server.headers import DECLINED, DECLINED_PREFIXES

    sent = [(name, "v") for name in sorted(DECLINED)]
    sent += [("X-Codex-Turn-Metadata", "{}"), ("anthropic-beta", "prompt-caching-2024-07-31")]
    assert all(not n.startswith(DECLINED_PREFIXES) for n in DECLINED)
    out = upstream_request_headers(sent, envelope=True)
    assert out == [("anthropic-beta", "prompt-caching-2024-07-31"), ("Accept-Encoding", "identity")]
