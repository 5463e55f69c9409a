"""`llm-relay serve-local` with the official OpenAI and Anthropic SDKs pointed at it, plain and --encrypt,
streamed."""

from __future__ import annotations

import json
import re
import subprocess

import anthropic
import httpx
import openai
import pytest
from client_harness import UPSTREAM_KEY, client_toml

from lab.upstream import answers

PROMPT = "Name three rivers of West Africa."


@pytest.fixture
def serve_local(cli, relay, keys):
    """Start serve-local on an ephemeral port; yields a function(encrypt) -> base URL."""
    procs: list[subprocess.Popen] = []

    def start(encrypt: bool, *extra: str) -> str:
        cli.write_config(client_toml(relay.url, keys))
        proc = cli.popen("serve-local", "--port", "0", "--encrypt" if encrypt else "--no-encrypt", *extra)
        procs.append(proc)
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        assert match, f"serve-local did not announce its address: {line!r} {proc.stderr.read()}"
        return f"http://127.0.0.1:{match.group(1)}/v1"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)
        assert proc.returncode == 0  # SIGTERM is a clean stop


@pytest.mark.parametrize("encrypt", [False, True])
def test_openai_sdk_through_serve_local(serve_local, relay, encrypt):
    base_url = serve_local(encrypt)
    seen_before = len(relay.settled_requests())  # the session relay served earlier tests
    client = openai.OpenAI(base_url=base_url, api_key="anything-local", max_retries=0)
    messages = [{"role": "user", "content": PROMPT}]
    expected = answers.chat_answer({"messages": messages})[0]

    completion = client.chat.completions.create(model="lab/echo", messages=messages)
    assert completion.choices[0].message.content == expected

    pieces = []
    with client.chat.completions.create(model="lab/echo", messages=messages, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) > 3 and "".join(pieces) == expected

    vectors = client.embeddings.create(model="openai/text-embedding-3-small", input=["a", "b"])
    assert [d.embedding for d in vectors.data] == [answers.embedding("a"), answers.embedding("b")]
    assert "lab/echo" in [m.id for m in client.models.list().data]

    # The relay saw these requests in the expected mode (its access log says envelope or not).
    # Encrypted, the serve-local process first learns the relay's epoch (one sealed 409, server/replay.py).
    count = 5 if encrypt else 4
    recent = relay.wait_requests(seen_before + count)[seen_before:]
    assert [e["envelope"] for e in recent] == [encrypt] * count
    assert {e["token"] for e in recent} == {"client-tests"}


def test_serve_local_reports_relay_errors_in_openai_shape(serve_local):
    client = openai.OpenAI(base_url=serve_local(True), api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="not a valid model ID"):
        client.chat.completions.create(model="no/such", messages=[{"role": "user", "content": "hi"}])


def test_serve_local_refuses_non_loopback(cli, relay, keys):
    cli.write_config(client_toml(relay.url, keys))
    result = cli.run("serve-local", "--host", "0.0.0.0", "--port", "0")  # noqa: S104 - must be refused
    assert result.returncode == 2 and "loopback only" in result.stderr


@pytest.mark.parametrize("encrypt", [False, True])
def test_anthropic_sdk_through_serve_local(serve_local, upstream, keys, encrypt):
    base = serve_local(encrypt).removesuffix("/v1") + "/anthropic"  # what ANTHROPIC_BASE_URL would say
    client = anthropic.Anthropic(base_url=base, api_key="sk-ant-placeholder", max_retries=0, timeout=20)
    messages = [{"role": "user", "content": PROMPT}]
    expected = answers.chat_answer({"messages": messages})[0]
    reply = client.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=messages)
    assert reply.content[0].text == expected and reply.stop_reason == "end_turn"
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=256, messages=messages) as stream:
        pieces = list(stream.text_stream)
    assert len(pieces) > 3 and "".join(pieces) == expected
    # The fake Anthropic API saw the provider key in x-api-key, never the client token nor the SDK's key.
    for seen in list(upstream.state.requests)[-2:]:
        assert seen["path"] == "/v1/messages" and seen["key"] == UPSTREAM_KEY
        sent = json.dumps(seen["headers"])
        assert keys["token"] not in sent and "sk-ant-placeholder" not in sent


@pytest.mark.parametrize("encrypt", [False, True])
def test_serve_local_keeps_content_length_and_names_the_relay(serve_local, encrypt):
    base = serve_local(encrypt)
    with httpx.Client(timeout=20) as http:
        models = http.get(base + "/models")
        body = {"model": "lab/echo", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
        with http.stream("POST", base + "/chat/completions", json=body) as stream:
            stream.read()
    assert models.status_code == 200 and models.headers["content-length"] == str(len(models.content))
    assert "transfer-encoding" not in models.headers and models.headers["server"] == "llm-relay"
    assert stream.headers["transfer-encoding"] == "chunked"  # a stream stays a stream
    assert stream.headers.get_list("cache-control") == ["no-cache"]  # once, not once per hop


def test_serve_local_serves_only_its_user(serve_local, relay, tmp_path):
    """DNS rebinding (a foreign Host), a cross-site page (a foreign Origin) and, with --local-key-file, a
    local program without the key: each refused by serve-local itself; none reaches the relay."""
    key_file = tmp_path / "local-key"
    key_file.write_text("local-key-0123456789abcdef\n")
    key_file.chmod(0o600)
    base = serve_local(True, "--allow-origin", "https://tool.example", "--local-key-file", str(key_file))
    port = base.split(":")[2].split("/")[0]
    before = len(relay.settled_requests())
    good = {"Authorization": "Bearer local-key-0123456789abcdef"}
    refusals = [
        ({**good, "Host": "rebind.attacker.example"}, 421, "misdirected_request"),
        ({**good, "Host": f"rebind.attacker.example:{port}"}, 421, "misdirected_request"),
        ({**good, "Origin": "https://evil.example", "Content-Type": "text/plain"}, 403, "origin_not_allowed"),
        ({"Authorization": "Bearer wrong-key-0123456789abcdef"}, 401, "local_key_required"),
        ({}, 401, "local_key_required"),
    ]
    for headers, status, code in refusals:
        answer = httpx.post(base + "/chat/completions", headers=headers, content=b"{}")
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), headers
        usage = httpx.get(base + "/usage", headers=headers)  # the user's own numbers: refused alike
        assert usage.status_code == status
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        answer = httpx.get(base + "/usage", headers={**good, "Host": host})
        assert answer.status_code == 200, answer.text
    allowed = httpx.get(
        base + "/usage", headers={"x-api-key": good["Authorization"][7:], "Origin": "https://tool.example"}
    )
    assert allowed.status_code == 200
    relay.wait_requests(before + 4)  # the 3 admitted, after one epoch round trip of this new process
    assert len(relay.settled_requests()) == before + 4
