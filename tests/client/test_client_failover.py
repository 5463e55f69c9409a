"""Failover between endpoints (`failover = [...]` in a profile): the CLI, serve-local and the library move to
the next endpoint on a connection failure, timeout, 5xx or 429 before the first byte of the answer, never
after it; a failed endpoint is skipped for `failover_cooldown` seconds; logs name who answered."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

import openai
import pytest
from aiohttp import web
from client_harness import ServedApp
from llm_relay.client import ConfigError, async_openai_client, http_client, load_profile, openai_client
from llm_relay.client import failover as failover_module
from llm_relay.client.failover import endpoint_path

from lab.upstream import answers

MESSAGES = [{"role": "user", "content": "Which river flows through Niamey?"}]
EXPECTED = answers.chat_answer({"messages": MESSAGES})[0]
DIRECT_KEY = "sk-direct-provider-test-key-0123456789"
FAKE_ANSWER = "answered by the fake provider"


@pytest.fixture(autouse=True)
def fresh_cooldowns(monkeypatch):
    """Cooldowns are process-wide: each test starts with none."""
    monkeypatch.setattr(failover_module, "COOLDOWNS", failover_module.Cooldowns())


@pytest.fixture(scope="module")
def stopped_relay(relay_factory, keys):
    """A relay that ran and was stopped: its port refuses connections (the homelab is down)."""
    server = relay_factory([keys["token_line"]], [], client_key_lines=[keys["client_key_line"]])
    server.stop()
    return server


def _completion(text: str) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake/model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


def _chunk(text: str) -> bytes:
    doc = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake/model",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


class FakeProvider:
    """An OpenAI-compatible provider on loopback that records what it receives and answers per `mode`:
    "answer", an HTTP status (503, 429), "hang" (no answer head for 3 s), "head-only" (a stream head, then
    the connection closes before any body byte), "break" (one stream event, then the connection closes)."""

    def __init__(self, bg, mode: str | int) -> None:
        self.mode, self.seen = mode, []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.served = ServedApp(bg, app)
        self.url = self.served.url

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if request.method == "GET" and self.mode == "answer":  # doctor's probe of a direct endpoint
            return web.json_response({"object": "list", "data": [{"id": "fake/model", "object": "model"}]})
        if isinstance(self.mode, int):
            return web.json_response({"error": {"message": "busy", "code": self.mode}}, status=self.mode)
        if self.mode == "hang":
            await asyncio.sleep(3)
        if self.mode == "answer" and not json.loads(body).get("stream"):
            return web.json_response(_completion(FAKE_ANSWER))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.mode in ("head-only", "break"):
            if self.mode == "break":
                await response.write(_chunk("first words"))
                await asyncio.sleep(0.3)  # the client has delivered them to its caller by now
            request.transport.close()
            return response
        for word in FAKE_ANSWER.split():
            await response.write(_chunk(word + " "))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@pytest.fixture
def providers(bg):
    started: list[FakeProvider] = []

    def start(mode: str | int) -> FakeProvider:
        started.append(FakeProvider(bg, mode))
        return started[-1]

    yield start
    for provider in started:
        provider.served.stop()


def _relay_table(name: str, url: str, keys: dict[str, str], **extra: object) -> str:
    lines = [f"[profiles.{name}]", f'url = "{url}"', f'token = "{keys["token"]}"']
    lines.append(f'fernet_key = "{keys["fernet_key"]}"')
    return "\n".join(lines + [f"{k} = {json.dumps(v)}" for k, v in extra.items()]) + "\n"


def _direct_table(name: str, url: str, kind: str = "openai", **extra: object) -> str:
    lines = [f"[profiles.{name}]", f'url = "{url}"', f"kind = {json.dumps(kind)}", f'token = "{DIRECT_KEY}"']
    return "\n".join(lines + [f"{k} = {json.dumps(v)}" for k, v in extra.items()]) + "\n"


def _chain_config(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text('default_profile = "home"\n' + text)
    path.chmod(0o600)
    return path


def _library_profile(tmp_path, text: str):
    return load_profile(config_path=_chain_config(tmp_path, text), env={})


def _ask(profile) -> str:
    client = openai_client(profile, max_retries=0)
    return client.chat.completions.create(model="fake/model", messages=MESSAGES).choices[0].message.content


# --- the CLI and serve-local, the first relay stopped ---


def test_ask_answers_from_the_second_relay_when_the_first_is_down(cli, relay, stopped_relay, keys):
    cli.write_config(
        'default_profile = "home"\n'
        + _relay_table("home", stopped_relay.url, keys, failover=["backup"], connect_timeout=3)
        + _relay_table("backup", relay.url, keys)
    )
    before = len(relay.settled_requests())
    started = time.monotonic()
    result = cli.run("ask", "-v", MESSAGES[0]["content"])
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 3 + 10  # connect refused at once; well inside connect_timeout
    assert result.stdout == EXPECTED + "\n"
    assert "profile 'home' (127.0.0.1) failed (ConnectError)" in result.stderr
    assert "answered by profile 'backup' (127.0.0.1)" in result.stderr
    for secret in (keys["token"], keys["fernet_key"]):
        assert secret not in result.stderr
    # Encrypted to the second relay with its own epoch: it learnt it (one sealed 409), then answered.
    assert [e["envelope"] for e in relay.wait_requests(before + 2)[before:]] == [True, True]


def test_serve_local_answers_the_openai_sdk_from_the_second_relay(cli, relay, stopped_relay, keys):
    cli.write_config(
        'default_profile = "home"\n'
        + _relay_table("home", stopped_relay.url, keys, failover=["backup"])
        + _relay_table("backup", relay.url, keys)
    )
    proc = cli.popen("serve-local", "--port", "0")
    try:
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", proc.stdout.readline())
        assert match, proc.stderr.read()
        client = openai.OpenAI(base_url=match.group(0), api_key="local", max_retries=0, timeout=30)
        completion = client.chat.completions.create(model="lab/echo", messages=MESSAGES)
        assert completion.choices[0].message.content == EXPECTED
        streamed = client.chat.completions.create(model="lab/echo", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == EXPECTED
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    # The first request found the primary down; the second skipped it (cooling) without a word.
    assert stderr.count("profile 'home' (127.0.0.1) failed (ConnectError)") == 1, stderr
    assert stderr.count("answered by profile 'backup' (127.0.0.1) instead of profile 'home'") == 2
    assert keys["token"] not in stderr


def test_doctor_checks_every_endpoint_of_the_chain(cli, relay, stopped_relay, keys, providers):
    direct = providers("answer")
    cli.write_config(
        'default_profile = "home"\n'
        + _relay_table("home", stopped_relay.url, keys, failover=["backup", "direct"])
        + _relay_table("backup", relay.url, keys)
        + _direct_table("direct", direct.url)
    )
    result = cli.run("doctor", "--json")
    assert result.returncode == 1  # the primary is down: doctor says so even though failover works
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    failed = [c["name"] for c in report["checks"] if c["status"] == "fail"]
    assert len(failed) == 1 and "/" not in failed[0]  # the primary's connection, nothing else
    assert checks[failed[0]]["code"] == "relay_unreachable" or "refused" in checks[failed[0]]["detail"]
    for name in ("backup/healthz", "backup/envelope", "backup/auth", "backup/completion", "direct/provider"):
        assert checks[name]["status"] == "ok", checks[name]
    assert [c["profile"] for c in report["failover"]] == ["backup", "direct"]
    assert direct.seen[0]["headers"]["Authorization"] == f"Bearer {DIRECT_KEY}"
    text = cli.run("doctor")
    assert "failover endpoint 2 of 3: checks named backup/..." in text.stdout
    assert "failover endpoint 3 of 3: checks named direct/..." in text.stdout
    for secret in (keys["token"], keys["fernet_key"], DIRECT_KEY):
        assert secret not in result.stdout + text.stdout + text.stderr


# --- the library, against fake providers (direct `kind = "openai"` endpoints) ---


@pytest.mark.parametrize("status", [503, 500, 429])
def test_status_before_the_answer_moves_to_the_next_endpoint(tmp_path, providers, status, caplog):
    first, second = providers(status), providers("answer")
    profile = _library_profile(
        tmp_path, _direct_table("home", first.url, failover=["spare"]) + _direct_table("spare", second.url)
    )
    with caplog.at_level(logging.INFO, logger="llm_relay.client"):
        assert _ask(profile) == FAKE_ANSWER
    assert len(first.seen) == len(second.seen) == 1
    assert first.seen[0]["body"] == second.seen[0]["body"]  # the same request, replayed
    assert f"profile 'home' (127.0.0.1) failed (HTTP {status})" in caplog.text
    assert "answered by profile 'spare' (127.0.0.1)" in caplog.text
    assert DIRECT_KEY not in caplog.text


def test_the_last_endpoints_error_reaches_the_caller(tmp_path, providers):
    first, second = providers(503), providers(429)
    profile = _library_profile(
        tmp_path, _direct_table("home", first.url, failover=["spare"]) + _direct_table("spare", second.url)
    )
    with pytest.raises(openai.RateLimitError):
        _ask(profile)
    assert len(first.seen) == len(second.seen) == 1


def test_a_relay_down_fails_over_to_a_direct_provider_with_its_own_key(
    tmp_path, stopped_relay, providers, keys
):
    direct = providers("answer")
    profile = _library_profile(
        tmp_path,
        _relay_table("home", stopped_relay.url, keys, failover=["direct"])
        + _direct_table("direct", direct.url),
    )
    assert _ask(profile) == FAKE_ANSWER
    (seen,) = direct.seen
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["Authorization"] == f"Bearer {DIRECT_KEY}"
    # Nothing meant for the relay (its token, the SDK's placeholder key) reaches the provider.
    assert keys["token"] not in json.dumps(seen["headers"]) + seen["body"].decode()
    assert "relay-managed" not in json.dumps(seen["headers"])


@pytest.mark.parametrize(("status", "moves_on"), [(502, True), (401, False)])
def test_an_unsealed_answer_to_an_envelope_moves_on_only_when_5xx(
    tmp_path, relay, providers, keys, status, moves_on
):
    """A proxy's plain 502 for a relay that is down is a failure like any other; a plain 401 may be forged
    (codec_v2.EnvelopeRefused) and reaches the caller, the next endpoint untouched."""
    fake_relay = providers(status)
    profile = _library_profile(
        tmp_path,
        _relay_table("home", fake_relay.url, keys, failover=["backup"])
        + _relay_table("backup", relay.url, keys),
    )
    before = len(relay.settled_requests())
    client = openai_client(profile, max_retries=0)
    if moves_on:
        completion = client.chat.completions.create(model="lab/echo", messages=MESSAGES)
        assert completion.choices[0].message.content == EXPECTED
        assert len(relay.wait_requests(before + 1)) > before
    else:
        with pytest.raises(openai.APIConnectionError) as failure:
            client.chat.completions.create(model="lab/echo", messages=MESSAGES)
        assert "was not sealed" in str(failure.value.__cause__)
        assert len(relay.settled_requests()) == before
    assert len(fake_relay.seen) == 1


def test_a_read_timeout_before_the_head_moves_on(tmp_path, providers):
    first, second = providers("hang"), providers("answer")
    profile = _library_profile(
        tmp_path,
        _direct_table("home", first.url, failover=["spare"], timeout=1) + _direct_table("spare", second.url),
    )
    started = time.monotonic()
    assert _ask(profile) == FAKE_ANSWER
    assert time.monotonic() - started < 2.5  # one read timeout (1 s), not the fake's 3 s
    assert len(second.seen) == 1


def test_a_stream_closed_before_its_first_byte_moves_on(tmp_path, providers):
    first, second = providers("head-only"), providers("answer")
    profile = _library_profile(
        tmp_path, _direct_table("home", first.url, failover=["spare"]) + _direct_table("spare", second.url)
    )
    client = openai_client(profile, max_retries=0)
    streamed = client.chat.completions.create(model="fake/model", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).strip() == FAKE_ANSWER
    assert len(first.seen) == len(second.seen) == 1


def test_a_stream_that_delivered_its_first_byte_is_never_replayed(tmp_path, providers):
    first, second = providers("break"), providers("answer")
    profile = _library_profile(
        tmp_path, _direct_table("home", first.url, failover=["spare"]) + _direct_table("spare", second.url)
    )
    client = openai_client(profile, max_retries=0)
    received = []
    with pytest.raises(Exception) as failure:  # the HTTP library's error for a cut stream
        for chunk in client.chat.completions.create(model="fake/model", messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["first words"]
    assert "RemoteProtocolError" in type(failure.value).__name__ + repr(failure.value.__cause__)
    assert len(first.seen) == 1
    assert second.seen == []  # the second endpoint saw no request


def test_cooldown_skips_a_failed_endpoint_then_retries_it(tmp_path, providers):
    first, second = providers(503), providers("answer")
    profile = _library_profile(
        tmp_path,
        _direct_table("home", first.url, failover=["spare"], failover_cooldown=1)
        + _direct_table("spare", second.url),
    )
    assert _ask(profile) == FAKE_ANSWER
    assert _ask(profile) == FAKE_ANSWER  # inside the cooldown: "home" is not asked
    assert (len(first.seen), len(second.seen)) == (1, 2)
    time.sleep(1.2)
    assert _ask(profile) == FAKE_ANSWER  # cooldown over: "home" is asked again (and fails again)
    assert (len(first.seen), len(second.seen)) == (2, 3)


def test_async_client_fails_over(tmp_path, providers):
    first, second = providers(502), providers("answer")
    profile = _library_profile(
        tmp_path, _direct_table("home", first.url, failover=["spare"]) + _direct_table("spare", second.url)
    )

    async def main() -> str:
        client = async_openai_client(profile, max_retries=0)
        completion = await client.chat.completions.create(model="fake/model", messages=MESSAGES)
        await client.close()
        return completion.choices[0].message.content

    assert asyncio.run(main()) == FAKE_ANSWER
    assert len(first.seen) == len(second.seen) == 1


def test_an_anthropic_path_fails_over_to_a_direct_anthropic_endpoint(
    tmp_path, stopped_relay, providers, keys
):
    """What serve-local forwards for ANTHROPIC_BASE_URL=.../anthropic: the provider name is dropped, the
    provider's key travels as x-api-key, the caller's key does not travel at all."""
    direct = providers("answer")
    profile = _library_profile(
        tmp_path,
        _relay_table("home", stopped_relay.url, keys, failover=["claude"], encrypt=False)
        + _direct_table("claude", direct.url, kind="anthropic"),
    )
    with http_client(profile) as client:
        response = client.post(
            profile.root + "/anthropic/v1/messages", json={"model": "m"}, headers={"x-api-key": "local-key"}
        )
    assert response.status_code == 200
    (seen,) = direct.seen
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == DIRECT_KEY
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in seen["headers"]


def test_cooldowns_are_bounded():
    book = failover_module.Cooldowns(limit=4)
    for number in range(10):
        book.fail((f"p{number}", "https://x.example", ""), 60 + number)
    assert book.until(("p9", "https://x.example", "")) > 0  # the newest are kept
    assert book.until(("p0", "https://x.example", "")) == 0.0  # the oldest went first
    assert len(book._until) == 4


def test_endpoint_paths_per_kind(tmp_path):
    profile = _library_profile(
        tmp_path,
        _direct_table("home", "https://relay.example", failover=["claude"])
        + '[profiles.claude]\nurl = "https://api.anthropic.example"\nkind = "anthropic"\ntoken = "k"\n',
    )
    openai_side, anthropic_side = profile, profile.fallbacks[0]
    assert endpoint_path(openai_side, "/v1/chat/completions") == "/v1/chat/completions"
    assert endpoint_path(openai_side, "/anthropic/v1/messages") is None  # skipped, not a failure
    assert endpoint_path(anthropic_side, "/anthropic/v1/messages") == "/v1/messages"
    assert endpoint_path(anthropic_side, "/v1/messages") == "/v1/messages"
    assert endpoint_path(anthropic_side, "/healthz") is None


# --- configuration errors ---

_GOOD = _direct_table("spare", "https://spare.example")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _direct_table("home", "https://a.example", failover=["nope"]) + _GOOD,
            "failover: no profile 'nope'",
        ),
        (_direct_table("home", "https://a.example", failover=["home"]), "names the profile itself"),
        (
            _direct_table("home", "https://a.example", failover=["spare", "spare"]) + _GOOD,
            "names 'spare' twice",
        ),
        (
            _direct_table("home", "https://a.example", failover=["spare"])
            + _direct_table("spare", "https://b.example", failover=["home"]),
            "failover lists do not nest",
        ),
        (
            _direct_table("home", "https://a.example", failover="spare") + _GOOD,
            "'failover' has the wrong type",
        ),
        (_direct_table("home", "https://a.example", failover=[1]) + _GOOD, "'failover' must be a list"),
        (
            _direct_table("home", "https://a.example", failover=["spare"], failover_cooldown=-1) + _GOOD,
            "failover_cooldown must be 0 or a positive",
        ),
        (_direct_table("home", "https://a.example", kind="grpc"), "kind must be one of"),
        (
            _direct_table("home", "https://a.example", fernet_key="x" * 44),
            "cannot open envelopes",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _library_profile(tmp_path, text)


def test_failover_at_the_top_level_is_refused(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('failover = ["spare"]\n' + _GOOD)
    with pytest.raises(ConfigError, match=r"key 'failover' belongs in a \[profiles.NAME\] table"):
        load_profile(config_path=path, env={})


def test_an_endpoint_in_the_chain_is_validated_on_its_own(tmp_path):
    text = (
        _direct_table("home", "https://a.example", failover=["spare"]) + "[profiles.spare]\nkind = 'openai'\n"
    )
    with pytest.raises(ConfigError, match=r"profile 'spare'.*no relay url"):
        _library_profile(tmp_path, text)


def test_environment_and_flags_name_the_primary_only(tmp_path, keys):
    path = _chain_config(tmp_path, _direct_table("home", "https://a.example", failover=["spare"]) + _GOOD)
    env = {"LLM_RELAY_URL": "https://from-env.example", "HTTPS_PROXY": "http://proxy.example:3128"}
    profile = load_profile(config_path=path, env=env, timeout=7)
    assert profile.url == "https://from-env.example" and profile.timeout == 7
    (spare,) = profile.fallbacks
    assert spare.url == "https://spare.example" and spare.timeout != 7
    assert spare.proxy == "http://proxy.example:3128"  # the machine's proxy applies to every endpoint


def test_cli_reports_a_config_error_naming_the_key(cli):
    cli.write_config(
        'default_profile = "home"\n' + _direct_table("home", "https://a.example", failover=["ghost"])
    )
    result = cli.run("ask", "hi")
    assert result.returncode == 2
    assert "failover: no profile 'ghost'" in result.stderr
    assert DIRECT_KEY not in result.stderr
