"""doctor's version check: this client's version against the relay's.

The relay tells its version to token holders only (`relay_version` in its own `GET /v1/providers` answer;
its public /healthz does not say what runs), so this check runs after the token was accepted. A collection
deploys the relay and writes the client wheel of one version beside the client config: a difference means
one side was not upgraded. It is a warning, not a failure: the protocol is versioned on its own (envelope
v2/v1), and an older or newer client still works as far as both speak the same envelope.
"""

from __future__ import annotations

import re

from llm_relay import __version__

from ._http import httpx
from .config import Profile
from .doctor_net import Check, Timer
from .factory import http_client

# What a relay may put there: a version string, nothing to echo blindly into a terminal.
VERSION_SHAPE = re.compile(r"[0-9A-Za-z.+!_-]{1,40}")


def relay_version(response) -> str | None:
    try:
        doc = response.json()
    except ValueError:
        return None
    version = doc.get("relay_version") if isinstance(doc, dict) else None
    return version if isinstance(version, str) and VERSION_SHAPE.fullmatch(version) else None


def check_version(profile: Profile) -> Check:
    mine = f"client {__version__}"
    with Timer() as timer, http_client(profile) as client:
        try:
            response = client.get(profile.root + "/v1/providers")
        except httpx.HTTPError as exc:
            detail = f"{mine}; relay version unknown: {exc!r}"
            return Check("version", "warn", detail, "relay_version_unknown")
    theirs = relay_version(response) if response.status_code == 200 else None
    if theirs is None:
        return Check(
            "version",
            "warn",
            f"{mine}; the relay does not tell its version (older than 1.3.0, or not llm-relay)",
            "relay_version_unknown",
            "upgrade the relay: re-run site.yml with this client's collection version",
            ms=timer.ms,
        )
    detail = f"{mine}, relay {theirs}"
    if theirs == __version__:
        return Check("version", "ok", detail, ms=timer.ms)
    return Check(
        "version",
        "warn",
        detail + ": they differ",
        "version_mismatch",
        "install the client wheel site.yml wrote beside the client config "
        f"(llm_relay-{theirs}-py3-none-any.whl), or re-run site.yml of the collection {__version__}",
        ms=timer.ms,
    )
