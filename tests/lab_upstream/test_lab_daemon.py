"""Against the running lab daemon (:8790, TLS with the lab CA): a completion and its recorded key."""

from __future__ import annotations

import ssl
import uuid

import openai
import pytest
import requests

from lab.upstream import answers

pytestmark = pytest.mark.lab


def test_completion_and_key_log_through_the_daemon(lab):
    key = lab.upstream.api_keys[1]
    marker = f"daemon check {uuid.uuid4().hex}"
    messages = [{"role": "user", "content": marker}]
    client = openai.OpenAI(
        base_url=f"{lab.upstream.url}/api/v1",
        api_key=key,
        http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(lab.ca_path))),
        max_retries=0,
    )
    result = client.chat.completions.create(model="lab/echo", messages=messages)
    assert result.choices[0].message.content == answers.chat_answer({"messages": messages})[0]
    log = requests.get(f"{lab.upstream.url}/_lab/requests", verify=str(lab.ca_path), timeout=30).json()
    mine = [r for r in log["requests"] if r["path"] == "/api/v1/chat/completions" and r["key"] == key]
    assert mine and mine[-1]["authorized"] is True
