"""Container configuration as PVE keeps it: property strings, the digest-checked update with
hot-plug vs [pending] for running containers, and the GET config / pending views."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from lab.pve import schema
from lab.pve.errors import ApiError
from lab.pve.state import Container
from lab.pve.tasks import TaskFailed

CREATE = ("/nodes/{node}/lxc", "POST")
# Options PVE changes on a running container at once (the rest wait in [pending] until the next start).
FASTPLUG = {"description", "onboot", "startup", "protection", "tags", "hookscript", "lock", "timezone"}
HOTPLUG = {"memory", "swap", "cores", "cpulimit", "cpuunits"}


def _random_mac() -> str:
    # Proxmox's OUI, like the MACs PVE generates.
    return "BC:24:11:" + ":".join(f"{b:02X}" for b in secrets.token_bytes(3))


def print_property_string(values: dict[str, Any], first: str | None = None) -> str:
    def fmt(v: Any) -> str:
        return ("1" if v else "0") if isinstance(v, bool) else str(v)

    keys = ([first] if first in values else []) + sorted(k for k in values if k != first)
    return ",".join(f"{k}={fmt(values[k])}" for k in keys)


def stored_description(text: str) -> str | None:
    """The description as PVE reads it back: pve-container src/PVE/LXC/Config.pm writes it as one `#`
    comment line per line (Perl split, so trailing empty lines are dropped) and parses each comment
    line back with a newline. "a" -> "a\\n", "a\\n\\n" -> "a\\n"; nothing left -> no description."""
    lines = str(text).split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    return "".join(line + "\n" for line in lines) or None


def _wire(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


class ConfigOps:
    """Mixed into Pve: needs self.state, self.backend, self.storages and self.ct_state()."""

    def nets(self, conf: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {k: schema.property_string(*CREATE, k, v) for k, v in conf.items() if k.startswith("net")}

    def features(self, conf: dict[str, Any]) -> dict[str, Any]:
        return schema.property_string(*CREATE, "features", conf["features"]) if conf.get("features") else {}

    def normalize_net(self, key: str, value: str, old: str | None = None) -> str:
        net = schema.property_string(*CREATE, key, value)
        if "hwaddr" not in net:
            prev = schema.property_string(*CREATE, key, old) if old else {}
            net["hwaddr"] = prev.get("hwaddr") or _random_mac()
        net.setdefault("type", "veth")
        return print_property_string(net, "name")

    @staticmethod
    def split_deletes(p: dict[str, Any]) -> list[str]:
        return schema.formats.split_list(p.get("delete", "")) if p.get("delete") else []

    async def update_config(self, ct: Container, p: dict[str, Any]) -> None:
        if p.get("digest") and p["digest"] != ct.digest():
            raise ApiError(500, "detected modified configuration - file changed by other user? Try again.")
        deletes = self.split_deletes(p)
        changes = {k: v for k, v in p.items() if k not in ("node", "vmid", "digest", "delete", "revert")}
        if "lock" in changes or "lock" in deletes:
            # `lock` is the config lock itself (PVE keeps it as `lock:` in the config file): setting it locks
            # the CT; it can only be set on an unlocked CT, the handler checked that.
            ct.lock = changes.pop("lock", None)
            deletes = [d for d in deletes if d != "lock"]
        for opt in sorted(set(deletes) & set(changes)):
            raise schema.ParamError({"delete": f"you can't use '-{opt}' and -delete {opt}' at the same time"})
        for key in deletes:
            if key in ("rootfs", "arch", "ostype"):
                raise ApiError(500, f"unable to delete required option '{key}'")
        if "rootfs" in changes:
            raise ApiError(500, "unable to modify read-only option: 'rootfs'")
        if "description" in changes:
            changes["description"] = stored_description(changes["description"])
        view = self.state.with_pending(ct)
        for key, value in list(changes.items()):
            if key.startswith("net"):
                changes[key] = self.normalize_net(key, value, view.get(key))
        running = (await self.ct_state(ct.vmid))[0] == "running"
        live: dict[str, Any] = {}
        for key, value in [*((k, None) for k in deletes), *changes.items()]:
            if not running or key in FASTPLUG:
                target = ct.conf
            elif key in HOTPLUG:
                target, live[key] = ct.conf, value
            else:
                ct.pending[key] = value
                continue
            ct.pending.pop(key, None)
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
        self.state.save()
        if live:
            try:
                await self.backend.apply_limits(ct.vmid, ct.conf)
            except TaskFailed as exc:
                raise ApiError(500, f"unable to hot-plug {', '.join(sorted(live))}: {exc}") from None
        if self.backend.exists(ct.vmid):
            volume = self.storages[ct.node].volume_dir(ct.vmid)
            conf = dict(ct.conf, vmid=ct.vmid, _features=self.features(ct.conf))
            await asyncio.to_thread(self.backend.write_config, ct.vmid, conf, self.nets(ct.conf), volume)

    def apply_pending(self, ct: Container) -> None:
        if ct.pending:
            ct.conf = self.state.with_pending(ct)
            ct.pending = {}
            self.state.save()

    def pending_view(self, ct: Container) -> list[dict[str, Any]]:
        out = []
        for key in sorted(set(ct.conf) | set(ct.pending)):
            item: dict[str, Any] = {"key": key}
            if key in ct.conf:
                item["value"] = _wire(ct.conf[key])
            if key in ct.pending:
                if ct.pending[key] is None:
                    item["delete"] = 1
                else:
                    item["pending"] = _wire(ct.pending[key])
            out.append(item)
        return out

    def config_view(self, ct: Container, current: bool = False) -> dict[str, Any]:
        conf = ct.conf if current else self.state.with_pending(ct)
        out: dict[str, Any] = {key: _wire(value) for key, value in conf.items()}
        if ct.lock:
            out["lock"] = ct.lock
        out["digest"] = ct.digest()
        return out
