"""The collection's Cloudflare client, for the playbook tests to read the emulator's state with.

The checkout is the collection llm_relay.homelab (`make setup` links it under .ansible/collections), so
the client is imported by its FQCN, as Ansible serves it to the modules.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".ansible" / "collections"


def load_module_utils():
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))
    return importlib.import_module("ansible_collections.llm_relay.homelab.plugins.module_utils.cloudflare")
