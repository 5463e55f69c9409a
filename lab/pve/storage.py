"""The storages of a fresh PVE install, on every node: `local` (type dir: iso, vztmpl, backup) holds the
templates, `local-lvm` (type lvmthin: rootdir, images) the containers' root disks, with PVE's volume ids
(`local-lvm:vm-100-disk-0`). Both are backed by one directory per node on this machine: templates under
template/cache, a root disk (a thin LV mounted, in PVE) under images/<vmid>/subvol-<vmid>-disk-N."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from lab.pve.errors import ApiError

TEMPLATE_RE_PREFIX = "debian-12-standard_"
# storage id -> (type, content), as a fresh install's /etc/pve/storage.cfg (content listed sorted, as
# PVE prints it).
STORAGES: dict[str, tuple[str, frozenset[str]]] = {
    "local": ("dir", frozenset({"iso", "vztmpl", "backup"})),
    "local-lvm": ("lvmthin", frozenset({"rootdir", "images"})),
}


def content_string(storage_id: str) -> str:
    return ",".join(sorted(STORAGES[storage_id][1]))


class NodeStorage:
    def __init__(self, root: Path, storage_id: str, total_gib: int, rootdir_id: str = "local-lvm") -> None:
        self.root = root
        self.id = storage_id  # the template storage (`local`)
        self.rootdir_id = rootdir_id
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
        return f"{self.rootdir_id}:vm-{vmid}-disk-{disk}"

    def free_volume(self, vmid: int) -> None:
        shutil.rmtree(self.root / "images" / str(vmid), ignore_errors=True)

    def usage(self) -> dict[str, int]:
        used = sum(f.stat().st_size for f in self.template_dir.iterdir() if f.is_file())
        return {"total": self.total, "used": used, "avail": max(0, self.total - used)}

    def content(self, storage_id: str, kind: str | None, vmid: int | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if storage_id == self.id and kind in (None, "vztmpl") and vmid is None:
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
        if storage_id == self.rootdir_id and kind in (None, "rootdir", "images"):
            for d in sorted((self.root / "images").glob("*/subvol-*")):
                owner = int(d.parent.name)
                if vmid is not None and owner != vmid:
                    continue
                disk = int(d.name.rsplit("-", 1)[1])
                out.append(
                    {
                        "volid": self.volid(owner, disk),
                        "content": "rootdir",
                        "format": "raw",
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
