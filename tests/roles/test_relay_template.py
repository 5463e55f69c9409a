"""The relay role's relay.toml template with the provider, fallback, CORS and usage settings: rendered by
Ansible from the role's own defaults, then loaded by the relay's own config parser (what `--check`,
the template task's `validate`, runs on the target)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ansible_cli import REPO, run_ansible
from llm_relay import tokens
from llm_relay.server.config import load_settings

ROLE = REPO / "roles" / "relay"


def render(tmp_path: Path, variables: dict) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, text in {
        "client-tokens": tokens.format_token_line("alice", tokens.generate_token()),
        "openrouter-keys": "sk-or-v1-template-test",
        "anthropic-keys": "sk-ant-template-test",
    }.items():
        (secrets / name).write_text(text + "\n")
        os.chmod(secrets / name, 0o600)
    dest = tmp_path / "relay.toml"
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
            "tasks": [
                {  # what secrets.yml writes: each provider's headers and proxy, 0600
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates" / "provider-secrets.toml.j2"),
                        "dest": str(secrets) + "/{{ provider.name }}-settings.toml",
                        "mode": "0600",
                    },
                    "loop": "{{ relay_providers }}",
                    "loop_control": {"loop_var": "provider"},
                },
                {
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates" / "relay.toml.j2"),
                        "dest": str(dest),
                        "mode": "0600",
                    }
                },
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    extra = {"relay_config_dir": str(tmp_path), "relay_secrets_dir": str(secrets), **variables}
    proc = run_ansible(
        "ansible-playbook", "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}",
        "-e", json.dumps(extra), str(tmp_path / "play.yml"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest


def test_defaults_render_a_config_without_any_new_behaviour(tmp_path):
    providers = [{"name": "openrouter", "api_keys": ["x"]}]
    s = load_settings(render(tmp_path, {"relay_providers": providers}))
    assert s.routes == {} and s.cors.allow_origins == () and s.usage.daily_token_budget == 0
    assert s.providers["openrouter"].auth == "bearer"
    # Envelope v1 refused, as by the relay's own default: the client artifacts carry v2 keys.
    assert s.accept_v1 is False


def test_envelope_v1_only_when_asked_for(tmp_path):
    providers = [{"name": "openrouter", "api_keys": ["x"]}]
    variables = {"relay_providers": providers, "relay_envelope_accept_v1": True}
    assert load_settings(render(tmp_path, variables)).accept_v1 is True


def test_provider_auth_routes_cors_and_budgets_reach_the_relay(tmp_path):
    providers = [
        {"name": "openrouter", "api_keys": ["x"]},
        {
            "name": "anthropic",
            "base_url": "https://api.anthropic.com/v1",
            "api_keys": ["y"],
            "auth": "x-api-key",
            "headers": {"anthropic-version": "2023-06-01"},
        },
    ]
    variables = {
        "relay_providers": providers,
        "relay_routes": [
            {
                "name": "auto",
                "providers": [{"provider": "openrouter"}, {"provider": "anthropic", "model": "m"}],
            }
        ],
        "relay_default_provider": "auto",
        "relay_cors_allow_origins": ["https://tool.example"],
        "relay_daily_token_budget": 1000,
        "relay_client_token_budgets": {"alice": 50},
    }
    s = load_settings(render(tmp_path, variables))
    anthropic = s.providers["anthropic"]
    assert (anthropic.auth_header, anthropic.headers) == ("x-api-key", {"anthropic-version": "2023-06-01"})
    assert [(a.provider, a.model) for a in s.routes["auto"].attempts] == [
        ("openrouter", ""),
        ("anthropic", "m"),
    ]
    assert s.server.default_provider == "auto" and s.cors.allow_origins == ("https://tool.example",)
    assert (s.usage.budget_of("alice"), s.usage.budget_of("bob")) == (50, 1000)


def test_provider_headers_and_proxy_credentials_stay_out_of_relay_toml(tmp_path):
    """relay.toml is readable by the service's group: a header holding a key and a proxy password go to
    the provider's 0600 <name>-settings.toml, which relay.toml names and the relay merges."""
    providers = [
        {
            "name": "openrouter",
            "api_keys": ["x"],
            "headers": {"X-Title": "lab", "X-Org-Secret": "hdr-s3cret"},
            "proxy": "http://proxyuser:pr0xy-pass@proxy.corp.example:3128",
            "no_proxy": ["localhost"],
        }
    ]
    config = render(tmp_path, {"relay_providers": providers})
    text = config.read_text()
    assert "hdr-s3cret" not in text and "pr0xy-pass" not in text and "X-Title" not in text
    settings_file = tmp_path / "secrets" / "openrouter-settings.toml"
    assert oct(settings_file.stat().st_mode & 0o777) == "0o600" and "pr0xy-pass" in settings_file.read_text()
    provider = load_settings(config).providers["openrouter"]
    assert provider.headers == {"X-Org-Secret": "hdr-s3cret", "X-Title": "lab"}
    assert provider.proxy.endswith("@proxy.corp.example:3128") and provider.no_proxy == ("localhost",)
