"""Fixtures for edge/stand-in unit tests: an in-process edge on port 0 with its own CA, an origin."""

import ssl
from types import SimpleNamespace

import pytest

from lab import ca
from lab.context import LabContext
from lab.edge import start as start_edge

from .fake_cloudflare import FakeCloudflare
from .support import Origin


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return ca.ensure(tmp_path_factory.mktemp("edge-ca"))


@pytest.fixture
async def edge(certs, tmp_path):
    """The edge on ephemeral ports of 127.0.0.1, in front of a fake Cloudflare state object."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs["crt"], certs["key"])
    cloudflare = FakeCloudflare()
    ctx = LabContext(
        config={"edge": {"port": 0, "ports": [0]}},
        ssl_context=tls,
        ca_path=certs["ca_crt"],
        state_dir=tmp_path,
        cache_dir=tmp_path,
        bind_hosts=["127.0.0.1"],
        registry={"cloudflare": cloudflare},
    )
    cleanup = await start_edge(ctx)
    published = ctx.registry["edge"]
    yield SimpleNamespace(
        cf=cloudflare,
        edge=published,
        client_url=f"https://127.0.0.1:{published.client_port}",
        connector_port=published.connector_port,
        ca_path=certs["ca_crt"],
    )
    await cleanup()


@pytest.fixture
async def origin():
    server = await Origin().start()
    yield server
    await server.stop()
