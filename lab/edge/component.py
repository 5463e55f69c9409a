"""Starts and stops the lab edge's two listeners (the lab daemon's component entry point)."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import capnp
from aiohttp import web

from lab.edge.access_gate import AccessGate
from lab.edge.access_keys import AccessSigner
from lab.edge.client_side import make_app
from lab.edge.tls import edge_tls
from lab.edge.tunnel import ConnectorSide

log = logging.getLogger("lab.edge")

# lab.toml [edge]: `port` = client side (HTTPS), `ports` = [connector side]; `lab up` waits for both.
# access_team_domain: where the team's certs are published (Cloudflare: <team>.cloudflareaccess.com); in the
# lab a name under the lab zone, which the lab certificate covers and lab/hosts.py resolves to the edge.
DEFAULTS = {"port": 9443, "ports": [7844], "location": "lab01", "access_team_domain": "team.lab.test"}


class Edge:
    """What the edge publishes in ``ctx.registry["edge"]``: bound ports and the connector pools."""

    def __init__(self, connectors: ConnectorSide):
        self.connectors = connectors
        self.access = None  # the AccessGate: team domain, issuer, signing key
        self.client_ports: list[int] = []
        self.connector_ports: list[int] = []

    @property
    def client_port(self) -> int:
        return self.client_ports[0]

    @property
    def connector_port(self) -> int:
        return self.connector_ports[0]

    def connection_count(self, tunnel_id: str) -> int:
        return self.connectors.connection_count(tunnel_id)


async def start(ctx) -> Callable[[], Awaitable[None]]:
    settings = {**DEFAULTS, **ctx.section("edge")}
    client_port, connector_port = int(settings["port"]), int(settings["ports"][0])
    connectors = ConnectorSide(ctx.registry, settings["location"])
    edge = Edge(connectors)
    team_domain = str(settings["access_team_domain"])
    gate = AccessGate(AccessSigner.load_or_create(Path(ctx.state_dir) / "edge", team_domain), team_domain)
    edge.access = gate

    # pycapnp's RPC runs on KJ's event loop, which must run beside asyncio's for as long as the edge does.
    kj = contextlib.AsyncExitStack()
    await kj.enter_async_context(capnp.kj_loop())
    tunnel_tls = edge_tls(Path(ctx.ca_path))
    runner = web.AppRunner(
        make_app(connectors, gate), access_log=None, handle_signals=False, handler_cancellation=True
    )
    await runner.setup()
    servers: list[asyncio.Server] = []
    for host in ctx.bind_hosts:
        site = web.TCPSite(runner, host, client_port, ssl_context=ctx.ssl_context, reuse_address=True)
        await site.start()
        edge.client_ports.append(site._server.sockets[0].getsockname()[1])
        server = await asyncio.start_server(
            connectors.handle, host, connector_port, ssl=tunnel_tls, reuse_address=True
        )
        servers.append(server)
        edge.connector_ports.append(server.sockets[0].getsockname()[1])
    gate.set_port(edge.client_port)
    ctx.registry["edge"] = edge
    log.info("lab edge: clients on %s, connectors on %s", edge.client_ports, edge.connector_ports)

    async def cleanup() -> None:
        ctx.registry.pop("edge", None)
        for server in servers:
            server.close()
        await connectors.close()
        await runner.cleanup()
        for server in servers:
            await server.wait_closed()
        await kj.aclose()

    return cleanup
