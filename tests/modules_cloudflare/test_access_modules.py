"""The cloudflare_access_* modules through `ansible-playbook` against an in-process Cloudflare emulator.

The emulator runs in this process on a loopback port of its own (no lab daemon, no lock), so the tests
can also ask its state what Access would decide for a service token, as the lab edge will.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from lab_cloudflare.access_harness import NO_ACCESS, access_emulator
from lab_cloudflare.harness import ACCOUNT, ADMIN, ZONE

from lab.cloudflare.access import app_admits_token, application_for_host, service_token_for

from .conftest import REPO

pytestmark = pytest.mark.slow  # four ansible-playbook runs: ~60 s on a loaded 2-core machine

PLAYBOOKS = Path(__file__).with_name("playbooks")
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


@pytest.fixture
def cf(tmp_path):
    server = access_emulator(tmp_path / "state.json").start()
    yield SimpleNamespace(
        server=server,
        vars={
            "cf_api_base_url": server.api,
            "cf_account_id": ACCOUNT,
            "hostname": f"relay.{ZONE}",
            "token_name": "relay-client",
            "policy_name": "relay service auth",
            "secret_file": str(tmp_path / "access-token.json"),
            "access_state": "present",
        },
        secret_file=tmp_path / "access-token.json",
    )
    server.stop()


def play(cf, playbook, *flags, expect_rc=0, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", CLOUDFLARE_API_TOKEN=ADMIN)
    cmd = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(PLAYBOOKS / playbook)]
    cmd += ["-e", json.dumps(cf.vars | extra), *flags]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect_rc, output
    states, task = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6 : line.index("]")]
        for status in ("ok", "changed", "skipping", "fatal", "failed"):
            if line.startswith(f"{status}: [localhost]") and task:
                states[task] = "failed" if status == "fatal" else status
    return SimpleNamespace(output=output, tasks=states)


def access_state(cf):
    """(app, policy, token) as the emulator holds them (None when missing)."""
    store = cf.server.state

    def only(kind):
        objects = list(cf.server.call(lambda: list(store.access.get(kind, {}).values())))
        assert len(objects) <= 1, objects
        return objects[0] if objects else None

    return only("apps"), only("policies"), only("service_tokens")


def admitted(cf, client_id, client_secret):
    """Whether the application of the relay hostname admits these service token headers right now."""
    store = cf.server.state

    def decide():
        app = application_for_host(store, cf.vars["hostname"])
        token = service_token_for(store, client_id, client_secret)
        return app is not None and token is not None and app_admits_token(store, app, token)

    return cf.server.call(decide)


PRESENT = ("Service token", "Store the service token secret", "Service auth policy", "Access application")
REMOVALS = ("Access application removed", "Service auth policy removed", "Service token removed")


def item_states(output, task):
    """Per-loop-item results of one task: ["changed", "ok"] for a removal that ran twice."""
    section = output.split(f"TASK [{task}]", 1)[1].split("TASK [", 1)[0]
    return re.findall(r"^(changed|ok): \[localhost\] => \(item=\d+\)", section, re.MULTILINE)


REFUSAL_VARS = {"cf_token_denied": NO_ACCESS, "outside_hostname": "relay.example.com"}
REFUSALS = (
    "Token without Access permission",
    "Hostname outside the account's zones",
    "Policy naming a missing token",
    "Policy still linked to an application",
)


def assert_refusals(played):
    """access_errors.yml: each task passes only when its module failed with the expected error."""
    assert [played.tasks[t] for t in REFUSALS] == ["ok"] * 4
    out = " ".join(played.output.split())  # the YAML callback wraps long messages
    assert "Cloudflare error 10000: Authentication error (HTTP 403" in out
    assert "check api_token" in out
    assert "Cloudflare error 12130: access.api.error.invalid_request: domain does not belong to zone" in out
    assert "check domain, policies or session_duration" in out
    assert "service_tokens: no service token is named (or has the id) ''no-such-token''" in out  # YAML-quoted
    assert "policy is used by 1 application(s)" in out
    assert NO_ACCESS not in out


def test_lifecycle_idempotence_check_diff_rotation_and_removal(cf):
    # 1. First run at -vvv: everything is created; the secret is stored and admitted, and never printed.
    first = play(cf, "access.yml", "-vvv")
    assert [first.tasks[t] for t in PRESENT] == ["changed"] * 4
    stored = json.loads(cf.secret_file.read_text())
    assert oct(cf.secret_file.stat().st_mode & 0o777) == "0o600"
    assert admitted(cf, stored["client_id"], stored["client_secret"])
    assert not admitted(cf, stored["client_id"], "0" * 64)
    assert stored["client_secret"] not in first.output
    app, policy, token = access_state(cf)
    assert (app["domain"], app["type"], app["name"]) == (
        f"relay.{ZONE}",
        "self_hosted",
        f"relay.{ZONE} relay",
    )
    assert app["service_auth_401_redirect"] is True and app["app_launcher_visible"] is False
    assert [link["id"] for link in app["policies"]] == [policy["id"]]
    assert policy["decision"] == "non_identity"
    assert policy["include"] == [{"service_token": {"token_id": token["id"]}}]

    # 2. Re-run in check mode with a new session duration: token and policy are unchanged, the
    #    application's change is reported with its diff and not written; the stored secret stays.
    checked = play(cf, "access.yml", "--check", "--diff", session="8h")
    assert checked.tasks["Service token"] == checked.tasks["Service auth policy"] == "ok"
    assert checked.tasks["Store the service token secret"] == "skipping"  # no secret is returned again
    assert checked.tasks["Access application"] == "changed"
    assert "-    session_duration: 24h" in checked.output
    assert "+    session_duration: 8h" in checked.output
    assert access_state(cf)[0]["session_duration"] == "24h"
    assert json.loads(cf.secret_file.read_text()) == stored

    # 3. Rotation with a grace period (the application, unchanged, is ok): a new secret, stored; the old
    #    one is still admitted until the grace ends. Neither secret is printed at -vvv.
    #    The same run plays access_errors.yml against these objects (one ansible-playbook run less).
    started = datetime.now(UTC).replace(microsecond=0)
    rotated = play(cf, "access.yml", "-vvv", rotate=True, grace=600, refusals=True, **REFUSAL_VARS)
    ended = datetime.now(UTC)
    assert [rotated.tasks[t] for t in PRESENT] == ["changed", "changed", "ok", "ok"]
    assert_refusals(rotated)
    new = json.loads(cf.secret_file.read_text())
    assert new["client_id"] == stored["client_id"] and new["client_secret"] != stored["client_secret"]
    assert admitted(cf, new["client_id"], new["client_secret"])
    assert admitted(cf, stored["client_id"], stored["client_secret"])
    for secret in (stored["client_secret"], new["client_secret"]):
        assert secret not in rotated.output
    grace_end = datetime.fromisoformat(access_state(cf)[2]["previous_client_secret_expires_at"])
    assert started + timedelta(seconds=600) <= grace_end <= ended + timedelta(seconds=600)

    # 4. absent removes all three (application first, so the policy is no longer linked); the second
    #    removal of each changes nothing.
    removed = play(cf, "access.yml", "--diff", access_state="absent", removals=2)
    for task in REMOVALS:
        assert item_states(removed.output, task) == ["changed", "ok"], task
    assert access_state(cf) == (None, None, None)


def test_check_mode_first_run_reports_everything_and_creates_nothing(cf):
    checked = play(cf, "access.yml", "--check", "--diff")
    assert checked.tasks["Service token"] == "changed"
    assert checked.tasks["Service auth policy"] == "changed"
    assert checked.tasks["Access application"] == "changed"
    assert "does not exist yet (check mode)" in checked.output
    assert access_state(cf) == (None, None, None)
    assert not cf.secret_file.exists()
