"""relay.toml: provider auth styles, [cors], [routes.*] and [usage] parse or fail naming the key at fault."""

from __future__ import annotations

import pytest
from conftest import make_relay_dir
from llm_relay.server.config import ConfigError, load_settings

BASE = "http://127.0.0.1:9/api/v1"


def settings(tmp_path, extra: str):
    make_relay_dir(tmp_path, BASE, extra=extra)
    return load_settings(tmp_path / "relay.toml")


def test_the_issues_anthropic_table_parses(tmp_path):
    s = settings(
        tmp_path,
        """
[providers.anthropic]
base_url = "https://api.anthropic.com/v1"
keys_file = "openrouter-keys"
auth = "x-api-key"
headers = { "anthropic-version" = "2023-06-01" }
""",
    )
    p = s.providers["anthropic"]
    assert (p.auth_header, p.auth_query, p.headers) == (
        "x-api-key",
        None,
        {"anthropic-version": "2023-06-01"},
    )
    assert (s.providers["lab"].auth_header, s.providers["lab"].auth) == ("Authorization", "bearer")


def test_query_auth_style(tmp_path):
    extra = '[providers.gemini]\nbase_url = "https://g.example/v1beta"\nkeys_file = "openrouter-keys"\n'
    s = settings(tmp_path, extra + 'auth = "query:key"\n')
    assert (s.providers["gemini"].auth_header, s.providers["gemini"].auth_query) == (None, "key")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('auth = "x api key"', "auth must be"),
        ('auth = "Content-Length"', "auth must be"),
        ('auth = "query:"', "query parameter name"),
        ('headers = { "Host" = "evil.example" }', "set by the relay itself"),
        ('headers = { "x-bad" = "a\\u0000b" }', "invalid header"),
    ],
)
def test_bad_provider_auth_or_headers(tmp_path, extra, message):
    table = f'[providers.p]\nbase_url = "https://p.example/v1"\nkeys_file = "openrouter-keys"\n{extra}\n'
    with pytest.raises(ConfigError, match=message) as err:
        settings(tmp_path, table)
    assert "[providers.p]" in str(err.value)


def test_routes_cors_usage_parse(tmp_path):
    s = settings(
        tmp_path,
        """
[routes.auto]
providers = ["openrouter", { provider = "lab", model = "lab/echo" }]
[cors]
allow_origins = ["https://Tool.example:8443"]
[usage]
daily_token_budget = 100
client_budgets = { bob = 0 }
""",
    )
    assert [(a.provider, a.model) for a in s.routes["auto"].attempts] == [
        ("openrouter", ""),
        ("lab", "lab/echo"),
    ]
    assert s.cors.allow_origins == ("https://tool.example:8443",)
    assert (s.usage.budget_of("alice"), s.usage.budget_of("bob")) == (100, 0)


def test_default_provider_may_be_a_route(tmp_path):
    extra = '[routes.auto]\nproviders = ["lab", "openrouter"]\n'
    make_relay_dir(tmp_path, BASE, extra=extra, extra_server='default_provider = "auto"')
    assert load_settings(tmp_path / "relay.toml").server.default_provider == "auto"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[routes.auto]\nproviders = ["nope"]', "'nope' is not a configured provider"),
        ("[routes.auto]\nproviders = []", "at least one provider"),
        ('[routes.lab]\nproviders = ["openrouter"]', "reserved name"),
        ('[routes.auto]\nproviders = [{ provider = "lab", modle = "x" }]', "unknown keys: modle"),
        ('[cors]\nallow_origins = ["https://tool.example/path"]', "is not an origin"),
        ('[cors]\nallow_origins = ["*"]', "is not an origin"),
        ("[usage]\nclient_budgets = { alice = -1 }", "non-negative"),
        ("[usage]\ndaily_tokens = 5", "unknown keys: daily_tokens"),
    ],
)
def test_bad_feature_tables(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        settings(tmp_path, extra)


SECRET_PROVIDER = (
    '[providers.corp]\nbase_url = "https://llm.corp.example/v1"\nkeys_file = "openrouter-keys"\n'
)


def test_provider_secrets_file_merges_headers_and_proxy_and_must_be_private(tmp_path):
    secret = tmp_path / "corp-settings.toml"
    secret.write_text('proxy = "http://u:pw@proxy.example:3128"\nheaders = { "X-Key" = "k1" }\n')
    secret.chmod(0o600)
    extra = SECRET_PROVIDER + 'secrets_file = "corp-settings.toml"\nheaders = { "X-Title" = "t" }\n'
    p = settings(tmp_path, extra).providers["corp"]
    assert p.headers == {"X-Title": "t", "X-Key": "k1"} and p.proxy == "http://u:pw@proxy.example:3128"
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"secrets_file: .* accessible by group/others"):
        load_settings(tmp_path / "relay.toml")
    secret.chmod(0o600)
    secret.write_text('headers = { "x-title" = "other" }\n')
    with pytest.raises(ConfigError, match=r"headers \['x-title'\] set both here and in relay.toml"):
        load_settings(tmp_path / "relay.toml")
    secret.write_text('base_url = "https://elsewhere.example"\n')
    with pytest.raises(ConfigError, match="may hold only"):
        load_settings(tmp_path / "relay.toml")
