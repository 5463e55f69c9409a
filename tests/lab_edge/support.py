"""Client-side helpers for edge tests: an HTTPS client of the edge that trusts the lab CA, ingress."""

import ssl

import aiohttp

from lab.edge.harness import Cloudflared, Origin

__all__ = ["Cloudflared", "Origin", "client_session", "get", "ingress"]


def client_session(ca_path) -> aiohttp.ClientSession:
    """A client of the edge that verifies the lab CA (never disables TLS checks).

    Keep-alive on purpose: with `Connection: close` the server closes after the answer, and CPython 3.11's
    asyncio TLS client drops decrypted bytes it read ahead for a slow reader when close_notify arrives
    (a client-side limitation; a synchronous client gets every byte from the edge in the same case).
    """
    tls = ssl.create_default_context(cafile=str(ca_path))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))


async def get(env, path: str, host: str, **headers: str) -> tuple[int, str, dict]:
    """One GET through the edge for `host`: (status, body text, response headers)."""
    async with (
        client_session(env.ca_path) as http,
        http.get(env.client_url + path, headers={"Host": host, **headers}) as resp,
    ):
        return resp.status, await resp.text(), dict(resp.headers)


def ingress(origin_port: int, hostname: str, *extra: dict) -> dict:
    return {
        "ingress": [
            *extra,
            {"hostname": hostname, "service": f"http://127.0.0.1:{origin_port}"},
            {"service": "http_status:404"},
        ]
    }
