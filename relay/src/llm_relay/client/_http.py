"""The HTTP library the installed `openai` SDK is built on.

openai < 2 uses `httpx`; newer releases use its successor `httpx2` (same API, different classes). A
custom transport or client handed to the SDK must come from the same library, so the whole client package
imports it from here. The choice is read from the SDK's declared dependencies: importing the SDK itself
costs a second or more, which `keygen` and `doctor` should not pay.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from types import ModuleType


def _declared_by_openai() -> list[str]:
    try:
        requires = importlib.metadata.requires("openai") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    names = [
        re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0].lower() for req in requires if "extra ==" not in req
    ]
    return [n for n in ("httpx2", "httpx") if n in names]


def _sdk_http_library() -> ModuleType:
    for name in (*_declared_by_openai(), "httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("llm-relay client needs httpx: pip install 'llm-relay[client]'")


httpx = _sdk_http_library()
