"""Runs INSIDE the container (stdlib only): report where any of the given secrets is visible.

Reads a JSON object {name: secret} on stdin (the task that runs this is no_log, so the secrets never
reach a log) and looks for each value in: the process list (`ps -ef`), `systemctl show` of the units
named in argv, the whole journal, and every world-readable regular file. Prints JSON
{"leaks": [{"secret": name, "where": ...}], "files_scanned": N}; only names, never values.
"""

import json
import os
import stat
import subprocess
import sys

SKIP_DIRS = ("/proc", "/sys", "/dev", "/run/credentials")
MAX_FILE = 5 * 1024 * 1024


def command_output(argv: list[str]) -> bytes:
    return subprocess.run(argv, capture_output=True, check=False).stdout


def world_readable_files():
    for root, dirs, files in os.walk("/", topdown=True):
        dirs[:] = [d for d in dirs if not os.path.join(root, d).startswith(SKIP_DIRS)]
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IROTH and st.st_size <= MAX_FILE:
                yield path


def main() -> None:
    secrets = {name: value.encode() for name, value in json.load(sys.stdin).items() if value}
    units = sys.argv[1:]
    sources = {
        "ps -ef": command_output(["ps", "-ef"]),
        "systemctl show": command_output(["systemctl", "show", *units]),
        "journal": command_output(["journalctl", "--no-pager", "--output", "cat"]),
    }
    leaks = [
        {"secret": name, "where": where}
        for where, text in sources.items()
        for name, value in secrets.items()
        if value in text
    ]
    scanned = 0
    for path in world_readable_files():
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        scanned += 1
        leaks += [{"secret": name, "where": path} for name, value in secrets.items() if value in data]
    print(json.dumps({"leaks": leaks, "files_scanned": scanned, "journal_bytes": len(sources["journal"])}))


if __name__ == "__main__":
    main()
