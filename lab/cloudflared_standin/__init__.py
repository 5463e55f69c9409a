"""The lab's cloudflared stand-in (NOT Cloudflare's cloudflared); see README.md here.

`EXECUTABLE` is the file a role installs as /usr/bin/cloudflared (a symlink to the single-file,
stdlib-only `cloudflared.py`, which the lab edge also imports for the wire-protocol framing).
"""

from pathlib import Path

EXECUTABLE = Path(__file__).resolve().parent / "cloudflared"

__all__ = ["EXECUTABLE"]
