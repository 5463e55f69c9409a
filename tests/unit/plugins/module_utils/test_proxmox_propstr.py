"""PVE property strings: parse → render round trips and the quirks of real PVE configs."""

from __future__ import annotations

import pytest
from ansible_collections.llm_relay.homelab.plugins.module_utils import proxmox_propstr as pve


@pytest.mark.parametrize(
    ("text", "default_key", "parsed"),
    [
        ("name=eth0,bridge=vmbr0,ip=dhcp", None, {"name": "eth0", "bridge": "vmbr0", "ip": "dhcp"}),
        ("local-lvm:8", "volume", {"volume": "local-lvm:8"}),
        (
            "local:9100/vm-9100-disk-0.raw,size=8G",
            "volume",
            {"volume": "local:9100/vm-9100-disk-0.raw", "size": "8G"},
        ),
        ("nesting=1,keyctl=1", None, {"nesting": "1", "keyctl": "1"}),
        ("order=1,up=30,down=60", "order", {"order": "1", "up": "30", "down": "60"}),
        ("2,up=5", "order", {"order": "2", "up": "5"}),
        (" name=eth0 , bridge=vmbr0 ,", None, {"name": "eth0", "bridge": "vmbr0"}),
        ('mountoptions="noatime;nodev",acl=1', None, {"mountoptions": "noatime;nodev", "acl": "1"}),
        ('comment="a,b"', None, {"comment": "a,b"}),
        ("", None, {}),
    ],
)
def test_parse(text, default_key, parsed):
    assert pve.parse_propstr(text, default_key=default_key) == parsed


@pytest.mark.parametrize("text", ["eth0,bridge=vmbr0", "name=a,name=b", 'x="open'])
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        pve.parse_propstr(text)


@pytest.mark.parametrize(
    ("values", "default_key", "order", "text"),
    [
        (
            {"bridge": "vmbr0", "name": "eth0", "ip": "dhcp"},
            None,
            ("name", "bridge"),
            "name=eth0,bridge=vmbr0,ip=dhcp",
        ),
        ({"volume": "local-lvm:8", "size": "8G"}, "volume", (), "local-lvm:8,size=8G"),
        ({"nesting": True, "keyctl": False}, None, (), "keyctl=0,nesting=1"),
        ({"comment": "a,b", "x": None}, None, (), 'comment="a,b"'),
    ],
)
def test_render(values, default_key, order, text):
    assert pve.render_propstr(values, default_key=default_key, order=order) == text


@pytest.mark.parametrize(
    "text",
    [
        "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=10.87.0.5/24,gw=10.87.0.1,tag=10,firewall=1,mtu=1400",
        "name=eth1,bridge=vmbr1,ip=dhcp,ip6=auto,rate=12.5,trunks=10;20,type=veth",
    ],
)
def test_netif_round_trip(text):
    parsed = pve.parse_netif(text)
    assert pve.parse_netif(pve.render_netif(parsed)) == parsed


def test_netif_normalises_pve_quirks():
    # PVE writes type=veth and firewall=0 itself; lower-case MACs come from hand-edited configs.
    parsed = pve.parse_netif(
        "bridge=vmbr0,firewall=0,hwaddr=bc:24:11:aa:bb:cc,ip=dhcp,name=eth0,type=veth,tag=7"
    )
    assert parsed == {
        "name": "eth0",
        "bridge": "vmbr0",
        "hwaddr": "BC:24:11:AA:BB:CC",
        "ip": "dhcp",
        "vlan": 7,
    }
    rendered = pve.render_netif(dict(parsed, firewall=True, _extra={"trunks": "1;2"}))
    assert rendered == "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:BB:CC,ip=dhcp,tag=7,firewall=1,trunks=1;2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local:9100/vm-9100-disk-0.raw,size=8G", {"storage": "local", "size_gb": 8}),
        ("local-lvm:vm-100-disk-0,size=512M", {"storage": "local-lvm", "size_gb": 0.5}),
        ("local-lvm:8", {"storage": "local-lvm", "size_gb": 8}),
        ("tank:subvol-100-disk-0,size=1T,acl=1", {"storage": "tank", "size_gb": 1024}),
    ],
)
def test_rootfs(text, expected):
    parsed = pve.parse_rootfs(text)
    assert {k: parsed[k] for k in expected} == expected
    assert pve.render_rootfs_new(parsed["storage"], 8) == f"{parsed['storage']}:8"


@pytest.mark.parametrize(
    ("text", "features"),
    [
        ("nesting=1,keyctl=1", ["keyctl", "nesting"]),
        ("keyctl=1,nesting=1", ["keyctl", "nesting"]),
        ("nesting=1,fuse=0", ["nesting"]),
        ("mount=nfs;cifs,nesting=on", ["mount=cifs;nfs", "nesting"]),
        ("", []),
    ],
)
def test_features(text, features):
    assert pve.parse_features(text) == features
    assert pve.parse_features(pve.render_features(features)) == features


def test_features_option_form():
    assert pve.normalise_features(["nesting", "keyctl", "mount=nfs;cifs"]) == [
        "keyctl",
        "mount=cifs;nfs",
        "nesting",
    ]
    assert pve.render_features(["nesting", "keyctl"]) == "keyctl=1,nesting=1"
    assert pve.render_features([]) == ""


@pytest.mark.parametrize(
    ("value", "tags"),
    [
        ("b;a", ["a", "b"]),
        ("a,b b;;c", ["a", "b", "c"]),
        (["relay", "llm", "relay"], ["llm", "relay"]),
        (None, []),
        ("", []),
    ],
)
def test_tags_compare_as_sets(value, tags):
    assert pve.parse_tags(value) == tags
    assert pve.parse_tags(pve.render_tags(tags)) == tags


def test_startup():
    assert pve.parse_startup("order=1,up=30") == {"order": 1, "up": 30}
    assert pve.parse_startup("3") == {"order": 3}
    assert pve.parse_startup(None) == {}
    assert pve.render_startup({"down": 60, "order": 1, "up": None}) == "order=1,down=60"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, True), ("0", False), ("on", True), ("off", False), ("yes", True), ("false", False), (True, True)],
)
def test_bool(value, expected):
    assert pve.parse_bool(value) is expected


def test_bool_rejects():
    with pytest.raises(ValueError):
        pve.parse_bool("maybe")


@pytest.mark.parametrize(("value", "gib"), [("8G", 8), ("8", 8), ("512M", 0.5), ("1T", 1024), ("1.5G", 1.5)])
def test_size(value, gib):
    assert pve.parse_size_gib(value) == gib


def test_lists():
    assert pve.parse_list("1.1.1.1 8.8.8.8") == ["1.1.1.1", "8.8.8.8"]
    assert pve.parse_list(["a.test", "b.test,a.test"]) == ["a.test", "b.test"]
    assert pve.parse_list(None) == []
