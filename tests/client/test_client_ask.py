"""`llm-relay ask` / `embed` / `keygen` run as a user runs them, against the real relay and fake upstream."""

from __future__ import annotations

import json
import tomllib

import pytest
import yaml
from client_harness import RELAY_NAME, UPSTREAM_KEY, Tap, client_toml, self_signed

from lab.upstream import answers

PROMPT = "What is the capital of Burkina Faso?"


def expected_answer(prompt: str, system: str | None = None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return answers.chat_answer({"messages": messages})[0]


@pytest.mark.parametrize("channel", ["path", "header", "bearer"])
def test_ask_plain_through_each_token_channel(cli, relay, keys, upstream, channel):
    cli.write_config(client_toml(relay.url, keys, encrypt=False, token_channel=channel))
    result = cli.run("ask", PROMPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_answer(PROMPT) + "\n"
    # The relay, not the client, supplied the upstream key.
    assert upstream.state.requests[-1]["key"] == UPSTREAM_KEY


def test_ask_stream_prints_the_answer_as_it_arrives(cli, relay, keys):
    cli.write_config(client_toml(relay.url, keys, encrypt=False))
    result = cli.run("ask", "--stream", "--system", "be brief", PROMPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_answer(PROMPT, "be brief") + "\n"


@pytest.mark.parametrize("stream", [False, True])
def test_ask_encrypted_json_and_stream(cli, relay, keys, stream):
    cli.write_config(client_toml(relay.url, keys, encrypt=True))
    args = ["ask", "--json", PROMPT] + (["--stream"] if stream else [])
    result = cli.run(*args)
    assert result.returncode == 0, result.stderr
    if stream:
        chunks = [json.loads(line) for line in result.stdout.splitlines()]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert len(chunks) > 3  # really streamed, chunk by chunk
    else:
        text = json.loads(result.stdout)["choices"][0]["message"]["content"]
    assert text == expected_answer(PROMPT)


def test_ask_reads_everything_from_environment_without_a_config_file(cli, relay, keys):
    env = {
        "LLM_RELAY_URL": relay.url,
        "LLM_RELAY_TOKEN": keys["token"],
        "LLM_RELAY_FERNET_KEY": keys["fernet_key"],
    }
    result = cli.run("ask", "-", env=env, stdin=PROMPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_answer(PROMPT) + "\n"


@pytest.mark.parametrize("encrypt", [False, True])
def test_embed(cli, relay, keys, encrypt):
    cli.write_config(client_toml(relay.url, keys, encrypt=encrypt))
    result = cli.run("embed", "first text", "second text")
    assert result.returncode == 0, result.stderr
    vectors = [json.loads(line) for line in result.stdout.splitlines()]
    assert vectors == [answers.embedding("first text"), answers.embedding("second text")]


def test_errors_are_explained_not_dumped(cli, relay, keys, upstream, bg):
    cli.write_config(client_toml(relay.url, keys, encrypt=False, model="no/such-model"))
    result = cli.run("ask", PROMPT)
    assert result.returncode == 1
    assert "the relay answered 400" in result.stderr and "not a valid model" in result.stderr
    assert "Traceback" not in result.stderr

    async def arm() -> None:  # the upstream's state belongs to its event loop
        upstream.state.add_fault({"path": "/chat/completions", "status": 401, "times": 1})

    bg.run(arm())
    cli.write_config(client_toml(relay.url, keys, encrypt=True))
    result = cli.run("ask", PROMPT)
    assert result.returncode == 1 and "upstream provider rejected the relay's API key" in result.stderr
    cli.write_config('url = "http://127.0.0.1:1"\ntoken = "not-a-token"\n')
    result = cli.run("ask", PROMPT)
    assert result.returncode == 2 and "configuration error" in result.stderr


def test_keygen_text_output_is_paste_ready_for_both_sides(cli, relay_factory):
    result = cli.run("keygen", "--name", "alice-laptop", "--profile", "home")
    assert result.returncode == 0, result.stderr
    vault_part, client_part = result.stdout.split("[profiles.home]")
    vault = yaml.safe_load(vault_part)  # the role's variables, as the vault holds them
    profile = tomllib.loads("[profiles.home]" + client_part)["profiles"]["home"]
    (entry,) = vault["relay_client_tokens"]
    assert entry["key"] == profile["fernet_key"]  # the client's own key, on both sides
    assert entry["name"] == "alice-laptop" and profile["token"] not in vault_part
    # For a server set up by hand, the exact client-tokens line is printed too (as a comment to copy).
    assert (
        f"# alice-laptop:{entry['sha256']}\n" in vault_part and profile["url"] == "https://relay.example.org"
    )
    # The relay gets what the role renders from the vault; the client exactly the config snippet.
    lines = [f"{entry['name']}:{entry['sha256']}"], [f"{entry['name']}:{entry['key']}"]
    server = relay_factory(lines[0], [], client_key_lines=lines[1])
    client_part = client_part.replace(profile["url"], server.url)  # the snippet, its URL filled in
    cli.write_config('default_profile = "home"\n[profiles.home]' + client_part)
    answer = cli.run("ask", PROMPT)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == expected_answer(PROMPT) + "\n"
    # A new process first learns the relay's epoch (a sealed 409, server/replay.py), then is answered.
    learn, request = server.wait_requests(2)
    assert learn["envelope"] is True and learn["token"] == "alice-laptop"
    assert request["envelope"] is True and request["token"] == "alice-laptop"  # it went sealed
    with_url = cli.run("keygen", "--url", server.url)
    assert f'url = "{server.url}"\n' in with_url.stdout


def test_connect_to_dials_another_address_keeping_the_name_for_tls(cli, bg, relay, keys, tmp_path):
    """`connect_to` (curl's --connect-to): the URL's name stays for Host and TLS, only the dialled address
    changes; the name itself is never resolved (it is under .invalid)."""
    context, cert = self_signed(tmp_path)
    front = Tap(bg, relay.port, ssl_context=context)
    try:
        toml = client_toml(f"https://{RELAY_NAME}", keys, proxy="", ca_bundle=str(cert))
        cli.write_config(toml + f'connect_to = "127.0.0.1:{front.port}"\n')
        result = cli.run("ask", "--stream", PROMPT)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected_answer(PROMPT) + "\n"
        assert f"Host: {RELAY_NAME}".encode() in front.sent
        doctor = cli.run("doctor")
        assert doctor.returncode == 0, doctor.stdout
        assert f"certificate valid for {RELAY_NAME}" in doctor.stdout
    finally:
        front.stop()
