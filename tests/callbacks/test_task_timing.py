"""The collection's task_timing callback, run by ansible-playbook as `bench site` runs it."""

from __future__ import annotations

import json

from ansible_cli import run_ansible

PLAYBOOK = """
- name: Timed play
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Quick task
      ansible.builtin.debug:
        msg: quick
    - name: Slow task
      ansible.builtin.pause:
        seconds: 1
      changed_when: true
      notify: Timed handler
  handlers:
    - name: Timed handler
      ansible.builtin.debug:
        msg: handled
"""


def test_each_task_and_handler_is_timed_in_run_order(tmp_path, monkeypatch):
    book = tmp_path / "timed.yml"
    book.write_text(PLAYBOOK)
    out = tmp_path / "timing.json"
    monkeypatch.setenv("ANSIBLE_CALLBACKS_ENABLED", "llm_relay.homelab.task_timing")
    monkeypatch.setenv("LLM_RELAY_TASK_TIMING_FILE", str(out))
    proc = run_ansible("ansible-playbook", "-i", "localhost,", "-c", "local", str(book))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    timings = json.loads(out.read_text())
    assert [t["task"] for t in timings] == ["Quick task", "Slow task", "Timed handler"]
    assert {t["play"] for t in timings} == {"Timed play"}
    slow = timings[1]["seconds"]
    assert 1.0 <= slow < 30, timings
    assert timings[0]["seconds"] < slow


def test_nothing_is_written_without_an_output_path(tmp_path, monkeypatch):
    book = tmp_path / "timed.yml"
    book.write_text(PLAYBOOK)
    monkeypatch.setenv("ANSIBLE_CALLBACKS_ENABLED", "llm_relay.homelab.task_timing")
    monkeypatch.delenv("LLM_RELAY_TASK_TIMING_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    proc = run_ansible("ansible-playbook", "-i", "localhost,", "-c", "local", str(book))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timed.yml"]
