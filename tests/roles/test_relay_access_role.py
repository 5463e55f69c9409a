"""The relay role's Cloudflare Access variables (relay_access_*): rendered into relay.toml's [access] and
loaded by the relay's own parser, and refused by validate.yml when they do not fit together."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_relay.server.config import load_settings
from test_relay_template import render
from test_relay_validate import check

PROVIDERS = [{"name": "openrouter", "api_keys": ["x"]}]
AUD = "4714b1a7cc8c9e3c0c8f9a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"


def test_access_is_off_by_default(tmp_path):
    text = render(tmp_path, {"relay_providers": PROVIDERS}).read_text()
    assert "[access]" not in text
    assert not load_settings(tmp_path / "relay.toml").access.enabled


def test_access_vars_reach_the_relay(tmp_path):
    variables = {
        "relay_providers": PROVIDERS,
        "relay_access_team_domain": "team.lab.test:9443",
        "relay_access_audiences": [AUD, "second-app"],
        "relay_access_certs_url": "https://10.87.0.1:9443/cdn-cgi/access/certs",
    }
    access = load_settings(render(tmp_path, variables)).access
    assert access.issuer == "https://team.lab.test:9443"
    assert access.audiences == (AUD, "second-app")
    assert (access.keys_url, access.ca_file) == ("https://10.87.0.1:9443/cdn-cgi/access/certs", "")


def test_a_copied_ca_lands_in_the_config_dir_unless_a_target_path_is_given(tmp_path):
    (tmp_path / "access-ca.pem").write_text("(the role copies relay_access_ca_src here)\n")
    variables = {
        "relay_providers": PROVIDERS,
        "relay_access_team_domain": "myteam.cloudflareaccess.com",
        "relay_access_audiences": [AUD],
        "relay_access_ca_src": "/controller/lab-ca.crt",
    }
    access = load_settings(render(tmp_path, variables)).access
    assert access.ca_file == str(tmp_path / "access-ca.pem")
    assert access.keys_url == "https://myteam.cloudflareaccess.com/cdn-cgi/access/certs"
    other = tmp_path / "other"
    other.mkdir()
    (other / "ca.pem").write_text("(a bundle already on the target)\n")
    variables["relay_access_ca_file"] = str(other / "ca.pem")
    assert load_settings(render(other, variables)).access.ca_file == str(other / "ca.pem")


def test_valid_access_settings_pass(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    returncode, output = check(
        tmp_path,
        relay_access_team_domain="team.lab.test:9443",
        relay_access_audiences=[AUD],
        relay_access_ca_src=str(ca),
        relay_access_certs_url="https://team.lab.test:9443/cdn-cgi/access/certs",
    )
    assert returncode == 0, output[-3000:]


@pytest.mark.parametrize(
    "overrides",
    [
        {"relay_access_team_domain": "team.lab.test"},  # no audience
        {"relay_access_team_domain": "https://team.lab.test", "relay_access_audiences": [AUD]},
        {"relay_access_team_domain": "team.lab.test/x", "relay_access_audiences": [AUD]},
        {"relay_access_team_domain": "team.lab.test", "relay_access_audiences": [""]},
        {"relay_access_audiences": [AUD]},  # an audience without a team domain
        {"relay_access_certs_url": "https://team.lab.test/cdn-cgi/access/certs"},
        {
            "relay_access_team_domain": "team.lab.test",
            "relay_access_audiences": [AUD],
            "relay_access_certs_url": "http://team.lab.test/cdn-cgi/access/certs",
        },
        {
            "relay_access_team_domain": "team.lab.test",
            "relay_access_audiences": [AUD],
            "relay_access_ca_src": "/nonexistent/ca.pem",
        },
    ],
)
def test_access_settings_that_do_not_fit_are_refused(tmp_path: Path, overrides: dict) -> None:
    returncode, output = check(tmp_path, **overrides)
    assert returncode != 0
    assert "Cloudflare Access: relay_access_team_domain must be a host name" in output
