"""Normalising a PVE container config and computing the minimal update from the module's options."""

from __future__ import annotations

import pytest
from ansible_collections.llm_relay.homelab.plugins.module_utils import proxmox_lxc_config as lxc_config
from ansible_collections.llm_relay.homelab.plugins.module_utils import proxmox_lxc_run as lxc_run
from ansible_collections.llm_relay.homelab.plugins.modules import proxmox_lxc

# What a real PVE 9 answers for a container this module created with its defaults plus a few options.
RAW = {
    "arch": "amd64",
    "cores": 1,
    "digest": "0f3c1c8e9d2a",
    "features": "nesting=1",
    "hostname": "relay1",
    "memory": 512,
    "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2F:3A:4B,ip=dhcp,type=veth",
    "onboot": 1,
    "ostype": "debian",
    "rootfs": "local:9100/vm-9100-disk-0.raw,size=8G",
    "swap": 512,
    "tags": "relay;llm",
    "unprivileged": 1,
    "description": "relay container\n",
}


def params(**overrides):
    """Module params as AnsibleModule hands them over: every option present, unset ones None."""
    base = dict.fromkeys(proxmox_lxc.argument_spec())
    base.update(overrides)
    return base


def test_normalise():
    cfg = lxc_config.normalise_config(RAW)
    assert cfg["tags"] == ["llm", "relay"]
    assert cfg["features"] == ["nesting"]
    assert cfg["onboot"] is True and cfg["unprivileged"] is True
    assert cfg["description"] == "relay container"
    assert cfg["disk"]["storage"] == "local" and cfg["disk"]["size_gb"] == 8
    assert cfg["netif"] == [{"name": "eth0", "bridge": "vmbr0", "hwaddr": "BC:24:11:2F:3A:4B", "ip": "dhcp"}]


def test_normalise_fills_pve_defaults():
    cfg = lxc_config.normalise_config({"hostname": "x"})
    assert (cfg["memory_mb"], cfg["swap_mb"], cfg["onboot"], cfg["unprivileged"]) == (512, 512, False, False)
    assert cfg["tags"] == [] and cfg["netif"] == [] and cfg["startup"] == {}


def test_same_options_no_change():
    current = lxc_config.normalise_config(RAW)
    want = lxc_config.desired_config(
        params(
            cores=1,
            memory_mb=512,
            tags=["llm", "relay"],
            features=["nesting"],
            netif=[{"name": "eth0", "bridge": "vmbr0", "ip": "dhcp"}],
            onboot=True,
            description="relay container",
        ),
        creating=False,
    )
    assert lxc_config.compare(current, want) == ({}, {})


def test_tag_order_and_separators_never_change():
    current = lxc_config.normalise_config(RAW)
    for tags in (["relay", "llm"], ["llm;relay"], ["relay,llm"]):
        assert lxc_config.compare(current, lxc_config.desired_config(params(tags=tags), creating=False)) == (
            {},
            {},
        )


def test_memory_and_tag_change_names_only_those():
    current = lxc_config.normalise_config(RAW)
    want = lxc_config.desired_config(
        params(memory_mb=1024, tags=["llm", "relay", "blue"], cores=1), creating=False
    )
    changes, create_only = lxc_config.compare(current, want)
    assert set(changes) == {"memory_mb", "tags"} and create_only == {}
    put, delete = lxc_config.update_params(current, changes)
    assert put == {"memory": 1024, "tags": "blue;llm;relay"} and delete == []


def test_removed_netif_suboption_and_interface():
    raw = dict(
        RAW,
        net0="name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2F:3A:4B,ip=dhcp,firewall=1,trunks=5;6,type=veth",
        net1="name=eth1,bridge=vmbr1,hwaddr=BC:24:11:00:00:02,ip=manual,type=veth",
    )
    current = lxc_config.normalise_config(raw)
    want = lxc_config.desired_config(
        params(netif=[{"name": "eth0", "bridge": "vmbr0", "ip": "dhcp"}]), creating=False
    )
    changes, _create_only = lxc_config.compare(current, want)
    assert set(changes) == {"netif"}
    put, delete = lxc_config.update_params(current, changes)
    # firewall is dropped, the generated MAC and the unmanaged trunks are kept, net1 is deleted.
    assert put == {"net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:2F:3A:4B,ip=dhcp,trunks=5;6"}
    assert delete == ["net1"]


def test_emptied_options_are_deleted():
    current = lxc_config.normalise_config(dict(RAW, startup="order=2", nameserver="1.1.1.1", timezone="host"))
    want = lxc_config.desired_config(
        params(tags=[], features=[], description="", startup={}, nameserver=[], timezone=""),
        creating=False,
    )
    changes, _create_only = lxc_config.compare(current, want)
    put, delete = lxc_config.update_params(current, changes)
    assert put == {}
    assert sorted(delete) == sorted(["tags", "features", "description", "startup", "nameserver", "timezone"])


def test_create_only_differences_are_warnings_not_updates():
    current = lxc_config.normalise_config(RAW)
    want = lxc_config.desired_config(
        params(unprivileged=False, disk={"storage": "local-lvm", "size_gb": 8}, cores=2), creating=False
    )
    changes, create_only = lxc_config.compare(current, want)
    assert set(changes) == {"cores"}
    assert create_only == {
        "unprivileged": (True, False),
        "disk": ({"storage": "local", "size_gb": 8}, {"storage": "local-lvm", "size_gb": 8}),
    }


def test_create_defaults_make_the_minimal_example_complete():
    want = lxc_config.desired_config(params(hostname="relay1"), creating=True)
    want["disk"]["storage"] = "local"
    data = lxc_config.create_params(want, 9100, "pve1", "local:vztmpl/debian.tar.zst", {"password": None})
    assert data == {
        "vmid": 9100,
        "ostemplate": "local:vztmpl/debian.tar.zst",
        "hostname": "relay1",
        "cores": 1,
        "memory": 512,
        "swap": 512,
        "unprivileged": 1,
        "rootfs": "local:8",
        "net0": "name=eth0,bridge=vmbr0,ip=dhcp",
        "features": "nesting=1",
    }


def test_what_we_create_reads_back_without_changes():
    want = lxc_config.desired_config(
        params(hostname="relay1", tags=["b", "a"], startup={"order": 1}), creating=True
    )
    want["disk"]["storage"] = "local"
    data = lxc_config.create_params(want, 9100, "pve1", "t", {"ssh_public_keys": ["ssh-ed25519 AAAA x"]})
    assert data["ssh-public-keys"] == "ssh-ed25519 AAAA x" and data["tags"] == "a;b"
    # What PVE stores: the new volume's real name and a generated MAC.
    raw = {k: v for k, v in data.items() if k not in ("vmid", "ostemplate", "ssh-public-keys")}
    raw.update(
        rootfs="local:9100/vm-9100-disk-0.raw,size=8G",
        net0=data["net0"] + ",hwaddr=BC:24:11:00:00:09,type=veth",
    )
    current = lxc_config.normalise_config(raw)
    again = lxc_config.desired_config(
        params(hostname="relay1", tags=["a", "b"], startup={"order": 1}), creating=False
    )
    again.pop("hostname")
    assert lxc_config.compare(current, again) == ({}, {})


@pytest.mark.parametrize(
    ("netif", "param"),
    [
        ({"ip": "10.0.0.300/24"}, "netif[0].ip"),
        ({"ip": "10.0.0.5"}, "netif[0].ip"),
        ({"ip": "dhcp", "gw": "fe80::1"}, "netif[0].gw"),
        ({"ip6": "10.0.0.5/24"}, "netif[0].ip6"),
        ({"bridge": "vmbr 0"}, "netif[0].bridge"),
        ({"vlan": 5000}, "netif[0].vlan"),
        ({"mtu": 10}, "netif[0].mtu"),
        ({"hwaddr": "nope"}, "netif[0].hwaddr"),
    ],
)
def test_malformed_netif_names_the_parameter(netif, param):
    with pytest.raises(lxc_config.Failure) as err:
        lxc_config.desired_config(params(netif=[netif]), creating=False)
    assert err.value.msg.startswith(param + ":")


def test_unknown_feature():
    with pytest.raises(lxc_config.Failure) as err:
        lxc_config.desired_config(params(features=["nesting", "warp"]), creating=False)
    assert err.value.msg.startswith("features:") and "warp" in err.value.msg


def test_api_errors_map_to_option_names():
    from ansible_collections.llm_relay.homelab.plugins.module_utils.proxmox import ApiError

    exc = ApiError(
        "POST /nodes/pve1/lxc: API answered HTTP 400", status=400, errors={"net0": "bad", "memory": "x"}
    )
    failure = lxc_config.api_failure(exc, "create")
    assert failure.msg.startswith("memory_mb, netif[0]: create refused: POST /nodes/pve1/lxc")
    assert failure.extra["api_errors"] == {"net0": "bad", "memory": "x"}


def test_interface_addresses():
    interfaces = [
        {"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8"},
        {
            "name": "eth0",
            "hwaddr": "BC:24:11:2F:3A:4B",
            "inet": "10.87.0.123/24",
            "inet6": "fe80::be24:11ff:fe2f:3a4b/64",
            "ip-addresses": [{"ip-address": "fd00::5", "ip-address-type": "inet6", "prefix": 64}],
        },
        {"name": "eth1", "hwaddr": "BC:24:11:2F:3A:4C"},
    ]
    assert lxc_run.interface_addresses(interfaces) == (["10.87.0.123", "fd00::5"], {"eth0"})
