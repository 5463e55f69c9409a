"""Cloudflare Access in front of the relay: the client sends its service token on every path, never shows
it, and tells an Access refusal at the edge from the relay's own refusal.

`AccessEdge` stands in for Cloudflare on loopback, in front of the real relay: a request with the expected
`CF-Access-Client-Id`/`-Secret` goes on (those headers removed, an assertion added, as the lab edge does),
anything else gets the lab edge's own refusal (lab/edge/access_gate.py: 403 page, 401, or 302 to the
team's login). Every answer carries `Server: cloudflare` and a `CF-RAY`, the relay's own answers too (as
behind the real Cloudflare), so the client cannot tell them apart by those headers alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import subprocess

import httpx
import openai
import pytest
from aiohttp import ClientSession, web
from client_harness import ServedApp, Squid, client_toml, keygen
from llm_relay.client.config import ConfigError, Profile, load_profile
from llm_relay.client.factory import async_openai_client, openai_client
from llm_relay.client.transport import RelayCodec

from lab.edge.access_gate import ASSERTION, CLIENT_ID, CLIENT_SECRET, STRIPPED, AccessGate

ACCESS_ID = "5f0c2e7d1b9a4c3e8d6f.access"
ACCESS_SECRET = secrets.token_hex(32)  # what Cloudflare issues: 64 hex characters
AUD = "4f1e2d3c4b5a69788796a5b4c3d2e1f04f1e2d3c4b5a69788796a5b4c3d2e1f0"
PROMPT = "Say hello."
_NOT_FORWARDED = STRIPPED | {"host", "content-length", "transfer-encoding", "connection"}
_NOT_RETURNED = {"content-length", "transfer-encoding", "content-encoding", "connection", "server", "date"}


class AccessEdge:
    """Cloudflare Access (a Service Auth application) in front of `relay_url`, on 127.0.0.1."""

    def __init__(self, bg, relay_url: str) -> None:
        self.relay_url = relay_url
        self.refuse_with = "403"  # or "401" (service_auth_401_redirect), "302" (an identity policy too)
        self.relay_denies = False  # answer as a relay verifying assertions does when it finds none
        self.seen: list[tuple[str, str, str]] = []  # (path, client id, client secret) per request
        self.gate = AccessGate(None, "team.client-tests.invalid")  # refusals need no signing key
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.served = ServedApp(bg, app)
        self.url = self.served.url

    async def handle(self, request: web.Request) -> web.StreamResponse:
        client_id, secret = request.headers.get(CLIENT_ID, ""), request.headers.get(CLIENT_SECRET, "")
        self.seen.append((request.path, client_id, secret))
        ray = f"{len(self.seen):016x}-LAB"
        cloudflare = {"Server": "cloudflare", "CF-RAY": ray}
        if (client_id, secret) != (ACCESS_ID, ACCESS_SECRET):
            app = {"aud": AUD, "service_auth_401_redirect": self.refuse_with == "401"}
            policies = [{"decision": "allow" if self.refuse_with == "302" else "non_identity"}]
            return self.gate.refusal(request, app, policies, request.host.rpartition(":")[0], ray)
        if self.relay_denies and request.path != "/healthz":
            error = {
                "message": "no Cf-Access-Jwt-Assertion",
                "type": "access_denied",
                "code": "missing_assertion",
            }
            return web.json_response({"error": error}, status=403, headers=cloudflare)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        headers[ASSERTION] = "stand-in.assertion.signature"
        async with (
            ClientSession() as session,
            session.request(
                request.method, self.relay_url + request.raw_path, data=await request.read(), headers=headers
            ) as answer,
        ):
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_RETURNED}
        return web.Response(status=answer.status, body=body, headers={**kept, **cloudflare})

    def requests_since(self, count: int) -> list[tuple[str, str, str]]:
        return self.seen[count:]


@pytest.fixture(scope="module")
def edge(bg, relay):
    stand_in = AccessEdge(bg, relay.url)
    yield stand_in
    stand_in.served.stop()


@pytest.fixture
def fresh_edge(edge):
    edge.refuse_with, edge.relay_denies = "403", False
    return edge


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "relay.access-secret"
    path.write_text(ACCESS_SECRET + "\n")
    path.chmod(0o600)
    return path


def with_access(secret_file, **extra: object) -> dict[str, object]:
    return {"access_client_id": ACCESS_ID, "access_client_secret_file": str(secret_file), **extra}


def all_carry_the_token(seen: list[tuple[str, str, str]]) -> bool:
    return bool(seen) and all((cid, sec) == (ACCESS_ID, ACCESS_SECRET) for _, cid, sec in seen)


# --- configuration -----------------------------------------------------------------------------------


def test_config_reads_the_secret_file_and_keeps_it_out_of_repr(tmp_path, secret_file, keys):
    config = tmp_path / "config.toml"
    config.write_text(client_toml("https://relay.example", keys, **with_access(secret_file)))
    profile = load_profile(config_path=config, env={})
    assert (profile.access_client_id, profile.access_client_secret) == (ACCESS_ID, ACCESS_SECRET)
    assert ACCESS_SECRET not in repr(profile) and ACCESS_ID in repr(profile)
    # Inline like `token`, and the environment over the file (like LLM_RELAY_TOKEN).
    config.write_text(
        client_toml("https://relay.example", keys, access_client_id="a.access", access_client_secret="s1")
    )
    assert load_profile(config_path=config, env={}).access_client_secret == "s1"
    env = {"LLM_RELAY_ACCESS_CLIENT_ID": "b.access", "LLM_RELAY_ACCESS_CLIENT_SECRET": "s2"}
    from_env = load_profile(config_path=config, env=env)
    assert (from_env.access_client_id, from_env.access_client_secret) == ("b.access", "s2")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"access_client_id": ACCESS_ID}, "access_client_id is set but access_client_secret is not"),
        ({"access_client_secret": ACCESS_SECRET}, "access_client_secret is set but access_client_id is not"),
        (
            {"access_client_id": ACCESS_ID, "access_client_secret": ACCESS_SECRET + " x"},
            "access_client_secret must",
        ),
        ({"access_client_id": "with space", "access_client_secret": ACCESS_SECRET}, "access_client_id must"),
    ],
)
def test_config_refuses_half_a_service_token_naming_the_key(tmp_path, keys, extra, named):
    config = tmp_path / "config.toml"
    config.write_text(client_toml("https://relay.example", keys, **extra))
    with pytest.raises(ConfigError) as caught:
        load_profile(config_path=config, env={})
    assert named in str(caught.value) and ACCESS_SECRET not in str(caught.value)


def test_a_missing_secret_file_is_named(tmp_path, keys, cli):
    cli.write_config(client_toml("https://relay.example", keys, **with_access(tmp_path / "absent")))
    result = cli.run("ask", PROMPT)
    assert result.returncode == 2 and "access_client_secret_file" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_service_token_never_goes_inside_an_envelope(keys):
    profile = Profile(url="http://relay.example", token=keys["token"], fernet_key=keys["fernet_key"])
    request = httpx.Request(
        "POST",
        "http://relay.example/v1/chat/completions",
        headers={CLIENT_ID: ACCESS_ID, CLIENT_SECRET: ACCESS_SECRET},
    )
    inner = RelayCodec(profile).inner_request(request, b"{}")
    assert not {k.lower() for k in inner.headers} & STRIPPED


# --- every path sends it ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("ask", "--no-encrypt", PROMPT), ("ask", "--encrypt", PROMPT), ("ask", "--encrypt", "--stream", PROMPT),
     ("usage",), ("doctor",)],
    ids=["ask-plain", "ask-encrypt", "ask-stream", "usage", "doctor"],
)  # fmt: skip
def test_every_command_sends_the_service_token_and_never_prints_it(cli, fresh_edge, keys, secret_file, args):
    cli.write_config(client_toml(fresh_edge.url, keys, **with_access(secret_file)))
    before = len(fresh_edge.seen)
    result = cli.run(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all_carry_the_token(fresh_edge.requests_since(before))
    assert ACCESS_SECRET not in result.stdout + result.stderr
    if args[0] == "doctor":
        assert f"access         {ACCESS_ID}, secret " in result.stdout  # the effective config, masked
        assert "[ ok ] access" in result.stdout


@pytest.mark.parametrize("encrypt", [False, True])
def test_serve_local_sends_the_service_token(cli, fresh_edge, keys, secret_file, encrypt):
    cli.write_config(client_toml(fresh_edge.url, keys, **with_access(secret_file)))
    base_url, proc = _serve_local(cli, encrypt)
    try:
        before = len(fresh_edge.seen)
        client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0)
        reply = client.chat.completions.create(
            model="lab/echo", messages=[{"role": "user", "content": PROMPT}]
        )
        assert reply.choices[0].message.content
        assert all_carry_the_token(fresh_edge.requests_since(before))
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert ACCESS_SECRET not in out + err


def test_library_clients_send_it_and_debug_logs_never_show_it(fresh_edge, keys, caplog):
    profile = Profile(
        url=fresh_edge.url,
        token=keys["token"],
        fernet_key=keys["fernet_key"],
        proxy="",
        timeout=20,
        access_client_id=ACCESS_ID,
        access_client_secret=ACCESS_SECRET,
    )
    before = len(fresh_edge.seen)
    with caplog.at_level(logging.DEBUG):  # openai, httpx and httpcore log requests at DEBUG
        for encrypt in (True, False):
            client = openai_client(profile, encrypt=encrypt, max_retries=0)
            assert client.chat.completions.create(
                model="lab/echo", messages=[{"role": "user", "content": PROMPT}]
            ).id

        async def asynchronous() -> str:
            async_client = async_openai_client(profile, max_retries=0)
            answer = await async_client.chat.completions.create(
                model="lab/echo", messages=[{"role": "user", "content": PROMPT}]
            )
            await async_client.close()
            return answer.id

        assert asyncio.run(asynchronous())
    assert all_carry_the_token(fresh_edge.requests_since(before))
    assert caplog.records and ACCESS_SECRET not in caplog.text


# --- refusals: the edge's, told apart from the relay's ------------------------------------------------


@pytest.mark.parametrize(
    ("encrypt", "refuse_with"), [(False, "403"), (True, "403"), (False, "401"), (True, "401"), (False, "302")]
)
def test_ask_without_a_service_token_says_access_refused_in_one_line(
    cli, fresh_edge, keys, encrypt, refuse_with
):
    fresh_edge.refuse_with = refuse_with
    cli.write_config(client_toml(fresh_edge.url, keys, encrypt=encrypt))
    result = cli.run("ask", PROMPT)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Cloudflare Access refused the request before it reached the relay" in lines[0]
    assert "set access_client_id and access_client_secret_file" in lines[0]


def test_ask_with_a_refused_service_token_says_it_was_sent(cli, fresh_edge, keys, tmp_path):
    wrong = tmp_path / "wrong-secret"
    wrong.write_text(secrets.token_hex(32))
    wrong.chmod(0o600)
    cli.write_config(client_toml(fresh_edge.url, keys, **with_access(wrong)))
    result = cli.run("ask", PROMPT)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "although this profile sent its service token" in result.stderr
    assert "strips the CF-Access-Client-Id/-Secret headers" in result.stderr
    assert wrong.read_text() not in result.stderr


@pytest.mark.parametrize("encrypt", [False, True])
def test_serve_local_answers_an_access_refusal_as_an_api_error(cli, fresh_edge, keys, encrypt):
    cli.write_config(client_toml(fresh_edge.url, keys))
    base_url, proc = _serve_local(cli, encrypt)
    try:
        client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(model="lab/echo", messages=[{"role": "user", "content": PROMPT}])
        assert caught.value.code == "access_refused"
        assert "Cloudflare Access refused" in caught.value.message
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "serve-local: Cloudflare Access refused the request" in err and "Traceback" not in err


def doctor(cli, toml: str) -> tuple[int, dict[str, dict], str]:
    cli.write_config(toml)
    result = cli.run("doctor", "--json")
    report = json.loads(result.stdout)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert len(failed) <= 1, failed
    text = cli.run("doctor").stdout  # the human report says the same
    return result.returncode, {c["name"]: c for c in report["checks"]}, text


def test_doctor_without_a_service_token_says_configure_one(cli, fresh_edge, keys):
    code, checks, text = doctor(cli, client_toml(fresh_edge.url, keys))
    assert code == 1 and checks["access"]["code"] == "access_token_missing"
    assert "never reached the relay" in checks["access"]["detail"]
    assert "set access_client_id and access_client_secret_file" in checks["access"]["hint"]
    assert "healthz" not in checks  # not "relay unhealthy": the relay never saw it
    assert "[FAIL] access" in text and "(none: no Cloudflare Access service token)" in text


def test_doctor_with_a_refused_token_and_no_proxy_blames_the_token(cli, fresh_edge, keys, tmp_path):
    wrong = tmp_path / "wrong-secret"
    wrong.write_text(secrets.token_hex(32))
    wrong.chmod(0o600)
    code, checks, text = doctor(cli, client_toml(fresh_edge.url, keys, **with_access(wrong)))
    assert code == 1 and checks["access"]["code"] == "access_token_refused"
    assert "no proxy is configured" in checks["access"]["hint"]
    assert wrong.read_text() not in text


@pytest.fixture(scope="module")
def stripping_proxy():
    proxy = Squid(strip_headers=("CF-Access-Client-Id", "CF-Access-Client-Secret"))
    yield proxy
    proxy.stop()


def test_doctor_names_a_proxy_that_strips_the_access_headers(
    cli, fresh_edge, keys, secret_file, stripping_proxy
):
    toml = client_toml(fresh_edge.url, keys, **with_access(secret_file, proxy=stripping_proxy.url))
    stripping_proxy.new_capture()
    code, checks, text = doctor(cli, toml)
    assert code == 1 and checks["access"]["code"] == "access_headers_stripped", checks["access"]
    assert "the proxy strips the CF-Access-Client-Id/-Secret headers" in checks["access"]["detail"]
    assert ACCESS_SECRET not in text
    # squid got the headers from the client and did not pass them on (its capture shows what it received).
    assert ACCESS_ID in stripping_proxy.access_log()
    # ask through the same proxy: one line, naming the possibility.
    result = cli.run("ask", PROMPT)
    assert result.returncode == 1 and "a proxy on the way strips" in result.stderr


def test_doctor_tells_the_relays_refusals_from_the_edges(cli, fresh_edge, keys, secret_file):
    stranger = keys | {"token": keygen("stranger")["token"]}  # well-formed, unknown to the relay
    code, checks, _ = doctor(
        cli, client_toml(fresh_edge.url, stranger, encrypt=False, **with_access(secret_file))
    )
    assert code == 1 and checks["access"]["status"] == "ok"
    assert (checks["auth"]["code"], "relay rejected the token" in checks["auth"]["detail"]) == (
        "token_rejected",
        True,
    )

    fresh_edge.relay_denies = True  # the relay verifies Access assertions and found none
    code, checks, _ = doctor(cli, client_toml(fresh_edge.url, keys, **with_access(secret_file)))
    assert code == 1 and checks["envelope"]["code"] == "relay_access_denied"
    assert "the relay refused the request" in checks["envelope"]["detail"]


def _serve_local(cli, encrypt: bool) -> tuple[str, subprocess.Popen]:
    proc = cli.popen("serve-local", "--port", "0", "--encrypt" if encrypt else "--no-encrypt")
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
    if not match:
        proc.kill()
        raise AssertionError(f"serve-local did not start: {line!r} {proc.stderr.read()}")
    return f"http://127.0.0.1:{match.group(1)}/v1", proc
