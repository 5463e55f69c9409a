"""The committed [cloudflare] and [upstream] sections of lab/lab.toml build working apps."""

from __future__ import annotations

import pytest

from lab import config
from lab.cloudflare import create_app, state_of
from lab.upstream import create_app as create_upstream


def test_cloudflare_section_is_consistent():
    section = config.load()["cloudflare"]
    state = state_of(create_app(section))
    assert state.account_id == "0123456789abcdef0123456789abcdef"
    assert [z["name"] for z in state.zones] == ["lab.test"] == [section["zone"]]
    assert section["api_token"] == section["tokens"]["admin"]["value"]


def test_upstream_section_is_consistent():
    section = config.load()["upstream"]
    assert section["port"] == 8790 and len(section["api_keys"]) >= 2
    create_upstream(section)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"api_token": "x" * 40}, "api_token"),
        ({"zone": "nope.test"}, "zone"),
        ({"tokens": {"bad": {"value": "short"}}}, "40"),
        ({"tokens": {"bad": {"value": "y" * 40, "permissions": ["DNS:Own"]}}}, "permissions"),
        ({"zones": []}, "zones"),
    ],
)
def test_broken_sections_are_refused_at_start(change, message):
    section = config.load()["cloudflare"] | change
    if "tokens" in change:
        section.pop("api_token")
    with pytest.raises(ValueError, match=message):
        create_app(section)
