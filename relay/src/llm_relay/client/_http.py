"""The HTTP library the installed `openai` SDK is built on.

openai < 2 uses `httpx`; newer releases use its successor `httpx2` (same API, different classes). A
custom transport or client handed to the SDK must come from the same library, so the whole client package
imports it from here.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def _sdk_http_library() -> ModuleType:
    try:
        base_client = importlib.import_module("openai._base_client")
    except ImportError:  # SDK not installed: the CLI still works for keygen/doctor through httpx
        base_client = None
    for name in ("httpx2", "httpx"):
        module = getattr(base_client, name, None)
        if isinstance(module, ModuleType):
            return module
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("llm-relay client needs httpx: pip install 'llm-relay[client]'")


httpx = _sdk_http_library()
