"""The relay role's controller-side bundle builder: what goes into a bundle and its requirements.txt.

The whole builder (pip download for the target's tags, then the install on a container without PyPI)
runs in the molecule and site suites; these tests pin the bundle's shape offline.
"""

from __future__ import annotations

import importlib.util
import tarfile
import zipfile
from pathlib import Path

import pytest

BUILDER = Path(__file__).resolve().parents[2] / "roles" / "relay" / "files" / "build_wheel_bundle.py"


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("build_wheel_bundle", BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_wheel(directory: Path, name: str, version: str) -> Path:
    path = directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        zf.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", metadata)
    return path


def test_pip_wheel_travels_in_the_bundle_but_is_not_installed(builder, tmp_path):
    relay = fake_wheel(tmp_path, "llm-relay", "0.1.0")
    deps = tmp_path / "deps"
    deps.mkdir()
    for name, version in (("httptools", "0.6.4"), ("pip", "26.3"), ("uvloop", "0.23.0")):
        fake_wheel(deps, name, version)
    bundle, sha, wheels, changed = builder.assemble(tmp_path / "cache", relay, deps)
    assert changed and len(sha) == 64
    assert "pip-26.3-py3-none-any.whl" in wheels
    requirements = (bundle / "requirements.txt").read_text().splitlines()
    assert requirements == ["httptools==0.6.4", "llm-relay==0.1.0", "uvloop==0.23.0"]
    with tarfile.open(bundle.with_suffix(".tar")) as tar:
        assert "pip-26.3-py3-none-any.whl" in tar.getnames()
    assert builder.assemble(tmp_path / "cache", relay, deps)[3] is False  # same wheels: same bundle


def test_a_bundle_without_pip_is_refused(builder, tmp_path):
    relay = fake_wheel(tmp_path, "llm-relay", "0.1.0")
    deps = tmp_path / "deps"
    deps.mkdir()
    fake_wheel(deps, "httptools", "0.6.4")
    with pytest.raises(SystemExit, match="one pip wheel"):
        builder.assemble(tmp_path / "cache", relay, deps)
