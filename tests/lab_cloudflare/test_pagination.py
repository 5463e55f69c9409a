"""`page`/`per_page` are honoured exactly: the SDK pages until it gets an empty page; result_info is exact."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from lab.cloudflare.keys import FAULTS_KEY
from lab.cloudflare.store import zone_id_for

from .harness import ACCOUNT, ZONE


@pytest.fixture
def seven_tunnels(sdk):
    return [
        sdk.zero_trust.tunnels.cloudflared.create(
            account_id=ACCOUNT, name=f"t{i}", config_src="cloudflare"
        ).id
        for i in range(7)
    ]


def test_sdk_auto_pagination_stops_on_the_empty_page(sdk, emulator, seven_tunnels):
    listed = [t.id for t in sdk.zero_trust.tunnels.cloudflared.list(account_id=ACCOUNT, per_page=3)]
    assert listed == seven_tunnels
    queries = [parse_qs(c["query"]) for c in emulator.app[FAULTS_KEY].calls if c["method"] == "GET"]
    # Pages 1..3 carry 3+3+1 tunnels; the SDK asks for page 4, gets [] and stops there.
    assert [q.get("page", ["1"])[0] for q in queries] == ["1", "2", "3", "4"]


def test_result_info_is_exact(http, seven_tunnels):
    url = f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel"
    seen = []
    for page in (1, 2, 3):
        body = http.get(url, params={"page": page, "per_page": 3}, timeout=10).json()
        count = 1 if page == 3 else 3
        assert body["result_info"] == {
            "page": page,
            "per_page": 3,
            "count": count,
            "total_count": 7,
            "total_pages": 3,
        }
        seen += [t["id"] for t in body["result"]]
    assert seen == seven_tunnels
    past = http.get(url, params={"page": 9, "per_page": 3}, timeout=10).json()
    assert past["result"] == [] and past["result_info"]["count"] == 0


@pytest.mark.parametrize("params", [{"per_page": 0}, {"per_page": 1001}, {"page": 0}, {"page": "x"}])
def test_bad_paging_is_400(http, params):
    resp = http.get(f"{http.api}/accounts/{ACCOUNT}/cfd_tunnel", params=params, timeout=10)
    assert resp.status_code == 400 and resp.json()["success"] is False


def test_dns_records_paging(http, sdk):
    zone_id = zone_id_for(ZONE)
    for i in range(5):
        http.post(
            f"{http.api}/zones/{zone_id}/dns_records",
            json={"type": "A", "name": f"h{i}", "content": f"192.0.2.{i}"},
            timeout=10,
        )
    names = [r.name for r in sdk.dns.records.list(zone_id=zone_id, per_page=2)]
    assert names == [f"h{i}.lab.test" for i in range(5)]
    desc = http.get(
        f"{http.api}/zones/{zone_id}/dns_records",
        params={"order": "name", "direction": "desc", "per_page": 2},
        timeout=10,
    ).json()
    assert [r["name"] for r in desc["result"]] == ["h4.lab.test", "h3.lab.test"]
    assert desc["result_info"]["total_count"] == 5


def test_zones_per_page_bounds(http):
    assert http.get(f"{http.api}/zones", params={"per_page": 4}, timeout=10).status_code == 400
    assert http.get(f"{http.api}/zones", params={"per_page": 5, "page": 2}, timeout=10).json()["result"] == []
