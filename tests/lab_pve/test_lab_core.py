"""Lab core without the running lab: CA + server cert, lab.toml ports, LabContext.serve over TLS."""

from __future__ import annotations

import socket
import ssl

import aiohttp
from aiohttp import web
from cryptography import x509

from lab import ca, config
from lab.context import LabContext


def test_ca_and_server_cert(tmp_path):
    paths = ca.ensure(tmp_path)
    cert = x509.load_pem_x509_certificate(paths["crt"].read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) >= {
        "localhost",
        "pve1",
        "pve2",
        "*.lab.test",
        "lab.test",
    }
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.87.0.1"}
    assert paths["ca_key"].stat().st_mode & 0o777 == 0o600
    assert paths["key"].stat().st_mode & 0o777 == 0o600
    before = paths["ca_crt"].read_bytes()
    assert ca.ensure(tmp_path)["ca_crt"].read_bytes() == before  # generated once, then reused


def test_every_section_with_a_port_is_waited_for():
    ports = config.ports(config.load())
    assert ports["pve"] == [8006]
    assert config.ports({"a": {"port": 1, "ports": [2]}, "b": {"x": 1}, "top": 3}) == {"a": [1, 2]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def hello(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def test_context_serves_tls_verified_by_the_lab_ca(tmp_path):
    paths = ca.ensure(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(paths["crt"], paths["key"])
    ctx = LabContext(
        config={},
        ssl_context=server_tls,
        ca_path=paths["ca_crt"],
        state_dir=tmp_path,
        cache_dir=tmp_path,
        bind_hosts=["127.0.0.1"],
    )
    app = web.Application()
    app.router.add_get("/", hello)
    port = _free_port()
    cleanup = await ctx.serve(app, port)
    try:
        connector = aiohttp.TCPConnector(ssl=ctx.client_ssl_context())
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get(f"https://localhost:{port}/") as r,
        ):
            assert await r.json() == {"ok": True}
    finally:
        await cleanup()
