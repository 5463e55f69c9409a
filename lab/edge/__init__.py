"""The lab edge: Cloudflare's edge in front of tunnels, speaking cloudflared's real HTTP/2 transport.

Component contract (CONTRIBUTING.md): ``start(ctx)`` serves the client side (HTTPS, default 9443) and the
connector side (TLS, default 7844) on ``ctx.bind_hosts`` with the lab certificate, publishes itself as
``ctx.registry["edge"]`` and returns its cleanup. Ports come from the ``[edge]`` section of lab.toml.
"""

from lab.edge.component import Edge, start

__all__ = ["Edge", "start"]
