"""Build the collection tarball a user installs (`make release`): the collection plus the relay's wheel.

The relay role deploys, by default, the llm-relay wheel the collection carries in roles/relay/files/dist/;
`ansible-galaxy collection build` packs a directory as it is, and a checkout holds no such wheel (a wheel
left in the checkout would go stale the moment relay/ changes, and the checkout deploys relay/ itself). So
the tarball is built from a copy:
  1. the relay wheel, built from relay/ reproducibly (roles/relay/files/build_wheel_bundle.py: a clean copy
     of the source, SOURCE_DATE_EPOCH fixed), so one source gives one wheel and one FILES.json checksum;
  2. a copy of what ships (galaxy.yml's build_ignore, matched as ansible-galaxy matches it);
  3. the wheel into the copy's roles/relay/files/dist/;
  4. `ansible-galaxy collection build` of the copy into --output-path.
The wheel's version must be galaxy.yml's: one version names the collection, the relay it deploys and the
client it writes beside the client config. Prints the tarball's path.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run_ansible_test import collection_name, ignored

REPO = Path(__file__).resolve().parents[1]
BUILDER = REPO / "roles" / "relay" / "files" / "build_wheel_bundle.py"
# Where the role looks for the wheel it deploys by default (roles/relay/vars/main.yml: relay_carried_wheels).
CARRIED = Path("roles") / "relay" / "files" / "dist"
# ansible-galaxy leaves these out whatever build_ignore says; so does the copy.
ALWAYS_IGNORED = (".git", "__pycache__", "*.pyc", "*.retry", "tests/output")


def wheel_builder():
    spec = importlib.util.spec_from_file_location("build_wheel_bundle", BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def galaxy_version() -> str:
    import yaml

    return str(yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))["version"])


def relay_version() -> str:
    """llm_relay.__version__ as the wheel build reads it (setuptools' `attr`: the literal, not imported)."""
    tree = ast.parse((REPO / "relay" / "src" / "llm_relay" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == ["__version__"]:
            return str(ast.literal_eval(node.value))
    raise SystemExit("relay/src/llm_relay/__init__.py sets no __version__")


def check_versions(relay: str, collection: str) -> None:
    if relay != collection:
        raise SystemExit(
            f"relay/ builds llm-relay {relay} but galaxy.yml says {collection}: one version for both "
            "(relay/src/llm_relay/__init__.py __version__ and galaxy.yml version)"
        )


def copy_shipped(dest: Path) -> None:
    """What the tarball holds, copied to dest (symlinks kept as links, as ansible-galaxy packs them)."""
    *_, build_ignore = collection_name()
    patterns = [*build_ignore, *ALWAYS_IGNORED, *(f"*/{p}" for p in ALWAYS_IGNORED)]
    for dirpath, dirnames, filenames in os.walk(REPO):
        base = Path(dirpath).relative_to(REPO).as_posix()
        prefix = "" if base == "." else base + "/"
        dirnames[:] = [d for d in dirnames if not ignored(prefix + d, patterns)]
        for filename in filenames:
            rel = prefix + filename
            if not ignored(rel, patterns):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, dest / rel, follow_symlinks=False)


def build(output: Path) -> Path:
    version = galaxy_version()
    check_versions(relay_version(), version)  # before spending a build on it
    builder = wheel_builder()
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llm-relay-release-") as tmp:
        wheel = builder.build_relay_wheel(REPO / "relay", Path(tmp) / "wheel-cache")
        check_versions(builder.wheel_metadata(wheel)["Version"], version)
        tree = Path(tmp) / "collection"
        copy_shipped(tree)
        (tree / CARRIED).mkdir(parents=True)
        shutil.copy2(wheel, tree / CARRIED / wheel.name)
        argv = [str(Path(sys.executable).parent / "ansible-galaxy"), "collection", "build", "--force"]
        proc = subprocess.run(
            [*argv, "--output-path", str(output.resolve()), str(tree)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"ansible-galaxy collection build failed:\n{proc.stdout}{proc.stderr}")
    namespace, name, _ = collection_name()
    tarball = output / f"{namespace}-{name}-{version}.tar.gz"
    if not tarball.is_file():
        raise SystemExit(f"ansible-galaxy built no {tarball.name} in {output}")
    return tarball


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-path", default=str(REPO / "dist"), help="directory for the tarball")
    print(build(Path(parser.parse_args().output_path)))


if __name__ == "__main__":
    main()
