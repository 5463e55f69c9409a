# Tasks written for community.proxmox's `proxmox` module: its option names that mean the same here are
# aliases in proxmox_lxc's spec (memory, swap, pubkey); the ones whose type or meaning differs are caught
# here, before AnsibleModule would refuse them with a bare type error, and answered with how to write them.

from __future__ import annotations


def _disk(value):
    storage, _sep, size = str(value).rpartition(":")
    if storage and size.isdigit():
        return f"disk: {{storage: {storage}, size_gb: {size}}}"
    return "disk: {storage: STORAGE, size_gb: SIZE}"


def community_proxmox_forms(raw):
    """{option: message} for every value in `raw` (the task's arguments) written the community.proxmox way."""
    found = {}
    if isinstance(raw.get("disk"), str):
        found["disk"] = (
            f"disk: {raw['disk']!r} is community.proxmox's 'STORAGE:SIZE' string; here disk is a dict,"
            f" write {_disk(raw['disk'])}"
        )
    if isinstance(raw.get("netif"), dict):
        found["netif"] = (
            "netif: community.proxmox's {net0: 'name=eth0,bridge=vmbr0,ip=dhcp'} is a dict of property"
            " strings; here netif is a list of dicts whose position is the index, write"
            " netif: [{name: eth0, bridge: vmbr0, ip: dhcp}]"
        )
    if isinstance(raw.get("startup"), (list, str)):
        found["startup"] = (
            "startup: community.proxmox's list of 'order=N,up=N,down=N' strings; here startup is a dict,"
            " write startup: {order: 1, up: 30, down: 60}"
        )
    if "disk_volume" in raw:
        found["disk_volume"] = (
            "disk_volume: community.proxmox's option is disk here,"
            " write disk: {storage: STORAGE, size_gb: SIZE}"
        )
    if "storage" in raw:
        found["storage"] = "storage: community.proxmox's option is disk.storage here (with disk.size_gb)"
    if "update" in raw:
        found["update"] = (
            "update: not an option here; an existing container is always brought to the options given"
            " (check mode shows what would change)"
        )
    return found
