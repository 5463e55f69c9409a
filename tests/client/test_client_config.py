"""Client configuration: file + profiles + environment precedence, validation, proxy routing."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_relay import envelope, tokens
from llm_relay.client.config import ConfigError, load_profile
from llm_relay.client.network import bypasses_proxy, mask_url, proxy_url

TOKEN = tokens.generate_token()
OTHER_TOKEN = tokens.generate_token()
KEY = envelope.generate_key()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_profiles_inherit_top_level_and_default_profile_is_used(tmp_path):
    path = write(
        tmp_path,
        f"""
default_profile = "home"
timeout = 42
model = "lab/echo"
[profiles.home]
url = "https://relay.example.org"
token = "{TOKEN}"
[profiles.work]
url = "https://relay.example.org"
token = "{OTHER_TOKEN}"
fernet_key = "{KEY}"
proxy = "http://proxy.corp:3128"
""",
    )
    home = load_profile(config_path=path, env={})
    assert (home.name, home.token, home.timeout, home.model) == ("home", TOKEN, 42.0, "lab/echo")
    assert not home.encrypting
    work = load_profile("work", config_path=path, env={})
    assert work.token == OTHER_TOKEN and work.encrypting and work.proxy == "http://proxy.corp:3128"
    assert load_profile(config_path=path, env={"LLM_RELAY_PROFILE": "work"}).name == "work"


def test_environment_overrides_file_and_flags_override_environment(tmp_path):
    path = write(tmp_path, f'url = "https://a.example.org"\ntoken = "{TOKEN}"\n')
    env = {
        "LLM_RELAY_URL": "https://b.example.org",
        "LLM_RELAY_TOKEN": OTHER_TOKEN,
        "LLM_RELAY_FERNET_KEY": KEY,
    }
    profile = load_profile(config_path=path, env=env)
    assert (profile.url, profile.token, profile.fernet_key) == ("https://b.example.org", OTHER_TOKEN, KEY)
    assert profile.encrypting  # a configured key turns envelopes on by default
    flagged = load_profile(config_path=path, env=env, url="https://c.example.org", encrypt=False)
    assert flagged.url == "https://c.example.org" and not flagged.encrypting


def test_standard_proxy_variables_apply_only_without_explicit_proxy(tmp_path):
    base = f'url = "https://relay.example.org"\ntoken = "{TOKEN}"\n'
    env = {"HTTPS_PROXY": "http://u:p%40ss@proxy.corp:3128", "HTTP_PROXY": "http://other:1", "NO_PROXY": ""}
    profile = load_profile(config_path=write(tmp_path, base), env=env)
    assert proxy_url(profile) == "http://u:p%40ss@proxy.corp:3128"
    assert mask_url(proxy_url(profile)) == "http://u:***@proxy.corp:3128"
    direct = load_profile(config_path=write(tmp_path, base + 'proxy = ""\n'), env=env)
    assert proxy_url(direct) is None  # explicit "" means direct even when HTTPS_PROXY is set
    plain = load_profile(config_path=write(tmp_path, base.replace("https", "http")), env=env)
    assert proxy_url(plain) == "http://other:1"  # an http:// relay uses HTTP_PROXY


@pytest.mark.parametrize(
    ("no_proxy", "host", "bypass"),
    [
        ("example.org", "relay.example.org", True),
        (".example.org", "relay.example.org", True),
        ("example.org", "badexample.org", False),
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "11.1.2.3", False),
        ("localhost,127.0.0.1", "127.0.0.1", True),
        ("*", "anything.example", True),
        ("relay.example.org:443", "relay.example.org", True),
        ("relay.example.org:8443", "relay.example.org", False),
    ],
)
def test_no_proxy_matching(tmp_path, no_proxy, host, bypass):
    profile = load_profile(
        env={}, check=False, url=f"https://{host}", token=TOKEN, proxy="http://proxy:3128", no_proxy=no_proxy
    )
    assert bypasses_proxy(profile) is bypass
    assert (proxy_url(profile) is None) is bypass


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('url = "https://r.example"\ntoken = "nope"\n', "not an llm-relay token"),
        (f'url = "ftp://r.example"\ntoken = "{TOKEN}"\n', "url must be http(s)"),
        (f'url = "https://r.example"\ntoken = "{TOKEN}"\nfernet_key = "short"\n', "not a Fernet key"),
        (f'url = "https://r.example"\ntoken = "{TOKEN}"\nencrypt = true\n', "needs a fernet_key"),
        (f'url = "https://r.example"\ntoken = "{TOKEN}"\nproxyy = "x"\n', "unknown key 'proxyy'"),
        (f'url = "https://r.example"\ntoken = "{TOKEN}"\ntimeout = "9"\n', "'timeout' has the wrong type"),
        (f'url = "https://r.example"\ntoken = "{TOKEN}"\nca_bundle = "/nonexistent.pem"\n', "is not a file"),
        ('default_profile = "a"\n[profiles.a]\nurl = 3\n', "'url' has the wrong type"),
        ("url = [", "not valid TOML"),
    ],
)
def test_bad_configuration_is_named_and_never_echoes_secrets(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_profile(config_path=write(tmp_path, text), env={})
    assert TOKEN not in str(info.value)


def test_secrets_can_live_in_separate_files_and_unknown_profile_is_an_error(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "key").write_text(KEY + "\n")
    path = write(
        tmp_path,
        f'url = "https://r.example"\ntoken_file = "{tmp_path}/token"\nfernet_key_file = "{tmp_path}/key"\n',
    )
    profile = load_profile(config_path=path, env={})
    assert (profile.token, profile.fernet_key) == (TOKEN, KEY)
    assert TOKEN not in repr(profile) and KEY not in repr(profile)
    with pytest.raises(ConfigError, match="no profile 'nope'"):
        load_profile("nope", config_path=path, env={})
