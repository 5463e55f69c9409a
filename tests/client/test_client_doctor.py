"""`llm-relay doctor`: one distinct, correct failure per broken hop, exit status 1; all green when healthy."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from aiohttp import web
from client_harness import ServedApp, Squid, client_toml, free_port, keygen, self_signed

PROXY_USER, PROXY_PASSWORD = "bob", "s3cret:with@chars"


def doctor(cli, toml: str, *args: str) -> tuple[int, dict[str, dict]]:
    cli.write_config(toml)
    result = cli.run("doctor", "--json", *args)
    report = json.loads(result.stdout)
    assert report["ok"] is (result.returncode == 0)
    return result.returncode, {c["name"]: c for c in report["checks"]}


def only_failure(checks: dict[str, dict]) -> dict:
    failed = [c for c in checks.values() if c["status"] == "fail"]
    assert len(failed) == 1, failed
    return failed[0]


@pytest.fixture(scope="module")
def squid_auth():
    proxy = Squid(PROXY_USER, PROXY_PASSWORD)
    yield proxy
    proxy.stop()


def test_healthy_setup_through_the_proxy_is_all_green(cli, relay, keys, squid_auth):
    proxy = f"http://{PROXY_USER}:{quote(PROXY_PASSWORD, safe='')}@127.0.0.1:{squid_auth.port}"
    cli.write_config(client_toml(relay.url, keys, encrypt=True, proxy=proxy))
    result = cli.run("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("dns", "proxy", "healthz", "envelope", "auth", "models", "completion"):
        assert f"[ ok ] {name}" in result.stdout
    assert "[skip] tls" in result.stdout  # plain-http relay on loopback, payloads sealed
    # Effective configuration is printed with every secret masked.
    assert f"http://{PROXY_USER}:***@127.0.0.1:{squid_auth.port}" in result.stdout
    for secret in (keys["token"], keys["fernet_key"], PROXY_PASSWORD, quote(PROXY_PASSWORD, safe="")):
        assert secret not in result.stdout
    assert " ms)" in result.stdout  # latency of each hop


def test_proxy_down(cli, relay, keys):
    code, checks = doctor(cli, client_toml(relay.url, keys, proxy=f"http://127.0.0.1:{free_port()}"))
    assert code == 1
    failure = only_failure(checks)
    assert (failure["name"], failure["code"]) == ("proxy", "proxy_unreachable")
    assert "refused" in failure["detail"].lower()


def test_proxy_auth_missing_then_wrong(cli, relay, keys, squid_auth):
    code, checks = doctor(cli, client_toml(relay.url, keys, proxy=squid_auth.url))
    assert code == 1
    failure = only_failure(checks)
    assert (failure["name"], failure["code"]) == ("proxy", "proxy_auth_required")
    assert "Basic" in failure["detail"]
    wrong = f"http://{PROXY_USER}:nope@127.0.0.1:{squid_auth.port}"
    code, checks = doctor(cli, client_toml(relay.url, keys, proxy=wrong))
    assert code == 1 and only_failure(checks)["code"] == "proxy_auth_rejected"


def test_relay_host_unknown(cli, keys):
    # `.invalid` never resolves (RFC 6761) and doctor answers that without sending any DNS query.
    code, checks = doctor(cli, client_toml("https://relay.example.invalid", keys, proxy=""))
    assert code == 1
    failure = only_failure(checks)
    assert (failure["name"], failure["code"]) == ("dns", "relay_host_unknown")
    assert "proxy" not in checks  # nothing behind a failed hop is attempted


def test_tls_verify_failure_and_the_ca_bundle_fix(cli, bg, keys, tmp_path):
    context, cert_path = self_signed(tmp_path)
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    server = ServedApp(bg, app, ssl_context=context)
    try:
        url = f"https://localhost:{server.port}"
        code, checks = doctor(cli, client_toml(url, keys, proxy=""))
        assert code == 1
        failure = only_failure(checks)
        assert (failure["name"], failure["code"]) == ("tls", "tls_verify_failed")
        assert "self-signed" in failure["detail"] and "rogue-relay.test" in failure["detail"]
        assert "ca_bundle" in failure["hint"]
        # With the certificate trusted explicitly, TLS passes (this stand-in is no relay, so later hops fail).
        _, checks = doctor(cli, client_toml(url, keys, proxy="", ca_bundle=str(cert_path)))
        assert checks["tls"]["status"] == "ok" and checks["healthz"]["status"] == "ok"
    finally:
        server.stop()


@pytest.mark.parametrize("encrypt", [False, True])
def test_wrong_token(cli, relay, keys, encrypt):
    stranger = keygen("stranger") | {"fernet_key": keys["fernet_key"]}
    code, checks = doctor(cli, client_toml(relay.url, stranger, encrypt=encrypt, proxy=""))
    assert code == 1
    failure = only_failure(checks)
    assert (failure["name"], failure["code"]) == ("auth", "token_rejected")
    assert "invalid_token" in failure["detail"]
    if encrypt:
        assert checks["envelope"]["status"] == "ok"  # the key is right; only the token is not


def test_wrong_fernet_key(cli, relay, keys):
    wrong = keys | {"fernet_key": keygen("other")["fernet_key"]}
    code, checks = doctor(cli, client_toml(relay.url, wrong, encrypt=True, proxy=""))
    assert code == 1
    failure = only_failure(checks)
    assert (failure["name"], failure["code"]) == ("envelope", "fernet_key_rejected")
    assert checks["healthz"]["status"] == "ok"


def test_upstream_key_rejected(cli, relay_factory, keys):
    server = relay_factory([keys["token_line"]], [keys["fernet_key"]], upstream_key="sk-or-v1-revoked")
    # A relay with only a shared v1 key: the client speaks v1 only because its config says so.
    code, checks = doctor(cli, client_toml(server.url, keys, encrypt=True, proxy="", envelope="v1"))
    assert code == 1
    failure = only_failure(checks)
    # The relay accepted us (auth is answered by the relay alone); the first upstream call is refused.
    assert (failure["name"], failure["code"]) == ("models", "upstream_key_rejected")
    assert checks["auth"]["status"] == "ok" and "401" in failure["detail"]


def test_upstream_refuses_the_completion(cli, relay, keys, upstream, bg):
    async def arm() -> None:  # the upstream's state belongs to its event loop
        upstream.state.add_fault({"path": "/chat/completions", "status": 401, "times": 1})

    bg.run(arm())
    code, checks = doctor(cli, client_toml(relay.url, keys, encrypt=False, proxy=""))
    assert code == 1
    failure = only_failure(checks)
    assert (failure["name"], failure["code"]) == ("completion", "upstream_key_rejected")
    assert checks["models"]["status"] == "ok"


def test_world_readable_config_is_flagged_but_not_fatal(cli, relay, keys):
    cli.write_config(client_toml(relay.url, keys, proxy=""))
    cli.config_path.chmod(0o644)
    result = cli.run("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 0
    assert (checks["config"]["status"], checks["config"]["code"]) == ("warn", "config_permissions")
    assert "chmod 600" in checks["config"]["hint"]
