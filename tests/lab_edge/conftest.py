"""Fixtures for the edge tests with the real cloudflared: the Cloudflare emulator and the edge in-process on
ephemeral ports (lab/edge/harness.py), and a small origin."""

import pytest

from lab.edge.harness import Origin, edge_harness


@pytest.fixture
async def edge(tmp_path):
    async with edge_harness(tmp_path) as harness:
        yield harness


@pytest.fixture
async def origin():
    server = await Origin().start()
    yield server
    await server.stop()
