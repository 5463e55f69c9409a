"""Build the relay's wheel bundle ON THE CONTROLLER for a target that has no PyPI access.

A bundle is a directory of wheels (the relay package + every dependency, pinned to exactly what was
resolved) plus `requirements.txt` listing them as `name==version`. It is named by the SHA-256 of its
content, so the role reinstalls on the target only when that name changes: a new relay version, changed
code, or changed requirements. Everything is cached under --cache:

    <cache>/relay/<src>/      the relay wheel built from one state of the source (src = hash of its files);
                              with --wheel (the wheel an installed collection carries) none is built
    <cache>/deps/<key>/       dependency wheels for one (requirements, Python, platform) key; downloaded
                              from the index once, then reused (key = hash of the relay wheel's
                              Requires-Dist + constraints + target tags)
    <cache>/bundles/<sha>/    relay wheel + dependency wheels + requirements.txt
    <cache>/bundles/<sha>.tar the same as one file, so the target receives a single transfer

The relay wheel is built from a clean copy of the source with SOURCE_DATE_EPOCH fixed, so the same source
gives a byte-identical wheel and therefore the same bundle; it is rebuilt only when the source changes.

The bundle also carries a pip wheel that is *not* in requirements.txt: the target runs pip straight from
that wheel (`venv/bin/python pip-X.whl/pip install ...`, as ensurepip itself does), so the venv is made
`--without-pip` (no ensurepip run, no python3-venv package, no pip left in the service's venv).

Prints one JSON object: {"bundle", "archive", "sha256", "name", "version", "relay_wheel", "wheels",
"pip_wheel", "changed"}. With --wheel-only it stops after the relay wheel (what the PC's client installs) and
prints {"relay_wheel", "name", "version"}.
"""

import argparse
import email.message
import email.parser
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# Part of every dependency cache key: bump it when what a download holds changes (2: pip's own wheel).
DEPS_FORMAT = 2
# 1980-01-01: the earliest timestamp a zip entry can hold.
FIXED_EPOCH = "315532800"
SOURCE_IGNORE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "tests")


def pip(*args: str, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"pip {args[0]} failed (exit {proc.returncode})")


def source_digest(source: Path) -> str:
    """SHA-256 over the names and contents of the files a build would copy."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="llm-relay-src-") as tmp:
        # copytree with the build's ignore rules lists exactly the files a build sees.
        copy = Path(tmp) / "src"
        shutil.copytree(source, copy, ignore=SOURCE_IGNORE)
        for path in sorted(p for p in copy.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(copy)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_relay_wheel(source: Path, cache: Path) -> Path:
    """The relay wheel, built reproducibly from a copy of its source; reused while the source is unchanged."""
    out = cache / "relay" / source_digest(source)
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) == 1:
        return wheels[0]
    env = dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH, PYTHONDONTWRITEBYTECODE="1")
    with tempfile.TemporaryDirectory(prefix="llm-relay-src-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(source, src, ignore=SOURCE_IGNORE)
        pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(Path(tmp) / "out"), str(src), env=env)
        built = sorted((Path(tmp) / "out").glob("*.whl"))
        if len(built) != 1:
            raise SystemExit(f"expected one wheel from {source}, got {[w.name for w in built]}")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        shutil.copy2(built[0], out / built[0].name)
    return out / built[0].name


def given_wheel(path: Path) -> Path:
    """A built relay wheel (the one an installed collection carries): used as it is, never rebuilt."""
    if not path.is_file() or path.suffix != ".whl":
        raise SystemExit(f"--wheel {path}: no such wheel file")
    return path


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(name).decode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def platform_tags(arch: str, glibc: str) -> list[str]:
    """Every manylinux tag a target with this glibc accepts (pip does not expand --platform itself)."""
    major, minor = (int(part) for part in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{arch}" for m, name in legacy.items() if m <= minor]
    return tags


def download_deps(args: argparse.Namespace, relay_wheel: Path, requires: list[str]) -> Path:
    """Dependency wheels for the target's tags, downloaded once per key."""
    constraints = Path(args.constraints).read_text() if args.constraints else ""
    target_id = [args.python_version, args.arch, args.glibc, args.extra_pip_args]
    key_src = json.dumps(
        [DEPS_FORMAT, sorted(requires), sorted(args.extra_requirements), constraints, *target_id]
    )
    deps = Path(args.cache) / "deps" / hashlib.sha256(key_src.encode()).hexdigest()[:16]
    if (deps / ".complete").exists():
        return deps
    tmp = deps.with_name(deps.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    target = ["--only-binary=:all:", "--implementation", "cp", "--python-version", args.python_version]
    for platform in platform_tags(args.arch, args.glibc):
        target += ["--platform", platform]
    extra = ["--constraint", args.constraints] if args.constraints else []
    pip(
        "download",
        "--quiet",
        "--dest",
        str(tmp),
        *target,
        *extra,
        *args.extra_pip_args,
        "--find-links",
        str(relay_wheel.parent),
        str(relay_wheel),
        *args.extra_requirements,
        "pip",  # the installer the target runs from its wheel (pure Python); constraints may pin it
    )
    (tmp / relay_wheel.name).unlink(missing_ok=True)
    (tmp / ".complete").touch()
    shutil.rmtree(deps, ignore_errors=True)
    tmp.rename(deps)
    return deps


def requirement_line(wheel: Path) -> str:
    meta = wheel_metadata(wheel)
    return f"{meta['Name']}=={meta['Version']}"


def is_pip(wheel: Path) -> bool:
    return wheel.name.startswith("pip-")


def assemble(cache: Path, relay_wheel: Path, deps: Path) -> tuple[Path, str, list[str], bool]:
    wheels = sorted([relay_wheel, *deps.glob("*.whl")], key=lambda w: w.name)
    if sum(map(is_pip, wheels)) != 1:
        raise SystemExit(f"expected one pip wheel among the dependencies, got {[w.name for w in wheels]}")
    listing = "".join(f"{sha256_file(w)}  {w.name}\n" for w in wheels)
    sha = hashlib.sha256(listing.encode()).hexdigest()
    bundle = cache / "bundles" / sha[:16]
    if (bundle / "requirements.txt").exists() and bundle.with_suffix(".tar").exists():
        return bundle, sha, [w.name for w in wheels], False
    tmp = bundle.with_name(bundle.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for wheel in wheels:
        shutil.copy2(wheel, tmp / wheel.name)
    (tmp / "SHA256SUMS").write_text(listing)
    installed = [w for w in wheels if not is_pip(w)]
    (tmp / "requirements.txt").write_text("".join(requirement_line(w) + "\n" for w in installed))
    tar_tmp = bundle.with_name(bundle.name + ".tar.partial")
    with tarfile.open(tar_tmp, "w") as tar:
        for member in sorted(tmp.iterdir()):
            tar.add(member, arcname=member.name)
    shutil.rmtree(bundle, ignore_errors=True)
    tar_tmp.rename(bundle.with_suffix(".tar"))
    tmp.rename(bundle)
    return bundle, sha, [w.name for w in wheels], True


def prune(cache: Path, keep: Path, count: int = 5) -> None:
    """Drop all but the `count` newest bundles (the one just used always stays)."""
    bundles = [p for p in (cache / "bundles").glob("*") if p.is_dir()]
    bundles.sort(key=lambda p: p.stat().st_mtime)
    for old in bundles[:-count]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
            old.with_suffix(".tar").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    origin = parser.add_mutually_exclusive_group(required=True)
    origin.add_argument("--source", help="relay package source directory (a checkout's relay/)")
    origin.add_argument("--wheel", help="a built llm_relay wheel (the one the collection carries)")
    parser.add_argument("--cache", required=True, help="controller cache directory")
    parser.add_argument(
        "--wheel-only", action="store_true", help="only build or locate the relay wheel, print its path"
    )
    parser.add_argument("--python-version", help="target Python, e.g. 3.11")
    parser.add_argument("--arch", help="target machine, e.g. x86_64 or aarch64")
    parser.add_argument("--glibc", help="target glibc version, e.g. 2.36 (Debian 12)")
    parser.add_argument("--constraints", default="", help="pip constraints file pinning dependencies")
    parser.add_argument(
        "--extra-requirement",
        dest="extra_requirements",
        action="append",
        default=[],
        help="extra requirement installed with the relay (e.g. uvloop)",
    )
    parser.add_argument("--extra-pip-arg", dest="extra_pip_args", action="append", default=[])
    args = parser.parse_args()
    if not args.wheel_only:
        target = ("python_version", "arch", "glibc")
        missing = [f"--{n.replace('_', '-')}" for n in target if not getattr(args, n)]
        if missing:
            parser.error(f"a bundle needs the target: {', '.join(missing)}")

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    relay_wheel = given_wheel(Path(args.wheel)) if args.wheel else build_relay_wheel(Path(args.source), cache)
    meta = wheel_metadata(relay_wheel)
    if args.wheel_only:
        found = {"relay_wheel": str(relay_wheel), "name": meta["Name"], "version": meta["Version"]}
        json.dump(found, sys.stdout)
        return
    requires = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    deps = download_deps(args, relay_wheel, requires)
    bundle, sha, wheels, changed = assemble(cache, relay_wheel, deps)
    bundle.touch()
    prune(cache, bundle)
    json.dump(
        {
            "bundle": str(bundle),
            "archive": str(bundle.with_suffix(".tar")),
            "sha256": sha,
            "name": meta["Name"],
            "version": meta["Version"],
            "relay_wheel": str(relay_wheel),
            "wheels": wheels,
            "pip_wheel": next(w for w in wheels if w.startswith("pip-")),
            "changed": changed,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
