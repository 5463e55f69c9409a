"""cloudflare_tunnel_ingress: what cloudflared accepts, the catch-all, comparison and the diff."""

from __future__ import annotations

import pytest
from ansible_collections.llm_relay.homelab.plugins.modules import cloudflare_tunnel_ingress as ingress_module


def rule(service, hostname=None, path=None, origin_request=None):
    return {"hostname": hostname, "path": path, "service": service, "origin_request": origin_request}


def test_catch_all_404_appended():
    config = ingress_module.build_config(
        [rule("http://127.0.0.1:8080", "relay.lab.test")], None, "http_status:404"
    )
    assert config == {
        "ingress": [
            {"hostname": "relay.lab.test", "service": "http://127.0.0.1:8080"},
            {"service": "http_status:404"},
        ]
    }


def test_no_rules_is_only_the_catch_all():
    assert ingress_module.build_config([], None, "http_status:404") == {
        "ingress": [{"service": "http_status:404"}]
    }


@pytest.mark.parametrize("last", [rule("http_status:503"), rule("hello_world", hostname="*")])
def test_user_catch_all_is_kept_not_doubled(last):
    config = ingress_module.build_config([rule("http://a:1", "a.lab.test"), last], None, "http_status:404")
    assert len(config["ingress"]) == 2
    assert config["ingress"][-1]["service"] == last["service"]


def test_path_only_last_rule_is_not_a_catch_all():
    config = ingress_module.build_config([rule("http://a:1", path="^/api")], None, "http_status:404")
    assert config["ingress"] == [{"path": "^/api", "service": "http://a:1"}, {"service": "http_status:404"}]


def test_origin_request_snake_to_camel_and_unset_dropped():
    origin = {name: None for name in ingress_module.origin_request_spec()}
    origin.update(connect_timeout=10, no_tls_verify=False, http_host_header="relay.internal")
    origin["access"] = {"required": True, "team_name": "team", "aud_tag": ["aud1"]}
    per_rule = dict(origin, access=None, connect_timeout=None, keep_alive_connections=5)
    config = ingress_module.build_config(
        [rule("https://a:1", "a.lab.test", origin_request=per_rule)], origin, "http_status:404"
    )
    assert config["originRequest"] == {
        "connectTimeout": 10,
        "noTLSVerify": False,
        "httpHostHeader": "relay.internal",
        "access": {"required": True, "teamName": "team", "audTag": ["aud1"]},
    }
    assert config["ingress"][0]["originRequest"] == {
        "noTLSVerify": False,
        "httpHostHeader": "relay.internal",
        "keepAliveConnections": 5,
    }


@pytest.mark.parametrize(
    "service",
    [
        "http://127.0.0.1:8080",
        "https://relay.internal",
        "ws://10.0.0.1:80",
        "tcp://localhost:5432",
        "ssh://localhost:22",
        "rdp://10.0.0.5:3389",
        "smb://files:445",
        "unix:/run/relay.sock",
        "unix+tls:/run/relay.sock",
        "http_status:404",
        "http_status:503",
        "hello_world",
        "bastion",
        "socks-proxy",
        "http://[::1]:8080",
    ],
)
def test_services_cloudflared_accepts(service):
    ingress_module.validate_service(service, "rules[0]")


@pytest.mark.parametrize(
    ("service", "reason"),
    [
        ("127.0.0.1:8080", "scheme and a hostname"),
        ("localhost", "scheme and a hostname"),
        ("http://", "scheme and a hostname"),
        ("http://127.0.0.1:8080/", "different path"),
        ("http://127.0.0.1:8080/api", "different path"),
        ("http_status:abc", "invalid HTTP status code"),
        ("http_status:42", "invalid HTTP status code"),
        ("http_status:1000", "invalid HTTP status code"),
    ],
)
def test_services_cloudflared_rejects(service, reason):
    with pytest.raises(ingress_module.IngressError, match=reason) as caught:
        ingress_module.validate_service(service, "rules[2]")
    assert "rules[2].service" in str(caught.value)


@pytest.mark.parametrize(
    ("rules", "reason"),
    [
        ([rule("http://a:1"), rule("http://b:1", "b.lab.test")], r"rules\[0\] matches every hostname"),
        (
            [rule("http://a:1", "*"), rule("http://b:1", "b.lab.test")],
            r"rules\[0\] matches every hostname \(hostname '\*'\)",
        ),
        ([rule("http://a:1", "a.lab.test:8443")], "cannot contain a port"),
        ([rule("http://a:1", "a.*.lab.test")], "at most one wildcard"),
        ([rule("http://a:1", "**.lab.test")], "at most one wildcard"),
        ([rule("http://a:1", "a.lab.test", path="(unclosed")], "not a valid regular expression"),
        ([rule("", "a.lab.test")], r"rules\[0\].service is required"),
    ],
)
def test_rules_cloudflared_rejects(rules, reason):
    with pytest.raises(ingress_module.IngressError, match=reason):
        ingress_module.build_config(rules, None, "http_status:404")


def test_wildcard_subdomain_accepted():
    config = ingress_module.build_config([rule("http://a:1", "*.lab.test")], None, "http_status:404")
    assert config["ingress"][0]["hostname"] == "*.lab.test"


def test_bad_catch_all_option_rejected():
    with pytest.raises(ingress_module.IngressError, match=r"catch_all\.service"):
        ingress_module.build_config([rule("http://a:1", "a.lab.test")], None, "http_status:nope")


def test_access_team_name_needed_with_aud_tag():
    origin = {"access": {"required": True, "team_name": None, "aud_tag": ["x"]}}
    with pytest.raises(ingress_module.IngressError, match=r"origin_request\.access: team_name"):
        ingress_module.build_config([], origin, "http_status:404")


def test_comparison_ignores_what_the_api_echoes_empty():
    desired = ingress_module.build_config([rule("http://a:1", "a.lab.test")], None, "http_status:404")
    echoed = {
        "ingress": [
            {"hostname": "a.lab.test", "path": "", "service": "http://a:1", "originRequest": {}},
            {"service": "http_status:404", "originRequest": {}},
        ],
        "originRequest": {},
        "warp-routing": {"enabled": False},
    }
    assert ingress_module.comparable(echoed) == ingress_module.comparable(desired)


def test_diff_lines_name_the_changed_rule():
    before = ingress_module.build_config(
        [rule("http://a:1", "a.lab.test"), rule("http://b:1", "b.lab.test")], None, "http_status:404"
    )
    after = ingress_module.build_config(
        [rule("http://a:1", "a.lab.test"), rule("http://b:2", "b.lab.test")], None, "http_status:404"
    )
    old, new = ingress_module.render(before).splitlines(), ingress_module.render(after).splitlines()
    changed = [line for line in new if line not in old]
    assert changed == ["ingress[1] b.lab.test -> http://b:2"]
    assert ingress_module.describe_changes(before, after) == [
        "modified rule b.lab.test: service http://b:1 -> http://b:2"
    ]


def test_describe_added_removed_reordered():
    before = {
        "ingress": [{"hostname": "a", "service": "x"}, {"hostname": "b", "service": "y"}, {"service": "z"}]
    }
    after = {
        "ingress": [
            {"hostname": "b", "service": "y"},
            {"hostname": "a", "service": "x"},
            {"hostname": "c", "service": "w"},
            {"service": "z"},
        ]
    }
    changes = ingress_module.describe_changes(before, after)
    assert "added rule c -> w" in changes
    assert any(c.startswith("reordered rules: b, a") for c in changes)
    # The other way round (pylint flags swapped names; the swap is the point).
    old, new = after, before
    assert ingress_module.describe_changes(old, new)[0] == "removed rule c"
