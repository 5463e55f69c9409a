"""A real corporate proxy (squid on loopback) between the CLI and the relay.

squid strips `Authorization` (what breaks the original client) and logs the full URL and every request
header it receives; a TCP tap between squid and the relay records every byte that crossed the proxy in
both directions. Together they show what an inspecting proxy learns in each mode.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from client_harness import Squid, Tap, client_toml, self_signed

from lab.upstream import answers

PROMPT = "Confidential: the Q3 merger with Globex closes on Friday."
PROXY_USER, PROXY_PASSWORD = "alice", "p@ss:w/rd 1"


@pytest.fixture
def tap(bg, relay):
    tapped = Tap(bg, relay.port)
    yield tapped
    tapped.stop()


@pytest.fixture(scope="module")
def squid_server():
    proxy = Squid()
    yield proxy
    proxy.stop()


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


@pytest.mark.parametrize("command", [["ask"], ["ask", "--stream"], ["embed"]])
def test_envelope_mode_shows_the_proxy_no_prompt_no_token_no_answer(cli, keys, tap, squid, command):
    cli.write_config(client_toml(tap.url, keys, encrypt=True, proxy=squid.url))
    result = cli.run(*command, PROMPT)
    assert result.returncode == 0, result.stderr
    if command[0] == "ask":
        assert result.stdout == expected(PROMPT) + "\n"
        secret_out = expected(PROMPT)
    else:
        secret_out = str(answers.embedding(PROMPT)[0])
    log = squid.access_log()
    assert "POST http://127.0.0.1:" in log and "/envelope" in log  # the proxy did carry the request
    crossed = bytes(tap.sent) + log.encode()
    for secret in (PROMPT, "Globex", keys["token"], keys["fernet_key"], "lab/echo", "openai/"):
        assert secret.encode() not in crossed, f"{secret!r} crossed the proxy"
    assert b"/v1/" not in tap.sent and b"x-stainless" not in tap.sent.lower()  # not even the API used
    assert secret_out.encode() not in tap.received and b"Globex" not in tap.received
    assert len(tap.received) > 100  # the answer did come back through the proxy, sealed


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
