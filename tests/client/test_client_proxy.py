"""A real corporate proxy (squid on loopback) between the CLI and the relay.

squid strips `Authorization` (what breaks the original client) and logs the full URL and every request
header it receives; a TCP tap between squid and the relay records every byte that crossed the proxy in
both directions. Together they show what an inspecting proxy learns in each mode.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from client_harness import Squid, Tap, client_toml, keygen, self_signed

from lab.upstream import answers

PROMPT = "Confidential: the Q3 merger with Globex closes on Friday."
PROXY_USER, PROXY_PASSWORD = "alice", "p@ss:w/rd 1"


@pytest.fixture
def tap(bg, relay):
    tapped = Tap(bg, relay.port)
    yield tapped
    tapped.stop()


@pytest.fixture
def squid(squid_server):
    squid_server.new_capture()  # one proxy for the module, one capture per test
    return squid_server


@pytest.fixture
def squid_auth():
    proxy = Squid(PROXY_USER, PROXY_PASSWORD)
    yield proxy
    proxy.stop()


def expected(prompt: str) -> str:
    return answers.chat_answer({"messages": [{"role": "user", "content": prompt}]})[0]


def test_proxy_strips_authorization_so_bearer_fails_and_path_token_works(cli, keys, tap, squid):
    cli.write_config(client_toml(tap.url, keys, encrypt=False, token_channel="bearer", proxy=squid.url))
    stripped = cli.run("ask", PROMPT)
    assert stripped.returncode == 1
    assert "the relay rejected the client token (missing_token" in stripped.stderr
    assert f"Bearer {keys['token']}".encode() not in tap.sent  # squid removed the header on its way

    cli.write_config(client_toml(tap.url, keys, encrypt=False, token_channel="path", proxy=squid.url))
    result = cli.run("ask", PROMPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected(PROMPT) + "\n"
    log = squid.access_log()
    # Positive control for the capture: in plain mode the proxy sees the prompt and the token.
    assert f"/t/{keys['token']}/v1/chat/completions" in log
    assert PROMPT.encode() in tap.sent


def heads(raw: bytes, marker: bytes) -> list[list[str]]:
    """Every HTTP message head in a recorded byte stream (first line, then header lines)."""
    found = []
    for part in raw.split(marker)[1:]:
        head = (marker + part).split(b"\r\n\r\n", 1)[0].decode("latin-1")
        found.append(head.split("\r\n"))
    return found


def test_what_the_proxy_sees_in_envelope_mode(cli, keys, relay, tap, squid, upstream, bg):
    """The measurement behind relay/docs/client.md's "What the corporate proxy sees": squid's own log
    (URL, request and reply headers) plus every byte that crossed it, over buffered, streamed, embedding
    and failing requests. Claims: only 200s, one content type, no header naming the tool, nothing readable."""
    cli.write_config(client_toml(tap.url, keys, encrypt=True, proxy=squid.url))
    results = [cli.run("ask", PROMPT), cli.run("ask", "--stream", PROMPT), cli.run("embed", PROMPT)]
    for result in results:
        assert result.returncode == 0, result.stderr
    assert results[0].stdout == results[1].stdout == expected(PROMPT) + "\n"

    async def arm() -> None:  # an answer the relay itself refuses with 401, then a provider error
        upstream.state.add_fault({"path": "/chat/completions", "status": 401, "times": 1})

    bg.run(arm())
    failing = cli.run("ask", PROMPT)
    assert failing.returncode == 1 and "(401" in failing.stderr  # the client does see the real status
    cli.write_config(client_toml(tap.url, keys | {"token": keygen("stranger")["token"]}, proxy=squid.url))
    stranger = cli.run("ask", "--stream", PROMPT)
    assert stranger.returncode == 1 and "invalid_token" in stranger.stderr

    log = squid.access_log()
    requests, replies = heads(bytes(tap.sent), b"POST "), heads(bytes(tap.received), b"HTTP/1.1 ")
    # Each of the four runs with a valid token is a new process: it first learns the relay's epoch (a
    # sealed 409, server/replay.py), then sends its request; the stranger is refused before that.
    assert len(requests) == len(replies) == 9 and log.count("POST http://127.0.0.1:") == 9
    assert all(r[0].startswith("POST / HTTP/1.1") for r in requests)  # no API path, not even /envelope
    assert {r[0] for r in replies} == {"HTTP/1.1 200 OK"}  # 401s inside: outside, only 200s
    assert " 200 headers=" in log and not any(f" {s} headers=" in log for s in (401, 403, 429, 500, 502))
    fields = [line.split(":", 1) for head in requests + replies for line in head[1:]]
    types = {v.strip() for k, v in fields if k.lower() == "content-type"}
    assert types == {"application/octet-stream"}  # requests, buffered and streamed answers alike
    values = " ".join(v for _, v in fields).lower() + log.lower()
    for word in ("llm-relay", "fernet", "event-stream", "openai", "python"):
        assert word not in values, f"{word!r} in a header the proxy sees"
    assert not any(k.lower() in ("server", "user-agent", "x-relay-token") for k, _ in fields)
    crossed = bytes(tap.sent) + bytes(tap.received) + log.encode()
    answer, vector = expected(PROMPT), str(answers.embedding(PROMPT)[0])
    for secret in (PROMPT, "Globex", answer, vector, keys["token"], keys["fernet_key"], "lab/echo", "/v1/"):
        assert secret.encode() not in crossed, f"{secret!r} crossed the proxy"
    for needle in (b"openai/", b"gpt-4o", b"chat.completion", b"x-stainless", b"embedding"):
        assert needle not in crossed.lower()


def test_older_relay_is_refused_unless_the_config_asks_for_v1(cli, keys, older_relay, bg, squid):
    """A relay without this client's v2 key answers v2 plainly (401 missing_token): exactly what a forging
    proxy sends, so the client fails and says how to check; it speaks v1 only when its config says so."""
    older = Tap(bg, older_relay.port)
    try:
        cli.write_config(client_toml(older.url, keys, proxy=squid.url))
        refused = cli.run("ask", "--stream", PROMPT)
        assert refused.returncode == 1 and "was not sealed (401 missing_token)" in refused.stderr
        assert "Not falling back to envelope v1" in refused.stderr and "llm-relay doctor" in refused.stderr
        assert b"POST / HTTP/1.1" in older.sent and b"/envelope" not in older.sent
        doctor = cli.run("doctor")
        assert doctor.returncode == 1, doctor.stdout
        line = next(x for x in doctor.stdout.splitlines() if "] envelope" in x)
        assert line.startswith("[FAIL]") and "plain answer (401 missing_token" in line, line
        cli.write_config(client_toml(older.url, keys, proxy=squid.url, envelope="v1"))
        chosen = cli.run("ask", "--stream", PROMPT)
        assert chosen.returncode == 0, chosen.stderr
        assert chosen.stdout == expected(PROMPT) + "\n" and b"POST /envelope HTTP/1.1" in older.sent
        doctor = cli.run("doctor")
        line = next(x for x in doctor.stdout.splitlines() if "] envelope" in x)
        assert line.startswith("[warn]") and "envelope v1 (envelope = v1 in the configuration)" in line
    finally:
        older.stop()


def test_doctor_reports_envelope_v2(cli, keys, relay):
    cli.write_config(client_toml(relay.url, keys, proxy=""))
    doctor = cli.run("doctor")
    assert doctor.returncode == 0, doctor.stdout
    assert "[ ok ] envelope    envelope v2 (the default" in doctor.stdout


def test_proxy_demanding_credentials(cli, keys, tap, squid_auth):
    cli.write_config(client_toml(tap.url, keys, encrypt=True, proxy=squid_auth.url))
    refused = cli.run("ask", PROMPT)
    assert refused.returncode == 1 and "proxy requires authentication (407)" in refused.stderr

    with_creds = f"http://{PROXY_USER}:{quote(PROXY_PASSWORD, safe='')}@127.0.0.1:{squid_auth.port}"
    # Credentials from the standard variable (no `proxy` key in the file), as many users set them.
    cli.write_config(client_toml(tap.url, keys, encrypt=True))
    result = cli.run("ask", "--stream", PROMPT, env={"HTTP_PROXY": with_creds})
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected(PROMPT) + "\n"
    log = squid_auth.access_log()
    assert " 407 headers=" in log and " 200 headers=" in log  # refused without, admitted with credentials
    assert b"Proxy-Authorization" not in tap.sent  # squid consumed the proxy credentials
    assert PROMPT.encode() not in tap.sent and keys["token"].encode() not in tap.sent


def test_https_relay_through_connect_with_a_private_ca(cli, bg, relay, keys, squid, tmp_path):
    """An HTTPS relay (TLS-terminating front) through squid's CONNECT: the proxy sees only the tunnel."""
    context, cert = self_signed(tmp_path)
    front = Tap(bg, relay.port, ssl_context=context)
    try:
        url = f"https://localhost:{front.port}"
        cli.write_config(client_toml(url, keys, encrypt=False, token_channel="bearer", proxy=squid.url))
        untrusted = cli.run("ask", PROMPT)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr

        toml = client_toml(
            url, keys, encrypt=False, token_channel="bearer", proxy=squid.url, ca_bundle=str(cert)
        )
        cli.write_config(toml)
        result = cli.run("ask", "--stream", PROMPT)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected(PROMPT) + "\n"
        doctor = cli.run("doctor")
        assert doctor.returncode == 0, doctor.stdout
        assert "[ ok ] tls" in doctor.stdout and "CONNECT allowed" in doctor.stdout
        log = squid.access_log()
        assert f"CONNECT localhost:{front.port}" in log
        for secret in (PROMPT, keys["token"], "/v1/"):
            assert secret not in log
    finally:
        front.stop()
