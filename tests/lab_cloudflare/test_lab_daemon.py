"""Against the running lab daemon (:8443, TLS with the lab CA): the SDK and requests, end to end."""

from __future__ import annotations

import ssl
import uuid

import cloudflare
import httpx
import pytest
import requests

pytestmark = pytest.mark.lab


@pytest.fixture
def cf(lab):
    http_client = httpx.Client(verify=ssl.create_default_context(cafile=str(lab.ca_path)), timeout=30)
    client = cloudflare.Cloudflare(
        api_token=lab.cloudflare.tokens["admin"]["value"],
        base_url=f"{lab.cloudflare.url}/client/v4",
        http_client=http_client,
        max_retries=4,  # rides out a daemon restart by a parallel suite
    )
    yield client
    client.close()


def test_tunnel_config_and_cname_through_the_daemon(lab, cf):
    account = lab.cloudflare.account_id
    name = f"contract-{uuid.uuid4().hex[:10]}"
    tunnels = cf.zero_trust.tunnels.cloudflared
    tunnel = tunnels.create(account_id=account, name=name, config_src="cloudflare")
    record = None
    zone_id = lab.cloudflare.zones[0]["id"]
    try:
        hostname = f"{name}.lab.test"
        config = {
            "ingress": [
                {"hostname": hostname, "service": "http://127.0.0.1:8080"},
                {"service": "http_status:404"},
            ]
        }
        assert tunnels.configurations.update(tunnel.id, account_id=account, config=config).version == 1
        assert [z.id for z in cf.zones.list(name="lab.test")] == [zone_id]
        record = cf.dns.records.create(
            zone_id=zone_id,
            type="CNAME",
            name=name,
            content=f"{tunnel.id}.cfargotunnel.com",
            proxied=True,
            ttl=1,
        )
        assert record.name == hostname
        assert [t.id for t in tunnels.list(account_id=account, name=name, is_deleted=False)] == [tunnel.id]
        token = tunnels.token.get(tunnel.id, account_id=account)
        assert isinstance(token, str) and len(token) > 100
        calls = requests.get(
            f"{lab.cloudflare.url}/_lab/requests", verify=str(lab.ca_path), timeout=30
        ).json()
        mine = [c for c in calls["requests"] if tunnel.id in c["path"]]
        assert {(c["method"], c["status"]) for c in mine} >= {("PUT", 200), ("GET", 200)}
    finally:
        if record is not None:
            cf.dns.records.delete(record.id, zone_id=zone_id)
        tunnels.delete(tunnel.id, account_id=account)
    assert tunnels.list(account_id=account, name=name, is_deleted=False).result == []


def test_plain_requests_with_a_bad_token(lab):
    resp = requests.get(
        f"{lab.cloudflare.url}/client/v4/zones",
        headers={"Authorization": "Bearer " + "z" * 40},
        verify=str(lab.ca_path),
        timeout=30,
    )
    assert resp.status_code == 403
    assert resp.json() == {
        "success": False,
        "errors": [{"code": 10000, "message": "Authentication error"}],
        "messages": [],
        "result": None,
    }
