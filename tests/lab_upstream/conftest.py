"""In-process fake upstream on an ephemeral loopback port (never the lab's fixed 8790)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lab.upstream import create_app, state_of

KEY = "sk-or-v1-lab-test-key-one"
OTHER_KEY = "sk-or-v1-lab-test-key-two"


@pytest.fixture
async def upstream():
    app = create_app({"api_keys": [KEY, OTHER_KEY], "processing_comment_every": 3})
    server = TestServer(app, host="127.0.0.1", port=0)
    client = TestClient(server)
    await client.start_server()
    client.state = state_of(app)
    client.base = str(server.make_url("/api/v1"))
    yield client
    await client.close()
