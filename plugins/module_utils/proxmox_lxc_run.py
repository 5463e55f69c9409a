# The run of proxmox_lxc: find the container, create it (template, storage, nextid), update it, wait for
# its lock, change its run state, remove it; the result and diff. The config model is proxmox_lxc_config.py.

from __future__ import annotations

import ipaddress
import time

from ansible_collections.llm_relay.homelab.plugins.module_utils.proxmox import (
    ApiError,
    ProxmoxError,
    TaskFailed,
)
from ansible_collections.llm_relay.homelab.plugins.module_utils.proxmox_lxc_config import (
    SIMPLE_KEYS,
    Failure,
    api_failure,
    api_param_name,
    compare,
    create_params,
    desired_config,
    normalise_config,
    predicted_config,
    public_config,
    update_params,
)

SHUTDOWN_GRACE = 30


class LxcRun:
    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.params = module.params
        self.check = module.check_mode
        self.timeout = self.params["timeout"]
        self.changed = False
        self.actions = []
        self.pending = []
        self.diff_before, self.diff_after = {}, {}

    # -- lookups -----------------------------------------------------------------------------------
    def find(self):
        """The container's /cluster/resources entry (by vmid, else hostname) or None.

        Only its vmid, node and type are trusted: the cluster's vmlist is current, but PVE fills name and
        status from what each node's pvestatd last broadcast (every 10 s), so a container created
        moments ago has no name yet and a status can be a round old. Power decisions read status/current.
        """
        vmid, hostname = self.params["vmid"], self.params["hostname"]
        resources = self.client.get("cluster/resources", type="vm") or []
        if vmid is not None:
            for res in resources:
                if int(res.get("vmid", -1)) == vmid:
                    if res.get("type") != "lxc":
                        raise Failure(
                            f"vmid: {vmid} is a {res.get('type')} guest on {res.get('node')}, not a container"
                        )
                    name = self.name_of(res) if hostname else None
                    if name not in (None, hostname):
                        raise Failure(
                            f"vmid: VM {vmid} already exists as container {name!r}"
                            f" on {res.get('node')};"
                            f" refusing to take it over as {hostname!r} (choose another vmid, or omit it)"
                        )
                    return res
            return None
        matches = [r for r in resources if r.get("type") == "lxc" and self.name_of(r) == hostname]
        if len(matches) > 1:
            found = ", ".join(f"{r['vmid']} on {r.get('node')}" for r in matches)
            raise Failure(f"hostname: {len(matches)} containers are named {hostname!r} ({found}); set vmid")
        return matches[0] if matches else None

    def name_of(self, res):
        """The container's host name. One no status round has carried yet has no name in
        /cluster/resources: its config says (None when that cannot be read: removed meanwhile, or its
        node cannot be asked)."""
        if res.get("name") is not None:
            return res["name"]
        try:
            return self.client.get(f"nodes/{res['node']}/lxc/{res['vmid']}/config").get("hostname")
        except ApiError:
            return None

    def current_status(self, node, vmid):
        """The run state PVE reads from the container itself (status/current), not the cluster's view."""
        try:
            return self.client.get(f"nodes/{node}/lxc/{vmid}/status/current").get("status", "stopped")
        except ApiError as exc:
            raise api_failure(exc, "status") from None

    def read_config(self, node, vmid):
        raw = self.client.get(f"nodes/{node}/lxc/{vmid}/config")
        return raw, normalise_config(raw)

    def wait_unlocked(self, node, vmid, lock):
        """Wait until the container's config lock is released: PVE refuses config changes on a locked
        container and fails its power and destroy tasks, and the locks users meet (a nightly backup, a
        snapshot, a migration, a create still running) end by themselves."""
        if self.check:
            self.module.warn(f"container {vmid} is locked ({lock}); a real run waits up to {self.timeout}s")
            return
        started = time.monotonic()
        try:
            while lock:
                if time.monotonic() - started > self.timeout:
                    raise Failure(
                        f"vmid: container {vmid} on {node} is still locked ({lock}) after {self.timeout}s:"
                        " a backup, snapshot, migration or create holds it; run again when it ends (or, if"
                        f" the lock is stale, `pct unlock {vmid}` on {node})",
                        lock=lock,
                    )
                time.sleep(1)
                try:
                    lock = self.client.get(f"nodes/{node}/lxc/{vmid}/config").get("lock")
                except ApiError:
                    if self.find() is not None:
                        raise
                    lock = None  # the lock was its removal: the caller finds it gone
        finally:
            self.client.wait_seconds += time.monotonic() - started
        self.actions.append(f"waited {time.monotonic() - started:.0f}s for the lock of {vmid} to be released")

    def task(self, upid, what):
        for warning in self.client.wait_task(upid, self.timeout, what):
            self.module.warn(warning)

    # -- create ------------------------------------------------------------------------------------
    def resolve_node(self):
        node = self.params["node"]
        if not node:
            raise Failure("node: required to create a container (none with this vmid/hostname exists)")
        nodes = [n.get("node") for n in self.client.get("nodes") or []]
        if node not in nodes:
            raise Failure(f"node: {node!r} is not a node of this cluster (nodes: {', '.join(sorted(nodes))})")
        return node

    def resolve_template(self, node):
        """The template's volume id on its storage, downloading it through aplinfo when allowed."""
        ostemplate = self.params["ostemplate"]
        if not ostemplate:
            raise Failure("ostemplate: required to create a container")
        if ":" in ostemplate:
            storage, _sep, path = ostemplate.partition(":")
            name = path.rpartition("/")[2]
        else:
            storage, name = self.params["template_storage"], ostemplate
        volid = f"{storage}:vztmpl/{name}"
        try:
            content = self.client.get(f"nodes/{node}/storage/{storage}/content", content="vztmpl") or []
        except ApiError as exc:
            raise Failure(
                f"ostemplate: cannot list templates on storage {storage!r} of {node}: {exc.msg}"
            ) from None
        have = sorted(c.get("volid") for c in content if c.get("volid"))
        if volid in have:
            return volid
        if not self.params["template_download"]:
            listing = ", ".join(have) or "no templates"
            raise Failure(
                f"ostemplate: {volid} is not on storage {storage!r} of {node} (it has: {listing});"
                " set template_download: true to fetch it from the appliance index"
            )
        index = self.client.get(f"nodes/{node}/aplinfo") or []
        if not any(a.get("template") == name for a in index):
            offer = ", ".join(sorted(a.get("template") for a in index if "debian" in str(a.get("template"))))
            raise Failure(
                f"ostemplate: {name!r} is not in {node}'s appliance index (Debian ones: {offer or 'none'})"
            )
        self.actions.append(f"downloaded {name}")
        if not self.check:
            upid = self.client.call("POST", f"nodes/{node}/aplinfo", storage=storage, template=name)
            self.task(upid, f"download of {name}")
        return volid

    def default_storage(self, node):
        """First enabled storage of the node that holds container volumes (local-lvm/local-zfs preferred)."""
        try:
            stores = self.client.get(f"nodes/{node}/storage", content="rootdir", enabled=1) or []
        except ApiError:
            return "local"
        names = [s.get("storage") for s in stores if s.get("active", 1)]
        for preferred in ("local-lvm", "local-zfs"):
            if preferred in names:
                return preferred
        if not names:
            raise Failure(
                f"disk.storage: node {node} has no enabled storage for container volumes; set disk.storage"
            )
        return names[0]

    def create(self):
        params = self.params
        if not params["hostname"]:
            raise Failure("hostname: required to create a container")
        want = desired_config(params, creating=True)
        node = self.resolve_node()
        ostemplate = self.resolve_template(node)
        if not want["disk"].get("storage"):
            want["disk"]["storage"] = self.default_storage(node)
        self.changed = True
        self.diff_after = {k: v for k, v in want.items() if k != "pool"}
        if self.check:
            self.actions.append("would create")
            return node, params["vmid"], want
        vmid = params["vmid"]
        for attempt in range(5):
            if params["vmid"] is None:
                vmid = int(self.client.get("cluster/nextid"))
            data = create_params(want, vmid, node, ostemplate, params)
            try:
                upid = self.client.call("POST", f"nodes/{node}/lxc", **data)
                break
            except ApiError as exc:
                # Lost the race at nextid (400, errors.vmid) or inside create_vm's check_vmid_unused
                # (a plain 500 "CT N already exists on node 'X'", no errors dict).
                taken = "already exists" in str(exc.errors.get("vmid", "")) or (
                    exc.status == 500 and f"CT {vmid} already exists on node" in str(exc)
                )
                if taken and params["vmid"] is None and attempt < 4:
                    continue  # another client took the id nextid gave us: ask again
                raise api_failure(exc, "create") from None
        try:
            self.task(upid, f"create of {vmid}")
        except TaskFailed as exc:
            cleanup = self.remove_failed(node, vmid)
            raise Failure(exc.msg, vmid=vmid, node=node, cleanup=cleanup, **task_details(exc)) from None
        self.actions.append(f"created {vmid} on {node}")
        return node, vmid, None

    def remove_failed(self, node, vmid):
        """A failed create must leave nothing: destroy whatever the task left behind."""
        try:
            self.client.get(f"nodes/{node}/lxc/{vmid}/status/current")
        except ApiError:
            return "nothing left to remove"
        try:
            upid = self.client.call(
                "DELETE", f"nodes/{node}/lxc/{vmid}", purge=1, force=1, **{"destroy-unreferenced-disks": 1}
            )
            self.client.wait_task(upid, self.timeout, f"removal of failed {vmid}")
            return "removed the half-made container"
        except ProxmoxError as exc:
            return f"could not remove the half-made container {vmid}: {exc.msg}"

    # -- update ------------------------------------------------------------------------------------
    def update(self, res, raw, current):
        node, vmid = res["node"], int(res["vmid"])
        want = desired_config(self.params, creating=False)
        want.pop("hostname", None)  # identity, never "changed"
        if "pool" in want:
            current = dict(current, pool=res.get("pool"))
        changes, create_only = compare(current, want)
        for key, (before, after) in create_only.items():
            self.module.warn(
                f"{key}: the container has {before!r}, you asked for {after!r}; {key} is set only when a"
                " container"
                " is created (this module does not change it on an existing one)"
            )
        if not changes:
            return current
        self.changed = True
        self.diff_before.update({k: b for k, (b, _a) in changes.items()})
        self.diff_after.update({k: a for k, (_b, a) in changes.items()})
        self.actions.append(f"{'would update' if self.check else 'updated'} {vmid} ({', '.join(changes)})")
        if self.check:
            return predicted_config(current, want)
        put, delete = update_params(current, changes)
        if delete:
            put["delete"] = ",".join(delete)
        try:
            self.client.call("PUT", f"nodes/{node}/lxc/{vmid}/config", digest=raw.get("digest"), **put)
        except ApiError as exc:
            raise api_failure(exc, "update") from None
        return None

    def read_pending(self, node, vmid):
        try:
            items = self.client.get(f"nodes/{node}/lxc/{vmid}/pending") or []
            keys = [i.get("key", "") for i in items if "pending" in i or i.get("delete")]
        except ApiError as exc:
            if exc.status not in (404, 501):
                raise
            # Servers without /pending: the config with pending values against the running one.
            with_pending = self.client.get(f"nodes/{node}/lxc/{vmid}/config")
            running = self.client.get(f"nodes/{node}/lxc/{vmid}/config", current=1)
            keys = [
                k
                for k in set(with_pending) | set(running)
                if k != "digest" and with_pending.get(k) != running.get(k)
            ]
        names = []
        for key in sorted(keys):
            if key:
                name = api_param_name(key)
                name = {v: k for k, v in SIMPLE_KEYS.items()}.get(key, name)
                if name not in names:
                    names.append(name)
        return names

    # -- run state ---------------------------------------------------------------------------------
    def power(self, node, vmid, action, what):
        self.changed = True
        self.actions.append(("would " if self.check else "") + what)
        if self.check:
            return
        path = f"nodes/{node}/lxc/{vmid}/status/{action}"
        extra = {"forceStop": 1, "timeout": SHUTDOWN_GRACE} if action == "shutdown" else {}
        try:
            upid = self.client.call("POST", path, **extra)
        except ApiError as exc:
            raise api_failure(exc, action) from None
        self.task(upid, f"{action} of {vmid}")

    def wait_for_addresses(self, node, vmid, netifs):
        """Addresses from /interfaces; waits up to timeout until each interface with an ip has an IPv4."""
        expected = {n["name"] for n in netifs if n and n.get("ip") and n.get("ip") != "manual"}
        started = time.monotonic()
        try:
            while True:
                addresses, v4_on = interface_addresses(
                    self.client.get(f"nodes/{node}/lxc/{vmid}/interfaces") or []
                )
                missing = expected - v4_on
                if not missing or self.check:
                    return addresses
                if time.monotonic() - started > self.timeout:
                    self.module.warn(f"no IPv4 address on {', '.join(sorted(missing))} after {self.timeout}s")
                    return addresses
                time.sleep(0.5)
        finally:
            self.client.wait_seconds += time.monotonic() - started

    def run(self):
        params = self.params
        state = params["state"]
        res = self.find()
        if state == "absent":
            return self.absent(res)
        if res is None:
            node, vmid, predicted = self.create()
            status = "stopped"
        else:
            node, vmid = res["node"], int(res["vmid"])
            if params["node"] and params["node"] != node:
                self.module.warn(
                    f"node: container {vmid} is on {node}, not {params['node']}; it is managed there"
                )
            raw, current = self.read_config(node, vmid)
            if raw.get("lock"):
                self.wait_unlocked(node, vmid, raw["lock"])
                if not self.check:  # what held the lock may have changed the container: read it again
                    res = self.find()
                    if res is None:
                        raise Failure(
                            f"vmid: container {vmid} was removed while its lock was awaited; run again"
                        )
                    raw, current = self.read_config(node, vmid)
            predicted = self.update(res, raw, current)
            status = self.current_status(node, vmid)
        was = status
        if state == "started" and status != "running":
            self.power(node, vmid, "start", f"started {vmid or params['hostname']}")
            status = "running"
        elif state == "stopped" and status == "running":
            self.power(node, vmid, "shutdown", f"stopped {vmid}")
            status = "stopped"
        elif state == "restarted":
            action = "reboot" if status == "running" else "start"
            self.power(node, vmid, action, f"restarted {vmid}")
            status = "running"
        if status == "running" and was == "running" and vmid is not None and not self.check:
            self.pending = self.read_pending(node, vmid)
            if self.pending and params["restart_on_change"] and state != "restarted":
                self.power(node, vmid, "reboot", f"rebooted {vmid} to apply {', '.join(self.pending)}")
                self.pending = self.read_pending(node, vmid)
        if was != status:
            self.diff_before["status"] = was if res is not None else "absent"
            self.diff_after["status"] = status
        if self.check and predicted is not None:
            config = predicted
        else:
            config = self.read_config(node, vmid)[1] if vmid is not None else {}
        addresses = []
        if status == "running" and vmid is not None and state in ("started", "restarted", "present"):
            wait_on = config.get("netif", []) if state != "present" else []
            addresses = self.wait_for_addresses(node, vmid, wait_on) if not self.check or res else []
        return self.result(
            vmid, node, config.get("hostname") or params["hostname"], status, config, addresses
        )

    def absent(self, res):
        if res is None:
            self.actions.append(
                f"no container {self.params['vmid'] or self.params['hostname']}: nothing to remove"
            )
            return self.result(
                self.params["vmid"], self.params["node"], self.params["hostname"], "absent", {}, []
            )
        node, vmid = res["node"], int(res["vmid"])
        raw, current = self.read_config(node, vmid)
        if raw.get("lock"):
            self.wait_unlocked(node, vmid, raw["lock"])
            if not self.check:
                res = self.find()
                if res is None:  # what held the lock was its removal
                    return self.absent(None)
                raw, current = self.read_config(node, vmid)
        status = self.current_status(node, vmid)
        self.changed = True
        self.diff_before = dict(public_config(current), status=status)
        self.diff_after = {"status": "absent"}
        self.actions.append(f"{'would remove' if self.check else 'removed'} {vmid} from {node}")
        if not self.check:
            if status == "running":
                upid = self.client.call("POST", f"nodes/{node}/lxc/{vmid}/status/stop")
                self.task(upid, f"stop of {vmid}")
            try:
                upid = self.client.call(
                    "DELETE", f"nodes/{node}/lxc/{vmid}", purge=1, **{"destroy-unreferenced-disks": 1}
                )
            except ApiError as exc:
                raise api_failure(exc, "delete") from None
            self.task(upid, f"removal of {vmid}")
        return self.result(vmid, node, current.get("hostname"), "absent", {}, [])

    def result(self, vmid, node, hostname, status, config, addresses):
        msg = "; ".join(self.actions) if self.actions else f"{vmid or hostname} is as wanted"
        if self.pending:
            msg += f"; pending until next start: {', '.join(self.pending)} (restart_on_change applies them)"
        return dict(
            changed=self.changed,
            vmid=vmid,
            node=node,
            hostname=hostname,
            status=status,
            config=public_config(config) if config else {},
            ip_addresses=addresses,
            pending=self.pending,
            diff=dict(before=self.diff_before, after=_public_diff(self.diff_after)),
            msg=msg,
        )


def _public_diff(values):
    if "netif" in values:
        values = dict(values, netif=public_config({"netif": values["netif"]})["netif"])
    return values


def task_details(exc):
    """What a failed task adds to the failure result: its id, exit status and last log lines."""
    return {
        "upid": exc.upid,
        "exitstatus": exc.exitstatus,
        "task_log": exc.log_lines,
        "task_wait_s": exc.waited,
    }


def interface_addresses(interfaces):
    """→ (addresses IPv4 first without loopback/link-local, names of interfaces that have an IPv4)."""
    v4, v6, v4_on = [], [], set()
    for iface in interfaces:
        name = iface.get("name")
        if name == "lo":
            continue
        found = [a.get("ip-address") for a in iface.get("ip-addresses") or [] if a.get("ip-address")]
        for key in ("inet", "inet6"):
            if iface.get(key):
                found.append(str(iface[key]).split("/", maxsplit=1)[0])
        for text in found:
            try:
                addr = ipaddress.ip_address(text.split("/")[0])
            except ValueError:
                continue
            if addr.is_loopback or addr.is_link_local:
                continue
            target = v4 if addr.version == 4 else v6
            if str(addr) not in target:
                target.append(str(addr))
            if addr.version == 4:
                v4_on.add(name)
    return v4 + v6, v4_on
