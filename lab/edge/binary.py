"""Where the lab gets the real cloudflared: a path given to it, the project's shared copy, or the lab cache.

The lab runs Cloudflare's connector itself, never a stand-in. Its bytes are pinned by sha256: the shared
copy is cloudflared 2026.8.2 built unmodified from the official source (its README gives the build), so
the checksum is that file's own, not the official release's (a different Go toolchain gives other bytes).
Order: `LAB_CLOUDFLARED` (explicit path), `$LLM_RELAY_SHARED/cloudflared/<name>`, then a copy cached in
the lab cache dir by an earlier run. These machines cannot download Cloudflare's release, so nothing is
fetched; a missing binary stops with the variables to set.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from lab import config

VERSION = "2026.8.2"
NAME = f"cloudflared-{VERSION}-linux-amd64"
SHA256 = "fe844a5976a559d5a625989f45f2ee0b372b800f2bb4042856b2b114ac3dd654"


class BinaryMissing(RuntimeError):
    """No pinned cloudflared could be found; the message says what to set."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def candidates() -> list[tuple[str, Path]]:
    found = []
    if os.environ.get("LAB_CLOUDFLARED"):
        found.append(("LAB_CLOUDFLARED", Path(os.environ["LAB_CLOUDFLARED"])))
    if os.environ.get("LLM_RELAY_SHARED"):
        found.append(("LLM_RELAY_SHARED", Path(os.environ["LLM_RELAY_SHARED"]) / "cloudflared" / NAME))
    found.append(("lab cache", config.cache_dir() / "cloudflared" / NAME))
    return found


def locate() -> Path:
    """The pinned cloudflared binary (sha256 checked), copied into the lab cache for later runs."""
    tried = []
    for source, path in candidates():
        if not path.is_file():
            tried.append(f"{source}: {path} (missing)")
            continue
        digest = sha256(path)
        if digest != SHA256:
            # An explicit path with other bytes is an error, never silently replaced by another copy.
            raise BinaryMissing(
                f"{path} (from {source}) has sha256 {digest}, not the pinned cloudflared {VERSION} "
                f"({SHA256}); point LAB_CLOUDFLARED at the pinned build"
            )
        _cache(path)
        return path
    raise BinaryMissing(
        f"the real cloudflared {VERSION} is needed and was not found; set LAB_CLOUDFLARED=/path/to/{NAME} "
        f"or LLM_RELAY_SHARED to the project's shared directory (it holds cloudflared/{NAME}, "
        f"sha256 {SHA256}). Tried: " + "; ".join(tried)
    )


def _cache(path: Path) -> None:
    """Keeps a copy in the lab cache, so later runs without the variables still find it."""
    cached = config.cache_dir() / "cloudflared" / NAME
    if cached == path:
        return
    try:
        if cached.is_file() and cached.stat().st_size == path.stat().st_size:
            return
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        shutil.copyfile(path, partial)
        partial.chmod(0o755)
        partial.replace(cached)
    except OSError:
        pass  # a read-only or absent cache only costs the next run the variable
