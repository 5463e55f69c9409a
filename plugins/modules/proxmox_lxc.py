#!/usr/bin/python
# Manage the lifecycle of a Proxmox VE LXC container through proxmoxer: idempotent, check and diff mode.

DOCUMENTATION = r"""
module: proxmox_lxc
short_description: Create, configure, start, stop and remove Proxmox VE LXC containers
description:
  - Manages one LXC container on a Proxmox VE cluster through its HTTPS API (proxmoxer).
  - The container is found by O(vmid) or, when no vmid is given, by O(hostname) across the whole cluster.
  - On an existing container only the options you set are managed; the module reads the configuration,
    normalises both sides and sends only the keys that differ (with the configuration digest, so a
    concurrent change is refused rather than overwritten), deleting options you emptied.
  - Proxmox tasks are polled; a failed task fails the module at once with its exit status and the last
    lines of its log. A failed create leaves no container behind.
  - "Runs on the controller (C(delegate_to: localhost)); the target needs no Python."
version_added: "1.0.0"
author:
  - llm-relay maintainers (@llm-relay)
extends_documentation_fragment:
  - llm_relay.homelab.proxmox_auth
attributes:
  check_mode:
    support: full
    description: Reports exactly what would change and calls no write endpoint.
  diff_mode:
    support: full
    description: Before/after of the normalised configuration, limited to the keys that change.
options:
  state:
    description:
      - V(present) makes sure the container exists with the given configuration, leaving it running or not.
      - V(started) also starts it (and waits for its DHCP address, see O(timeout)).
      - V(stopped) shuts it down cleanly (forced after 30 s).
      - V(restarted) reboots a running container or starts a stopped one; always reports a change.
      - V(absent) stops it and destroys it with its volumes, purging it from backup/HA/replication jobs.
    type: str
    choices: [present, started, stopped, restarted, absent]
    default: started
  vmid:
    description:
      - The container's id. When given it identifies the container.
      - When omitted on create, the cluster's next free id is used (retried if another client takes it first).
      - If the vmid belongs to a container with another O(hostname), the module fails rather than take
        it over.
    type: int
  hostname:
    description:
      - Host name of the container. Without O(vmid) it identifies the container across the cluster;
        two containers with that name are an error.
      - Required to create a container.
    type: str
  node:
    description:
      - Node to create the container on. Required to create.
      - An existing container is managed where it is; if that is another node, a warning says so
        (this module does not migrate).
    type: str
  ostemplate:
    description:
      - Template to create from, as a volume id V(storage:vztmpl/file) or a bare file name found on
        O(template_storage). Required to create; ignored for an existing container.
    type: str
  template_storage:
    description:
      - Storage that holds templates given as bare file names, and where O(template_download) puts them.
    type: str
    default: local
  template_download:
    description:
      - When O(ostemplate) is not on the storage, download it through the node's appliance index (C(aplinfo)).
      - When false, a missing template fails with the list of templates the storage has.
    type: bool
    default: false
  disk:
    description:
      - Root filesystem. Applied at create only; a different storage or size on an existing container gives a
        warning (this module does not move or resize volumes).
      - Defaults to 8 GiB on the node's first storage that holds container volumes (C(local-lvm) preferred).
    type: dict
    suboptions:
      storage:
        description: Storage id for the root volume.
        type: str
      size_gb:
        description: Size in GiB.
        type: int
  netif:
    description:
      - Network interfaces; the list position is the interface index (first entry is C(net0)).
      - Defaults on create to one interface V(eth0) on V(vmbr0) with DHCP.
      - Interfaces beyond the list's length are removed from an existing container; a sub-option you drop
        is removed from the interface. The generated MAC address is kept unless you set O(netif[].hwaddr).
    type: list
    elements: dict
    suboptions:
      name:
        description: Interface name inside the container. Defaults to V(eth<index>).
        type: str
      bridge:
        description: Host bridge to attach to.
        type: str
        default: vmbr0
      ip:
        description: V(dhcp), V(manual) or an IPv4 address with prefix length, for example V(10.87.0.50/24).
        type: str
      gw:
        description: IPv4 gateway (with a static O(netif[].ip)).
        type: str
      ip6:
        description: V(auto), V(dhcp), V(manual) or an IPv6 address with prefix length.
        type: str
      gw6:
        description: IPv6 gateway.
        type: str
      vlan:
        description: VLAN tag (PVE's C(tag)), 1 to 4094.
        type: int
      firewall:
        description: Put the interface behind the PVE firewall.
        type: bool
      mtu:
        description: MTU, 64 to 65535.
        type: int
      rate:
        description: Rate limit in MB/s.
        type: float
      hwaddr:
        description: MAC address. Left to Proxmox (and kept) when not set.
        type: str
  features:
    description:
      - Enabled container features, from V(nesting), V(keyctl), V(fuse), V(mknod), V(force_rw_sys) and
        V(mount=fstype;fstype). An empty list removes all features.
      - Defaults on create to V([nesting]) for an unprivileged container, which systemd in Debian 12 needs.
      - Proxmox lets only V(root@pam) logged in with its password (O(api_password)) set any feature but
        V(nesting), or any feature of a privileged container. API tokens, those of V(root@pam) included, are
        refused with HTTP 403 C(Permission check failed). Changing V(nesting) needs C(VM.Allocate).
    type: list
    elements: str
  ssh_public_keys:
    description:
      - Public keys (OpenSSH format) for root, installed at create. One key as a string is taken too,
        so community.proxmox's C(pubkey) works unchanged.
      - Proxmox cannot report them back, so they are not compared on an existing container.
    type: list
    elements: str
    aliases: [pubkey]
  password:
    description:
      - Root password set at create. Never logged. Like O(ssh_public_keys), not compared afterwards.
    type: str
  cores:
    description: Number of CPU cores. Default on create V(1).
    type: int
  memory_mb:
    description: Memory in MiB. Default on create V(512).
    type: int
    aliases: [memory]
  swap_mb:
    description: Swap in MiB. Default on create V(512).
    type: int
    aliases: [swap]
  unprivileged:
    description:
      - Run the container unprivileged. Set at create only (default V(true)); a different value on an
        existing container gives a warning.
    type: bool
  onboot:
    description: Start the container when its node boots.
    type: bool
  startup:
    description: Start/shutdown order and delays. An empty dict removes the setting.
    type: dict
    suboptions:
      order:
        description: Start order (shutdown runs in reverse).
        type: int
      up:
        description: Seconds to wait after starting this container before starting the next.
        type: int
      down:
        description: Seconds to wait for this container to shut down.
        type: int
  tags:
    description:
      - Tags. Compared as a set, so order and separators never cause a change. An empty list removes them.
    type: list
    elements: str
  description:
    description: Notes shown in the web interface. An empty string removes them.
    type: str
  nameserver:
    description: DNS servers. Without O(nameserver) and O(searchdomain) the host's settings are used.
    type: list
    elements: str
  searchdomain:
    description: DNS search domains.
    type: list
    elements: str
  timezone:
    description: Time zone, V(host) or a zone such as V(Europe/Paris). An empty string removes the setting.
    type: str
  pool:
    description: Resource pool to add the container to at create. A different pool later gives a warning.
    type: str
  restart_on_change:
    description:
      - When Proxmox keeps changes pending until the next start (for example features of a running container),
        reboot the container so they apply. Otherwise they are only reported in RV(pending).
    type: bool
    default: false
  timeout:
    description:
      - Seconds to wait for each Proxmox task (create, start, stop, delete, download) and, after a start,
        for the DHCP addresses of the container's interfaces.
      - Also how long to wait for the config lock of an existing container (held by a backup, snapshot,
        migration or another create) to be released before changing it; the module fails naming the lock
        if it is still held then.
    type: int
    default: 120
notes:
  - The hostname identifies the container; renaming is not done by this module.
  - Volumes are neither moved nor resized; password and SSH keys apply at create only.
  - "Coming from community.proxmox's C(proxmox) module, option by option (theirs -> here):"
  - "C(memory), C(swap), C(pubkey) -> the same names work (aliases of O(memory_mb), O(swap_mb),
    O(ssh_public_keys)); E(PROXMOX_API_TIMEOUT) is read for O(api_timeout)."
  - "C(disk: 'local-lvm:8') (a string) or C(disk_volume: {storage: local-lvm, size: 8}) ->
    O(disk) V({storage: local-lvm, size_gb: 8}); C(storage) -> O(disk.storage)."
  - "C(netif: {net0: 'name=eth0,bridge=vmbr0,ip=dhcp'}) (a dict of strings) -> O(netif)
    V([{name: eth0, bridge: vmbr0, ip: dhcp}]) (a list of dicts; the position is the index)."
  - "C(startup: ['order=1', 'up=30']) (strings) -> O(startup) V({order: 1, up: 30})."
  - "C(nameserver), C(searchdomain) (one space-separated string) -> the same names; a string is taken,
    a list too. C(features: ['nesting=1']) is taken as is (V(nesting) alone means the same)."
  - "Default C(state): V(present) there (created, left stopped) -> V(started) here; write
    O(state=present) for their behaviour. C(update: true) -> not needed (an existing container is always
    updated); C(timeout) (default 30) -> O(timeout) (default 120)."
  - The options whose type differs fail with a message saying how to write them here, rather than being
    read another way.
seealso:
  - name: Proxmox VE API viewer
    description: The API this module calls.
    link: https://pve.proxmox.com/pve-docs/api-viewer/
"""

EXAMPLES = r"""
- name: Minimal container (Debian 12, 8 GiB, eth0 on vmbr0 with DHCP, 1 core, 512 MiB), started
  llm_relay.homelab.proxmox_lxc:
    api_host: pve1.example.com
    api_user: root@pam
    api_token_id: ansible
    api_token_secret: "{{ vault_pve_token_secret }}"
    ca_path: /etc/ssl/pve-root-ca.pem
    node: pve1
    hostname: relay1
    ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst
  delegate_to: localhost
  register: ct

- name: Use its address
  ansible.builtin.debug:
    msg: "relay1 is {{ ct.vmid }} at {{ ct.ip_addresses | first }}"

- name: Fully specified container, template fetched when missing
  llm_relay.homelab.proxmox_lxc:
    api_host: pve1.example.com
    api_user: root@pam
    api_password: "{{ vault_pve_password }}"
    node: pve1
    vmid: 120
    hostname: relay2
    ostemplate: debian-12-standard_12.7-1_amd64.tar.zst
    template_download: true
    disk: {storage: local-lvm, size_gb: 16}
    netif:
      - {name: eth0, bridge: vmbr0, ip: 192.168.1.20/24, gw: 192.168.1.1, firewall: true}
    features: [nesting, keyctl]
    ssh_public_keys: ["{{ lookup('file', '~/.ssh/id_ed25519.pub') }}"]
    cores: 2
    memory_mb: 1024
    swap_mb: 0
    onboot: true
    startup: {order: 2, up: 15}
    tags: [relay, llm]
    nameserver: [192.168.1.1]
    timezone: host
  delegate_to: localhost

# keyctl and fuse: root@pam's password login only (Proxmox refuses them to API tokens).
- name: Grow memory and apply pending changes by rebooting
  llm_relay.homelab.proxmox_lxc:
    api_host: pve1.example.com
    api_user: root@pam
    api_password: "{{ vault_pve_password }}"
    hostname: relay2
    memory_mb: 2048
    features: [nesting, keyctl, fuse]
    restart_on_change: true
  delegate_to: localhost

- name: Stop it
  llm_relay.homelab.proxmox_lxc:
    api_host: pve1.example.com
    api_user: root@pam
    api_token_id: ansible
    api_token_secret: "{{ vault_pve_token_secret }}"
    vmid: 120
    state: stopped
  delegate_to: localhost

- name: Remove it with its volumes
  llm_relay.homelab.proxmox_lxc:
    api_host: pve1.example.com
    api_user: root@pam
    api_token_id: ansible
    api_token_secret: "{{ vault_pve_token_secret }}"
    hostname: relay2
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
vmid:
  description: Id of the container (null in check mode when it would be created without a given vmid).
  returned: always
  type: int
  sample: 120
node:
  description: Node the container is on.
  returned: always
  type: str
  sample: pve1
hostname:
  description: Host name of the container.
  returned: always
  type: str
  sample: relay2
status:
  description: Run state after the module ran, V(running), V(stopped) or V(absent).
  returned: always
  type: str
  sample: running
config:
  description:
    - The container's configuration, normalised into this module's option names (empty when absent).
  returned: always
  type: dict
  sample:
    hostname: relay2
    cores: 2
    memory_mb: 1024
    swap_mb: 0
    unprivileged: true
    onboot: true
    startup: {order: 2, up: 15}
    tags: [llm, relay]
    features: [keyctl, nesting]
    disk: {storage: local-lvm, size_gb: 16, volume: "local-lvm:vm-120-disk-0"}
    netif:
      - {name: eth0, bridge: vmbr0, hwaddr: "BC:24:11:2F:3A:4B", ip: 192.168.1.20/24, gw: 192.168.1.1,
         firewall: true}
    nameserver: [192.168.1.1]
    searchdomain: []
    timezone: host
    description: ""
    ostype: debian
    arch: amd64
ip_addresses:
  description:
    - Addresses of the running container from Proxmox's interface list, IPv4 first, loopback and
      link-local left out. After a start the module waits up to O(timeout) for each DHCP interface to get one.
  returned: always
  type: list
  elements: str
  sample: [192.168.1.20]
pending:
  description: Option names whose change Proxmox applies only at the next start of the container.
  returned: always
  type: list
  elements: str
  sample: [features]
changed:
  description: Whether anything changed (or would, in check mode).
  returned: always
  type: bool
diff:
  description: Before/after of the normalised configuration, limited to the keys that change (plus C(status)).
  returned: always
  type: dict
  sample: {before: {memory_mb: 1024, tags: [relay]}, after: {memory_mb: 2048, tags: [llm, relay]}}
msg:
  description:
    - What was done, in a sentence; on failure it starts with the option at fault, such as C(netif[0].ip).
  returned: always
  type: str
  sample: "updated 120 (memory_mb, tags)"
api_status:
  description: HTTP status of the API's refusal.
  returned: when the API refused a call
  type: int
  sample: 400
api_errors:
  description: PVE's per-parameter error messages, keyed by PVE parameter name.
  returned: when the API refused a call
  type: dict
  sample: {net0: "invalid format - format error"}
upid:
  description: Id of the Proxmox task that failed.
  returned: when a Proxmox task failed
  type: str
  sample: "UPID:pve1:00001234:00005678:6B000000:vzcreate:120:root@pam!ansible:"
exitstatus:
  description: The failed task's exit status (V(timeout) when it outlived O(timeout)).
  returned: when a Proxmox task failed
  type: str
  sample: "unable to create CT 120 - no space left on device"
task_log:
  description: The last lines of the failed task's log.
  returned: when a Proxmox task failed
  type: list
  elements: str
lock:
  description: The config lock that was still held when the module gave up waiting (see O(timeout)).
  returned: when the container stayed locked
  type: str
  sample: backup
task_wait_s:
  description: Seconds the module spent waiting on the failed task before it noticed the failure.
  returned: when a Proxmox task failed
  type: float
  sample: 0.25
cleanup:
  description: What was done about the container a failed create left behind.
  returned: when a create task failed
  type: str
  sample: removed the half-made container
"""

from ansible.module_utils.basic import AnsibleModule, _load_params
from ansible_collections.llm_relay.homelab.plugins.module_utils.proxmox import (
    PROXMOX_AUTH_MUTUALLY_EXCLUSIVE,
    PROXMOX_AUTH_REQUIRED_ONE_OF,
    PROXMOX_AUTH_REQUIRED_TOGETHER,
    ProxmoxClient,
    ProxmoxError,
    TaskFailed,
    proxmox_auth_argument_spec,
)
from ansible_collections.llm_relay.homelab.plugins.module_utils.proxmox_lxc_compat import (
    community_proxmox_forms,
)
from ansible_collections.llm_relay.homelab.plugins.module_utils.proxmox_lxc_config import Failure
from ansible_collections.llm_relay.homelab.plugins.module_utils.proxmox_lxc_run import LxcRun, task_details


def argument_spec():
    spec = proxmox_auth_argument_spec()
    spec.update(
        state=dict(
            type="str", default="started", choices=["present", "started", "stopped", "restarted", "absent"]
        ),
        vmid=dict(type="int"),
        hostname=dict(type="str"),
        node=dict(type="str"),
        ostemplate=dict(type="str"),
        template_storage=dict(type="str", default="local"),
        template_download=dict(type="bool", default=False),
        disk=dict(type="dict", options=dict(storage=dict(type="str"), size_gb=dict(type="int"))),
        netif=dict(
            type="list",
            elements="dict",
            options=dict(
                name=dict(type="str"),
                bridge=dict(type="str", default="vmbr0"),
                ip=dict(type="str"),
                gw=dict(type="str"),
                ip6=dict(type="str"),
                gw6=dict(type="str"),
                vlan=dict(type="int"),
                firewall=dict(type="bool"),
                mtu=dict(type="int"),
                rate=dict(type="float"),
                hwaddr=dict(type="str"),
            ),
        ),
        features=dict(type="list", elements="str"),
        ssh_public_keys=dict(type="list", elements="str", no_log=False, aliases=["pubkey"]),
        password=dict(type="str", no_log=True),
        cores=dict(type="int"),
        memory_mb=dict(type="int", aliases=["memory"]),
        swap_mb=dict(type="int", aliases=["swap"]),
        unprivileged=dict(type="bool"),
        onboot=dict(type="bool"),
        startup=dict(
            type="dict", options=dict(order=dict(type="int"), up=dict(type="int"), down=dict(type="int"))
        ),
        tags=dict(type="list", elements="str"),
        description=dict(type="str"),
        nameserver=dict(type="list", elements="str"),
        searchdomain=dict(type="list", elements="str"),
        timezone=dict(type="str"),
        pool=dict(type="str"),
        restart_on_change=dict(type="bool", default=False),
        timeout=dict(type="int", default=120),
    )
    return spec


def main():
    spec = argument_spec()
    # Values in community.proxmox's form for options of another type here: accepted by the spec just long
    # enough to say which option differs and how to write it.
    foreign = community_proxmox_forms(_load_params() or {})
    spec.update({name: dict(type="raw") for name in foreign})
    module = AnsibleModule(
        argument_spec=spec,
        required_one_of=[("vmid", "hostname"), *PROXMOX_AUTH_REQUIRED_ONE_OF],
        required_together=PROXMOX_AUTH_REQUIRED_TOGETHER,
        mutually_exclusive=PROXMOX_AUTH_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    if foreign:
        module.fail_json(msg="; ".join(foreign[name] for name in sorted(foreign)))
    try:
        client = ProxmoxClient(module.params)
        result = LxcRun(module, client).run()
    except Failure as exc:
        module.fail_json(msg=exc.msg, **exc.extra)
    except TaskFailed as exc:
        module.fail_json(msg=exc.msg, **task_details(exc))
    except ProxmoxError as exc:
        module.fail_json(msg=exc.msg, api_status=exc.status, api_errors=exc.errors)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
