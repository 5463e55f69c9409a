"""`llm-relay usage`: the client sees its own token totals, plain and encrypted; flags before the command."""

from __future__ import annotations

import json

import pytest
from client_harness import client_toml

from lab.upstream import answers


@pytest.mark.parametrize("encrypt", [False, True])
def test_usage_after_a_question(cli, relay, keys, encrypt):
    cli.write_config(client_toml(relay.url, keys, encrypt=encrypt))
    before = json.loads(cli.run("usage", "--json").stdout)["today_tokens"]
    asked = cli.run("ask", "count my tokens", "--model", "lab/echo")
    assert asked.returncode == 0, asked.stderr
    result = cli.run("usage", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    body = {"messages": [{"role": "user", "content": "count my tokens"}]}
    spent = answers.usage(body, answers.chat_answer(body)[0])["total_tokens"]
    assert report["client"] == "client-tests" and report["today_tokens"] == before + spent
    assert any(
        (row["provider"], row["model"]) == ("openrouter", "lab/echo") and row["completion"] > 0
        for row in report["since_start"]
    )
    text = cli.run("usage")
    assert text.returncode == 0 and "client client-tests:" in text.stdout and "lab/echo" in text.stdout


def test_relay_flags_work_before_the_command(cli, relay, keys):
    cli.write_config(
        'default_profile = "broken"\n[profiles.broken]\nurl = "http://127.0.0.1:1"\n'
        + "[profiles.home]\n"
        + client_toml(relay.url, keys)
    )
    before = cli.run("--profile", "home", "usage", "--json")
    assert before.returncode == 0, before.stderr  # was an argparse error: --profile only after the command
    after = cli.run("usage", "--profile", "home", "--json")
    assert json.loads(after.stdout)["client"] == json.loads(before.stdout)["client"]
    overridden = cli.run("--profile", "broken", "usage", "--profile", "home")
    assert overridden.returncode == 0, overridden.stderr  # the flag nearest the command wins
