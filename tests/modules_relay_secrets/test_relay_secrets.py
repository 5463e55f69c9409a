"""relay_secrets through ansible-playbook: generation, 0600/0700, idempotence, two-phase rotation, check
mode, and no secret in the output of tasks that register it with no_log."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from ansible_cli import run_ansible
from cryptography.fernet import Fernet

# An explicit `localhost` gets interpreter discovery: pin the controller's Python, as users do.
PLAYBOOK_ARGS = [
    "-i",
    "localhost,",
    "-e",
    f"ansible_python_interpreter={sys.executable}",
]
TOKEN_SHAPE = r"^lrt_[A-Za-z0-9_-]{43}$"


def run(tmp_path: Path, params: dict, *args: str) -> tuple[dict, str]:
    """One relay_secrets task; returns its registered result (written to a file) and the play output."""
    out = tmp_path / "result.json"
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "tasks": [
                        {"llm_relay.homelab.relay_secrets": params, "register": "store", "no_log": True},
                        {
                            "ansible.builtin.copy": {"content": "{{ store | to_json }}", "dest": str(out)},
                            "no_log": True,
                            "check_mode": False,
                        },
                    ],
                }
            ]
        )
    )
    proc = run_ansible("ansible-playbook", *PLAYBOOK_ARGS, "-v", str(playbook), *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout + proc.stderr


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "relay.example.com"


def test_generates_once_with_private_modes(tmp_path: Path, store_dir: Path) -> None:
    first, output = run(tmp_path, {"path": str(store_dir), "client_names": ["alice", "bob"]})
    assert first["changed"] is True
    names = [t["name"] for t in first["client_tokens"]]
    assert names == ["alice", "bob"]
    for entry in first["client_tokens"]:
        assert __import__("re").match(TOKEN_SHAPE, entry["token"])
        assert entry["token"] not in output
    Fernet(first["fernet_key"].encode())  # a valid key
    assert first["fernet_key"] not in output
    # Each client has its own envelope key, generated with its token; the artifact gets the first one's.
    client_keys = [entry["key"] for entry in first["client_tokens"]]
    assert len(set(client_keys)) == 2 and first["client_key"] == client_keys[0]
    for key in client_keys:
        Fernet(key.encode())
        assert key not in output
    assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((store_dir / "secrets.json").stat().st_mode) == 0o600

    again, _ = run(tmp_path, {"path": str(store_dir), "client_names": ["alice", "bob"]})
    assert again["changed"] is False
    assert again["client_tokens"] == first["client_tokens"] and again["fernet_keys"] == first["fernet_keys"]


def test_two_phase_rotation_keeps_old_secrets_until_finish(tmp_path: Path, store_dir: Path) -> None:
    before, _ = run(tmp_path, {"path": str(store_dir)})
    begun, _ = run(
        tmp_path, {"path": str(store_dir), "rotate": ["client_tokens", "fernet"], "phase": "begin"}
    )
    assert begun["changed"] is True
    tokens = {t["name"]: t["token"] for t in begun["client_tokens"]}
    assert tokens["default.previous"] == before["client_token"]
    assert tokens["default"] == begun["client_token"] != before["client_token"]
    assert begun["fernet_keys"][1:] == before["fernet_keys"] and begun["fernet_key"] != before["fernet_key"]
    # The client's key rotates with its token: the old one stays with the old token until finish.
    keys = {t["name"]: t["key"] for t in begun["client_tokens"]}
    assert keys["default.previous"] == before["client_key"] != keys["default"] == begun["client_key"]

    finished, _ = run(
        tmp_path, {"path": str(store_dir), "rotate": ["client_tokens", "fernet"], "phase": "finish"}
    )
    assert finished["changed"] is True
    assert finished["client_tokens"] == [
        {"name": "default", "token": begun["client_token"], "key": begun["client_key"]}
    ]
    assert finished["fernet_keys"] == [begun["fernet_key"]]
    idle, _ = run(
        tmp_path, {"path": str(store_dir), "rotate": ["client_tokens", "fernet"], "phase": "finish"}
    )
    assert idle["changed"] is False


def test_store_from_before_client_keys_gets_them(tmp_path: Path, store_dir: Path) -> None:
    store_dir.mkdir(parents=True, mode=0o700)
    token = "lrt_" + "a" * 43
    old = {
        "client_tokens": {"default": {"current": token, "previous": None}},
        "fernet_keys": [Fernet.generate_key().decode()],
    }
    (store_dir / "secrets.json").write_text(json.dumps(old))
    (store_dir / "secrets.json").chmod(0o600)
    upgraded, _ = run(tmp_path, {"path": str(store_dir)})
    assert upgraded["changed"] is True and upgraded["client_token"] == token  # the token is kept
    Fernet(upgraded["client_key"].encode())
    assert upgraded["client_tokens"] == [{"name": "default", "token": token, "key": upgraded["client_key"]}]


def test_check_mode_writes_nothing(tmp_path: Path, store_dir: Path) -> None:
    planned, _ = run(tmp_path, {"path": str(store_dir)}, "--check")
    assert planned["changed"] is True
    assert not store_dir.exists()
    real, _ = run(tmp_path, {"path": str(store_dir)})
    content = (store_dir / "secrets.json").read_text()
    rotated, _ = run(tmp_path, {"path": str(store_dir), "rotate": ["fernet"]}, "--check")
    assert rotated["changed"] is True and rotated["fernet_keys"] == real["fernet_keys"]
    assert (store_dir / "secrets.json").read_text() == content


def run_failing(tmp_path: Path, params: dict) -> str:
    """One relay_secrets task that must fail; returns the play output."""
    playbook = tmp_path / "bad.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "tasks": [{"llm_relay.homelab.relay_secrets": params}],
                }
            ]
        )
    )
    proc = run_ansible("ansible-playbook", *PLAYBOOK_ARGS, str(playbook))
    assert proc.returncode != 0
    return proc.stdout


def test_unreadable_store_is_a_clear_error(tmp_path: Path, store_dir: Path) -> None:
    store_dir.mkdir(parents=True)
    (store_dir / "secrets.json").write_text("{not json")
    assert "path: cannot read" in run_failing(tmp_path, {"path": str(store_dir)})


@pytest.mark.parametrize("name", ["bad name", "-dash-first", "x" * 56, "tab\there"])
def test_client_name_the_relay_would_refuse_fails_before_anything_is_written(
    tmp_path: Path, store_dir: Path, name: str
) -> None:
    output = run_failing(tmp_path, {"path": str(store_dir), "client_names": ["ok", name]})
    assert f"client_names: {name!r} not allowed" in output
    assert "1-55 characters" in output
    assert not store_dir.exists()


def test_longest_client_name_still_fits_with_its_previous_suffix(tmp_path: Path, store_dir: Path) -> None:
    name = "n" * 55
    run(tmp_path, {"path": str(store_dir), "client_names": [name]})
    rotated, _ = run(tmp_path, {"path": str(store_dir), "client_names": [name], "rotate": ["client_tokens"]})
    assert {t["name"] for t in rotated["client_tokens"]} == {name, name + ".previous"}
    assert all(len(t["name"]) <= 64 for t in rotated["client_tokens"])


def test_an_existing_store_with_open_modes_is_made_private(tmp_path: Path, store_dir: Path) -> None:
    """A store copied in or made by hand (0755 directory, 0644 file) is set to 0700/0600: a change, once;
    check mode reports it without touching anything."""
    first, _ = run(tmp_path, {"path": str(store_dir), "client_names": ["alice"]})
    store = store_dir / "secrets.json"
    store_dir.chmod(0o755)
    store.chmod(0o644)
    checked, _ = run(tmp_path, {"path": str(store_dir), "client_names": ["alice"]}, "--check")
    assert checked["changed"] is True and stat.S_IMODE(store.stat().st_mode) == 0o644
    fixed, _ = run(tmp_path, {"path": str(store_dir), "client_names": ["alice"]})
    assert fixed["changed"] is True and fixed["client_tokens"] == first["client_tokens"]
    assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700 and stat.S_IMODE(store.stat().st_mode) == 0o600
    again, _ = run(tmp_path, {"path": str(store_dir), "client_names": ["alice"]})
    assert again["changed"] is False
