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

# src/PVE/Storage/Plugin.pm: the content directories a dir storage's volume names start with.
VOLUME_TYPES = ("images", "rootdir", "iso", "vztmpl", "backup", "snippets", "import")
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

    def check_template_volume(self, volid: str, is_root: bool) -> None:
        """pve-storage src/PVE/Storage.pm check_volume_access(..., 'vztmpl'), which create_vm runs in the
        call (pve-container src/PVE/API2/LXC.pm): the volume id must parse on its storage and be a
        template; whether the file exists is only found out by the create task."""
        storage, sep, rest = volid.partition(":")
        if not sep:
            # Not a volume id: a file system path, which only root@pam may pass (Perl's die without a
            # newline adds where it died).
            if not is_root:
                where = "at /usr/share/perl5/PVE/Storage.pm line 651."
                raise ApiError(500, f"Only root can pass arbitrary filesystem paths. {where}")
            return
        if storage not in STORAGES:
            raise ApiError(500, f"storage '{storage}' does not exist")
        if storage == self.rootdir_id:
            # src/PVE/Storage/LvmThinPlugin.pm parse_volname: only vm-/base- disks live there.
            raise ApiError(500, f"unable to parse lvm volume name '{rest}'")
        kind, _, name = rest.partition("/")
        if kind not in VOLUME_TYPES or not name:
            # src/PVE/Storage/Plugin.pm parse_volname of a dir storage.
            raise ApiError(500, f"unable to parse directory volume name '{rest}'")
        if kind != "vztmpl":
            raise ApiError(500, f"unable to use volume {volid} - content type needs to be 'vztmpl'")

    def template_file(self, volid: str) -> Path | None:
        """The file of a template volume checked by check_template_volume; None when it does not exist
        (or is a path: the lab serves templates from its storages only)."""
        storage, sep, rest = volid.partition(":")
        name = rest.partition("/")[2]
        if not sep or storage != self.id or "/" in name:
            return None
        path = self.template_dir / name
        return path if path.is_file() else None

    def volume_dir(self, vmid: int, disk: int = 0) -> Path:
        return self.root / "images" / str(vmid) / f"subvol-{vmid}-disk-{disk}"

    def volid(self, vmid: int, disk: int = 0) -> str:
        return f"{self.rootdir_id}:vm-{vmid}-disk-{disk}"

    def free_volume(self, vmid: int) -> None:
        shutil.rmtree(self.root / "images" / str(vmid), ignore_errors=True)

    def usage(self) -> dict[str, int]:
        used = sum(f.stat().st_size for f in self.template_dir.iterdir() if f.is_file())
        return {"total": self.total, "used": used, "avail": max(0, self.total - used)}

    def content(
        self, storage_id: str, kind: str | None, vmid: int | None, sizes: dict[int, int] | None = None
    ) -> list[dict[str, Any]]:
        """`sizes`: each container's root disk size in bytes (the thin volume's virtual size, what
        pve-storage src/PVE/Storage/LvmThinPlugin.pm list_images reports as `size`)."""
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
                        "size": (sizes or {}).get(owner, 0),
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
