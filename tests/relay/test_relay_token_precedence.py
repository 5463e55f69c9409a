"""Which client token counts when a request carries several (relay/docs/config.md, "Which channel wins")."""

from __future__ import annotations

import pytest
from relay_support import bearer

JUNK = "lrt_" + "j" * 43


async def test_a_path_token_wins_and_the_headers_are_not_looked_at(relay, http):
    # Behind a proxy the SDK still sends its placeholder key: it must not spoil a path-token request.
    async with http.get(f"{relay.url}/t/{relay.token}/v1/models", headers=bearer("sk-placeholder")) as r:
        assert r.status == 200
    async with http.get(f"{relay.url}/t/{JUNK}/v1/models", headers=bearer(relay.token)) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_token"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": "Bearer {good}", "X-Relay-Token": JUNK, "x-api-key": JUNK}, 200),
        ({"Authorization": f"Bearer {JUNK}", "X-Relay-Token": "{good}"}, 401),
        ({"X-Relay-Token": "{good}", "x-api-key": JUNK}, 200),
        ({"X-Relay-Token": JUNK, "x-api-key": "{good}"}, 401),
        ({"Authorization": "Basic eDp5", "x-api-key": "{good}"}, 200),  # not Bearer: not a channel
    ],
)
async def test_header_channels_in_order_first_present_is_the_only_one_checked(relay, http, headers, status):
    sent = {k: v.format(good=relay.token) for k, v in headers.items()}
    async with http.get(f"{relay.url}/v1/models", headers=sent) as r:
        assert r.status == status
