"""The relay role's input checks (roles/relay/tasks/validate.yml) at -vvv: a bad entry fails with a message
naming the entry, and no secret of any entry (client tokens, Fernet keys, provider keys) is printed, on
the failure path nor on success. Runs the checks alone on localhost: nothing is installed."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import pytest
from ansible_cli import REPO, run_ansible

TOKENS = [
    {"name": f"client-{i}", "token": "lrt_" + secrets.token_urlsafe(32), "key": key}
    for i, key in enumerate(
        ["Y2xpZW50LWtleS1vbmUtY2xpZW50LWtleS1vbmUtMDE=", "Y2xpZW50LWtleS10d28tY2xpZW50LWtleS10d28tMDI="]
    )
]
FERNET_KEYS = ["uWX3kkUp2hk7dnbR0p4iGV4Du9Rbn5pV1T6Mj0cMdqA=", "bmV3ZXJrZXluZXdlcmtleW5ld2Vya2V5bmV3ZXJrZXk="]
PROVIDER_KEY = "sk-or-v1-" + secrets.token_hex(24)
PROVIDERS = [{"name": "openrouter", "base_url": "https://provider.example/v1", "api_keys": [PROVIDER_KEY]}]
SECRETS = [t["token"] for t in TOKENS] + [t["key"] for t in TOKENS] + FERNET_KEYS + [PROVIDER_KEY]


def check(tmp_path: Path, **overrides) -> tuple[int, str]:
    """validate.yml of roles/relay (named by path: works with or without the collection installed)."""
    variables = {
        "relay_client_tokens": TOKENS,
        "relay_fernet_keys": FERNET_KEYS,
        "relay_providers": PROVIDERS,
        **overrides,
    }
    playbook = tmp_path / "validate.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "ansible.builtin.include_role": {
                                "name": str(REPO / "roles" / "relay"),
                                "tasks_from": "validate.yml",
                            },
                            "vars": variables,
                        }
                    ],
                }
            ]
        )
    )
    proc = run_ansible(
        "ansible-playbook", "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}",
        "-vvv", str(playbook),
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    shown = [i for i, value in enumerate(SECRETS) if value in output]
    assert not shown, f"secrets #{shown} printed"
    return proc.returncode, output


def test_valid_input_passes_without_printing_a_secret(tmp_path: Path) -> None:
    returncode, output = check(tmp_path)
    assert returncode == 0, output[-3000:]


BAD_TOKEN = "lrt_" + secrets.token_urlsafe(32)
CASES = {
    "bad token name": (
        {"relay_client_tokens": [*TOKENS, {"name": "bad name", "token": BAD_TOKEN}]},
        'relay_client_tokens entries #2 "bad name"',
    ),
    "token and sha256": (
        {"relay_client_tokens": [{"name": "both", "token": BAD_TOKEN, "sha256": "0" * 64}]},
        'relay_client_tokens entries #0 "both"',
    ),
    "bad Fernet key": (
        {"relay_fernet_keys": [FERNET_KEYS[0], BAD_TOKEN]},
        "relay_fernet_keys entries #1 (counted from 0) are not Fernet keys",
    ),
    "bad client key": (
        {"relay_client_tokens": [TOKENS[0], {"name": "keyed", "token": "lrt_" + "b" * 43, "key": BAD_TOKEN}]},
        "relay_client_tokens entries #1 (counted from 0) have a key that is not 44 characters",
    ),
    "missing provider key": (
        {"relay_providers": [*PROVIDERS, {"name": "other", "base_url": "https://o.example", "api_keys": []}]},
        'relay_providers entries #1 "other": no api_keys',
    ),
    "bad CA": (
        {"relay_providers": [{**PROVIDERS[0], "ca_pem": "/etc/ssl/certs/ca.pem " + BAD_TOKEN}]},
        'relay_providers entries #0 "openrouter": ca_pem holds no PEM certificate',
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_entry_fails_naming_the_entry_never_its_secret(tmp_path: Path, case: str) -> None:
    overrides, message = CASES[case]
    returncode, output = check(tmp_path, **overrides)
    assert returncode != 0
    assert message in " ".join(output.split()), output[-3000:]
    assert BAD_TOKEN not in output
