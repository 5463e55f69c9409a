"""Print what the molecule playbooks need from the lab as JSON: lab.toml, the CA path, the cache dir,
the pinned cloudflared binary.

Run with the controller's Python from the repository root (the playbooks pass its path), so that the
scenario reads the lab's constants from the one place that defines them instead of repeating them.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(sys.argv[1]).resolve()))

from lab import config
from lab.edge import binary

json.dump(
    {
        "config": config.load(),
        "ca_path": str(config.ca_path()),
        "cache_dir": str(config.cache_dir()),
        "cloudflared": str(binary.locate()),
    },
    sys.stdout,
)
