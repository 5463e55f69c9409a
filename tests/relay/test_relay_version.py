"""The relay tells its version (the collection's: galaxy.yml) on its loopback metrics listener's /healthz and
to token holders in /v1/providers; its public, token-less /healthz does not say what runs."""

from __future__ import annotations

from pathlib import Path

import yaml
from relay_support import bearer

REPO = Path(__file__).resolve().parents[2]
VERSION = str(yaml.safe_load((REPO / "galaxy.yml").read_text())["version"])


async def test_the_metrics_listener_healthz_names_the_version(relay, http):
    async with http.get(relay.metrics_url + "/healthz") as r:
        assert r.status == 200 and (await r.json()) == {"status": "ok", "version": VERSION}


async def test_token_holders_read_the_version_and_others_do_not(relay, http):
    async with http.get(relay.url + "/v1/providers", headers=bearer(relay.token)) as r:
        assert r.status == 200 and (await r.json())["relay_version"] == VERSION
    async with http.get(relay.url + "/v1/providers") as r:
        assert r.status == 401 and VERSION not in await r.text()
    async with http.get(relay.url + "/healthz") as r:
        assert r.status == 200 and VERSION not in await r.text()
