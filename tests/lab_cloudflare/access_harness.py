"""The in-process Cloudflare emulator with tokens for the Access endpoints (tests/lab_cloudflare and
tests/modules_cloudflare use it; no lab daemon, no lock).

harness.CONFIG's tokens predate Access; this config adds the two Access permission groups to the admin
token, a token that has everything but Access (to see the API's refusal) and a read-only Access token.
"""

from __future__ import annotations

import copy
from pathlib import Path

from lab.cloudflare import create_app, state_of

from .harness import ACCOUNT, CONFIG, ZONE, EmulatorThread

ACCESS_PERMISSIONS = ["Access: Apps and Policies:Edit", "Access: Service Tokens:Edit"]
NO_ACCESS = "labNoAccessToken000000000000000000000005"
ACCESS_READER = "labAccessReader0000000000000000000000006"


def access_config() -> dict:
    config = copy.deepcopy(CONFIG)
    for entry in config["tokens"]:
        if entry["name"] == "admin":
            entry["permissions"] = entry["permissions"] + ACCESS_PERMISSIONS
    config["tokens"].append(
        {
            "name": "no-access",
            "value": NO_ACCESS,
            "permissions": ["Cloudflare Tunnel:Edit", "DNS:Edit", "Zone:Read"],
            "accounts": [ACCOUNT],
            "zones": [ZONE],
        }
    )
    config["tokens"].append(
        {
            "name": "access-reader",
            "value": ACCESS_READER,
            "permissions": ["Access: Apps and Policies:Read", "Access: Service Tokens:Read"],
            "accounts": [ACCOUNT],
            "zones": [],
        }
    )
    return config


def access_emulator(state_path: Path | None) -> EmulatorThread:
    """An EmulatorThread (not started) serving access_config()."""
    server = EmulatorThread(state_path)
    server.app = create_app(access_config(), state_path)
    server.state = state_of(server.app)
    return server
