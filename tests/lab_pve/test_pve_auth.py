"""Authentication exactly as PVE: tickets + CSRF on writes, API tokens, 401 on anything wrong."""

from __future__ import annotations

import time

import pytest
from proxmoxer import AuthenticationError, ProxmoxAPI
from proxmoxer.core import ResourceException

pytestmark = pytest.mark.lab


def _credentials(lab) -> dict[str, str]:
    return {"username": lab.pve_user, "password": lab.pve_password}


def test_ticket_login_returns_ticket_and_csrf_token(lab, api):
    r = api.post(f"{lab.pve_url}/access/ticket", data=_credentials(lab))
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["username"] == lab.pve_user
    assert data["ticket"].startswith(f"PVE:{lab.pve_user}:")
    assert ":" in data["CSRFPreventionToken"]


def test_realm_parameter_completes_the_username(lab, api):
    user, realm = lab.pve_user.split("@")
    r = api.post(
        f"{lab.pve_url}/access/ticket", data={"username": user, "realm": realm, "password": lab.pve_password}
    )
    assert r.status_code == 200 and r.json()["data"]["username"] == lab.pve_user


def test_wrong_password_is_401(lab, api):
    r = api.post(f"{lab.pve_url}/access/ticket", data={"username": lab.pve_user, "password": "wrong-pass"})
    assert r.status_code == 401
    # A refused login is the handler's error: JSON with `message` (pve-access-control create_ticket).
    assert r.json() == {"data": None, "message": "authentication failure\n"}


def test_proxmoxer_password_auth_with_wrong_password_fails(lab):
    with pytest.raises(AuthenticationError):
        ProxmoxAPI(
            lab.pve_host,
            port=lab.pve_port,
            user=lab.pve_user,
            password="wrong-pass",
            backend="https",
            verify_ssl=str(lab.ca_path),
        )


def test_bad_token_is_401(lab):
    px = ProxmoxAPI(
        lab.pve_host,
        port=lab.pve_port,
        user=lab.pve_user,
        token_name=lab.pve_token_id,
        token_value="00000000-0000-0000-0000-000000000000",
        backend="https",
        verify_ssl=str(lab.ca_path),
    )
    with pytest.raises(ResourceException) as err:
        px.version.get()
    assert err.value.status_code == 401


def test_unknown_token_id_is_401(lab, api):
    header = f"PVEAPIToken={lab.pve_user}!nosuchtoken={lab.pve_token_secret}"
    assert api.get(f"{lab.pve_url}/version", headers={"Authorization": header}).status_code == 401


def test_no_credentials_is_401(lab, api):
    started = time.monotonic()
    r = api.get(f"{lab.pve_url}/nodes")
    elapsed = time.monotonic() - started
    assert r.status_code == 401
    assert r.reason == "No ticket"
    # pve-http-server AnyEvent.pm: an auth-stage 401 has no body and comes after a delay (3 s on PVE).
    assert r.content == b""
    assert elapsed >= float(lab.config["pve"].get("auth_failure_delay", 3))


def test_ticket_tells_the_capabilities_and_the_cluster_name_to_an_auditor(lab, api):
    data = api.post(f"{lab.pve_url}/access/ticket", data=_credentials(lab)).json()["data"]
    assert set(data) == {"username", "ticket", "CSRFPreventionToken", "cap", "clustername"}
    assert set(data["cap"]) == {"vms", "access", "storage", "nodes", "sdn", "dc", "mapping"}
    assert data["cap"]["vms"]["VM.Allocate"] == 1 and data["cap"]["dc"]["Sys.Audit"] == 1


def test_forged_ticket_is_401(lab, api):
    api.cookies.set("PVEAuthCookie", f"PVE:{lab.pve_user}:6B000000::Zm9yZ2Vk")
    assert api.get(f"{lab.pve_url}/nodes").status_code == 401


def _login(lab, api) -> str:
    data = api.post(f"{lab.pve_url}/access/ticket", data=_credentials(lab)).json()["data"]
    api.cookies.set("PVEAuthCookie", data["ticket"])
    return data["CSRFPreventionToken"]


def test_ticket_reads_without_csrf_but_writes_need_it(lab, api):
    csrf = _login(lab, api)
    assert api.get(f"{lab.pve_url}/nodes").status_code == 200
    url = f"{lab.pve_url}/nodes/{lab.nodes[0]}/lxc/9099/status/start"
    missing = api.post(url)
    assert missing.status_code == 401
    assert missing.reason == "Permission denied - invalid csrf token"
    wrong = api.post(url, headers={"CSRFPreventionToken": "6B000000:Zm9yZ2Vk"})
    assert wrong.status_code == 401
    # With the token the request gets past auth (and fails on the missing CT, as PVE does).
    ok = api.post(url, headers={"CSRFPreventionToken": csrf})
    assert ok.status_code == 500
    assert "does not exist" in ok.reason


def test_api_token_needs_no_csrf(lab, api):
    header = {"Authorization": f"PVEAPIToken={lab.pve_user}!{lab.pve_token_id}={lab.pve_token_secret}"}
    r = api.post(f"{lab.pve_url}/nodes/{lab.nodes[0]}/lxc/9099/status/start", headers=header)
    assert r.status_code == 500  # past auth: CT 9099 does not exist


def test_ticket_can_be_renewed_with_itself(lab, api):
    r = api.post(f"{lab.pve_url}/access/ticket", data=_credentials(lab))
    ticket = r.json()["data"]["ticket"]
    again = api.post(f"{lab.pve_url}/access/ticket", data={"username": lab.pve_user, "password": ticket})
    assert again.status_code == 200


@pytest.mark.parametrize("auth", ["token", "password"])
def test_both_auth_modes_work_through_proxmoxer(lab, auth):
    assert lab.proxmox(auth).version.get()["release"] == lab.config["pve"]["release"]
