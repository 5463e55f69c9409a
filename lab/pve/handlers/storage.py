"""Storage listing/content and the appliance index (aplinfo): the template cache as PVE shows it."""

from __future__ import annotations

import hashlib
from typing import Any

from lab.pve.api import Call, route
from lab.pve.errors import ApiError
from lab.pve.schema import ParamError
from lab.pve.service import size_bytes
from lab.pve.storage import STORAGES, content_string, sha512
from lab.pve.tasks import Task, TaskFailed
from lab.template.build import cached_template


def _store(call: Call):
    if call.params["storage"] not in STORAGES:
        raise ApiError(500, f"storage '{call.params['storage']}' does not exist")
    return call.pve.storages[call.params["node"]]


@route("GET", "/nodes/{node}/storage")
async def list_storage(call: Call) -> list[dict[str, Any]]:
    """Storage/Status.pm index: only storages the caller has Datastore.Audit or .AllocateSpace on."""
    p = call.params
    store = call.pve.storages[p["node"]]
    out = []
    for sid, (kind, content) in STORAGES.items():
        if p.get("storage") not in (None, sid):
            continue
        if p.get("content") and not set(p["content"].split(",")) <= content:
            continue
        if not call.perms.check_any(f"/storage/{sid}", ["Datastore.Audit", "Datastore.AllocateSpace"], True):
            continue
        use = store.usage()
        fraction = round(use["used"] / use["total"], 6) if use["total"] else 0
        out.append(
            {
                "storage": sid,
                "type": kind,
                "content": content_string(sid),
                "active": 1,
                "enabled": 1,
                "shared": 0,
                **use,
                "used_fraction": fraction,
            }
        )
    return out


@route("GET", "/nodes/{node}/storage/{storage}")
async def storage_index(call: Call) -> list[dict[str, str]]:
    _store(call)
    return [
        {"subdir": s}
        for s in (
            "content",
            "download-url",
            "file-restore",
            "import-metadata",
            "prunebackups",
            "rrd",
            "rrddata",
            "status",
            "upload",
        )
    ]


@route("GET", "/nodes/{node}/storage/{storage}/content")
async def content(call: Call) -> list[dict[str, Any]]:
    p = call.params
    sizes = {v: size_bytes(c.conf.get("rootfs", "")) for v, c in call.pve.state.containers.items()}
    return _store(call).content(p["storage"], p.get("content"), p.get("vmid"), sizes)


def _appliances() -> list[dict[str, Any]]:
    template = cached_template()
    if template is None:
        return []
    name = template.name
    package, version = name.removesuffix("_amd64.tar.zst").split("_", 1)
    return [
        {
            "template": name,
            "package": package,
            "version": version,
            "type": "lxc",
            "os": "debian-12",
            "section": "system",
            "headline": "Debian 12 Bookworm (standard)",
            "description": "Debian 12 standard system (lab build: systemd, openssh-server, no python3)",
            "maintainer": "llm-relay lab",
            "architecture": "amd64",
            "infopage": "https://pve.proxmox.com/wiki/Linux_Container",
            "location": f"http://download.proxmox.com/images/system/{name}",
            "source": f"http://download.proxmox.com/images/system/{name}",
            "sha512sum": sha512(template),
        }
    ]


@route("GET", "/nodes/{node}/aplinfo")
async def aplinfo(call: Call) -> list[dict[str, Any]]:
    return _appliances()


@route("POST", "/nodes/{node}/aplinfo")
async def aplinfo_download(call: Call) -> str:
    store = _store(call)
    if "vztmpl" not in STORAGES[call.params["storage"]][1]:
        raise ApiError(500, f"storage '{call.params['storage']}' does not support templates")
    name = call.params["template"]
    if not any(a["template"] == name for a in _appliances()):
        # pve-manager PVE/API2/Nodes.pm apl_download.
        raise ParamError({"template": "no such template"})
    source = cached_template()
    pve = call.pve

    async def work(task: Task) -> None:
        task.log(f"starting template download from: http://download.proxmox.com/images/system/{name}")
        task.log(f"target file: {store.template_dir / name}")
        if pve.fault("storage_full", "download"):
            task.log(f"write failed: {store.template_dir / name}: No space left on device")
            raise TaskFailed(f"download failed: {name}: No space left on device")
        store.install_template(source)  # type: ignore[arg-type]
        task.log(f"{source.stat().st_size} bytes copied")  # type: ignore[union-attr]
        task.log("download of template finished")

    return pve.tasks.start(call.params["node"], "download", name, call.user, work).upid


# --- /storage: the cluster's storage.cfg (pve-storage src/PVE/API2/Storage/Config.pm) -----------------

# A fresh install's /etc/pve/storage.cfg beyond type and content, as PVE stores it.
STORAGE_CFG_EXTRA = {"local": {"path": "/var/lib/vz"}, "local-lvm": {"thinpool": "data", "vgname": "pve"}}


def _storage_cfg_digest() -> str:
    text = ""
    for sid, (kind, _content) in STORAGES.items():
        text += f"{kind}: {sid}\n" + f"\tcontent {content_string(sid)}\n"
        text += "".join(f"\t{k} {v}\n" for k, v in STORAGE_CFG_EXTRA.get(sid, {}).items()) + "\n"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _storage_config(sid: str) -> dict[str, Any]:
    """api_storage_config: the section's options, its id, the file's digest, content as a sorted list."""
    kind, _content = STORAGES[sid]
    return {
        "storage": sid,
        "type": kind,
        "content": content_string(sid),
        "digest": _storage_cfg_digest(),
        **STORAGE_CFG_EXTRA.get(sid, {}),
    }


@route("GET", "/storage")
async def storage_config_index(call: Call) -> list[dict[str, Any]]:
    """Config.pm index: only storages the caller has Datastore.Audit or .AllocateSpace on."""
    out = []
    for sid, (kind, _content) in STORAGES.items():
        if not call.perms.check_any(f"/storage/{sid}", ["Datastore.Audit", "Datastore.AllocateSpace"], True):
            continue
        if call.params.get("type") not in (None, kind):
            continue
        out.append(_storage_config(sid))
    return out


@route("GET", "/storage/{storage}")
async def storage_config_read(call: Call) -> dict[str, Any]:
    sid = call.params["storage"]
    if sid not in STORAGES:
        # PVE::Storage::storage_config.
        raise ApiError(500, f"storage '{sid}' does not exist")
    return _storage_config(sid)
