"""The container-specific permission checks PVE makes beyond the schema's `permissions`.

Sources (pve-container): src/PVE/LXC.pm `check_ct_modify_config_perm` and `check_bridge_access`,
src/PVE/API2/LXC.pm `create_vm`; pve-storage `check_volume_access`; the vnet check of
PVE::GuestHelpers (`/sdn/zones/localnetwork/<bridge>`, SDN.Use, when the bridge is no SDN vnet).
"""

from __future__ import annotations

import re
from typing import Any

from lab.pve import schema
from lab.pve.configs import CREATE
from lab.pve.permcheck import Checker, denied

NEW_DISK_RE = re.compile(r"^(?:([^:\s]+):)?(\d+(?:\.\d+)?)$")
_CPU = {"cores", "cpuunits", "cpulimit"}
_NETWORK = {"nameserver", "searchdomain", "hostname"}


def _features(value: str | None) -> dict[str, Any]:
    return schema.property_string(*CREATE, "features", value) if value else {}


def _features_changed(old: str | None, new: str | None, delete: bool) -> tuple[bool, bool]:
    """(nesting_changed, other_changed), as LXC.pm compares old and new feature strings."""
    if delete:
        feats = _features(old)
        only_nesting = len(feats) == 1 and bool(feats.get("nesting"))
        return only_nesting, bool(feats) and not only_nesting
    feats = _features(new)
    if old:
        before = _features(old)
        nesting = other = False
        for key in set(before) | set(feats):
            if str(before.get(key, "")) != str(feats.get(key, "")):
                if key == "nesting":
                    nesting = True
                else:
                    return nesting, True
        return nesting, other
    only_nesting = len(feats) == 1 and bool(feats.get("nesting"))
    return only_nesting, bool(feats) and not only_nesting


def check_bridge(checker: Checker, raw: str) -> None:
    if checker.is_root:
        return
    net = schema.property_string(*CREATE, "net0", raw)
    bridge, tag = net.get("bridge"), net.get("tag")
    if not bridge:
        return
    path = f"/sdn/zones/localnetwork/{bridge}"
    if tag in (None, ""):
        checker.check(path, ["SDN.Use"])
    elif not checker.check_any(path, ["SDN.Use"], noerr=True):
        checker.check_any(f"{path}/{tag}", ["SDN.Use"])


def check_modify_config(
    checker: Checker,
    vmid: int,
    old: dict[str, Any] | None,
    new: dict[str, Any],
    delete: list[str],
    unprivileged: bool,
) -> None:
    """LXC.pm check_ct_modify_config_perm: one privilege per key; root@pam-only keys refused for others."""
    if checker.is_root:
        return
    old = old or {}
    for opt, deleting in [*((k, False) for k in new), *((k, True) for k in delete)]:
        if opt in _CPU:
            checker.check_vm_perm(vmid, ["VM.Config.CPU"])
        elif opt == "rootfs" or re.fullmatch(r"mp\d+", opt):
            checker.check_vm_perm(vmid, ["VM.Config.Disk"])
            if deleting:
                continue
            volume = str(schema.property_string(*CREATE, opt, new[opt]).get("volume", ""))
            if volume.startswith("/"):
                raise denied("mount point type bind is only allowed for root@pam")
            match = NEW_DISK_RE.match(volume)
            if match and match[1]:
                checker.check(f"/storage/{match[1]}", ["Datastore.AllocateSpace"])
        elif opt in ("memory", "swap"):
            checker.check_vm_perm(vmid, ["VM.Config.Memory"])
        elif re.fullmatch(r"net\d+", opt):
            checker.check_vm_perm(vmid, ["VM.Config.Network"])
            if old.get(opt):
                check_bridge(checker, old[opt])
            if not deleting and new.get(opt):
                check_bridge(checker, new[opt])
        elif re.fullmatch(r"dev\d+", opt):
            raise denied("configuring device passthrough is only allowed for root@pam")
        elif opt in _NETWORK:
            checker.check_vm_perm(vmid, ["VM.Config.Network"])
        elif opt == "features":
            if not unprivileged:
                raise denied("changing feature flags for privileged container is only allowed for root@pam")
            nesting, other = _features_changed(old.get(opt), new.get(opt), deleting)
            if other:
                raise denied("changing feature flags (except nesting) is only allowed for root@pam")
            if nesting:
                checker.check_vm_perm(vmid, ["VM.Allocate"])
        elif opt == "hookscript":
            raise denied("changing the hookscript is only allowed for root@pam")
        else:
            # tags included: GuestHelpers::assert_tag_permissions asks VM.Config.Options for plain tags.
            checker.check_vm_perm(vmid, ["VM.Config.Options"])


def check_volume_access(checker: Checker, volid: str) -> None:
    """pve-storage check_volume_access for an ostemplate (vztmpl): read access to its storage."""
    if checker.is_root:
        return
    sid = volid.partition(":")[0]
    if checker.check(f"/storage/{sid}", ["Datastore.Allocate"], noerr=True):
        return
    checker.check_any(f"/storage/{sid}", ["Datastore.AllocateSpace", "Datastore.Audit"])


def check_create(checker: Checker, p: dict[str, Any]) -> None:
    """API2/LXC.pm create_vm, up to the storage checks (those need the storage config: service.py)."""
    vmid = p["vmid"]
    unprivileged = p.get("unprivileged", True)
    if not unprivileged:
        checker.check("/", ["Sys.Modify"])
    if p.get("pool") is not None:
        raise denied(f"pool '{p['pool']}' does not exist")  # the lab has no pools
    if not checker.check(f"/vms/{vmid}", ["VM.Allocate"], noerr=True):
        raise denied()
    consumed = {
        "node", "vmid", "ignore-unpack-errors", "bwlimit", "start", "ha-managed", "unprivileged", "restore",
        "unique", "force", "password", "ssh-public-keys", "pool", "ostemplate", "storage",
    }  # fmt: skip
    config = {k: v for k, v in p.items() if k not in consumed}
    check_modify_config(checker, vmid, None, config, [], bool(unprivileged))
    check_volume_access(checker, str(p["ostemplate"]))
