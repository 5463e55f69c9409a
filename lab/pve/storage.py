"""Storage `local` (type dir) on every node: templates under template/cache, container volumes under
images/<vmid>/subvol-<vmid>-disk-N. Both nodes are backed by directories on this machine."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from lab.pve.errors import ApiError

CONTENT = "vztmpl,rootdir,iso,backup,images"
TEMPLATE_RE_PREFIX = "debian-12-standard_"


class NodeStorage:
    def __init__(self, root: Path, storage_id: str, total_gib: int) -> None:
        self.root = root
        self.id = storage_id
        self.total = total_gib * 1024**3
        (root / "template" / "cache").mkdir(parents=True, exist_ok=True)
        (root / "images").mkdir(parents=True, exist_ok=True)

    @property
    def template_dir(self) -> Path:
        return self.root / "template" / "cache"

    def template_path(self, volid: str) -> Path:
        """`local:vztmpl/NAME` → its file; ApiError like PVE when absent or malformed."""
        storage, _, rest = volid.partition(":")
        if storage != self.id:
            raise ApiError(500, f"storage '{storage}' does not exist")
        kind, _, name = rest.partition("/")
        if kind != "vztmpl" or not name or "/" in name:
            raise ApiError(500, f"unable to parse volume ID '{volid}'")
        path = self.template_dir / name
        if not path.is_file():
            raise ApiError(500, f"volume '{volid}' does not exist")
        return path

    def volume_dir(self, vmid: int, disk: int = 0) -> Path:
        return self.root / "images" / str(vmid) / f"subvol-{vmid}-disk-{disk}"

    def volid(self, vmid: int, disk: int = 0) -> str:
        return f"{self.id}:{vmid}/subvol-{vmid}-disk-{disk}.subvol"

    def free_volume(self, vmid: int) -> None:
        shutil.rmtree(self.root / "images" / str(vmid), ignore_errors=True)

    def usage(self) -> dict[str, int]:
        used = sum(f.stat().st_size for f in self.template_dir.iterdir() if f.is_file())
        return {"total": self.total, "used": used, "avail": max(0, self.total - used)}

    def content(self, kind: str | None, vmid: int | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if kind in (None, "vztmpl") and vmid is None:
            for f in sorted(self.template_dir.iterdir()):
                if f.is_file() and f.name.endswith((".tar.zst", ".tar.gz", ".tar.xz")):
                    st = f.stat()
                    out.append(
                        {
                            "volid": f"{self.id}:vztmpl/{f.name}",
                            "content": "vztmpl",
                            "format": "t" + f.name.rsplit(".", 1)[1],
                            "size": st.st_size,
                            "ctime": int(st.st_mtime),
                        }
                    )
        if kind in (None, "rootdir", "images"):
            for d in sorted((self.root / "images").glob("*/subvol-*")):
                owner = int(d.parent.name)
                if vmid is not None and owner != vmid:
                    continue
                disk = int(d.name.rsplit("-", 1)[1])
                out.append(
                    {
                        "volid": self.volid(owner, disk),
                        "content": "rootdir",
                        "format": "subvol",
                        "size": 0,
                        "used": 0,
                        "vmid": owner,
                        "ctime": int(d.stat().st_mtime),
                    }
                )
        return out

    def install_template(self, source: Path) -> Path:
        """Put a template into this storage (hardlink from the cache when possible)."""
        target = self.template_dir / source.name
        tmp = target.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        tmp.replace(target)
        return target


def sha512(path: Path) -> str:
    """sha512 of a template, cached next to it (the build never rewrites a tarball in place)."""
    cache = path.with_name(path.name + ".sha512")
    if cache.exists() and cache.stat().st_mtime >= path.stat().st_mtime:
        return cache.read_text().strip()
    digest = hashlib.sha512()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    cache.write_text(digest.hexdigest() + "\n")
    return digest.hexdigest()
