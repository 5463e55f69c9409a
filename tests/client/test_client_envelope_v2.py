"""A hostile middlebox between the CLI and the relay rewrites sealed v2 answers: the client refuses each.

The front forwards every request to the real relay and hands back its real answer, rearranged: another
request's answer, frames reordered, duplicated, dropped, or the stream cut before its terminator.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from client_harness import ServedApp, client_toml

PROMPT = "Which city hosts the 2031 board meeting?"
MODE = web.AppKey("mangle_mode", dict)


def split_frames(raw: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(raw):
        size = int.from_bytes(raw[pos : pos + 4], "big")
        frames.append(raw[pos : pos + 4 + size])
        pos += 4 + size
    return frames


MANGLERS = {
    "reordered": lambda f: [f[0], f[2], f[1], *f[3:]],
    "duplicated": lambda f: [f[0], f[1], f[1], *f[2:]],
    "dropped": lambda f: [f[0], *f[2:]],
    "truncated": lambda f: f[:-1],  # only the terminator missing: right after `data: [DONE]`
    "cut": lambda f: f[:3],  # mid-answer
}


@pytest.fixture
def front(bg, relay):
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[MODE]
        async with aiohttp.ClientSession() as session:
            headers = {"Content-Type": request.headers["Content-Type"]}
            async with session.post(
                relay.url + request.path, data=await request.read(), headers=headers
            ) as r:
                raw = await r.read()
        mode = state["mode"]
        if mode == "swapped":
            raw, state["previous"] = state.get("previous", raw), raw  # the answer to the previous request
        elif mode in MANGLERS:
            raw = b"".join(MANGLERS[mode](split_frames(raw)))
        else:
            state["previous"] = raw
        return web.Response(body=raw, content_type="application/octet-stream")

    app = web.Application()
    app[MODE] = {"mode": "pass"}
    app.router.add_post("/{tail:.*}", handle)
    served = ServedApp(bg, app)
    yield served
    served.stop()


@pytest.mark.parametrize("mode", ["swapped", *MANGLERS])
def test_client_refuses_a_rearranged_answer(cli, keys, front, mode):
    cli.write_config(client_toml(front.url, keys, proxy="", envelope="v2"))
    honest = cli.run("ask", "--stream", PROMPT)  # also what "swapped" later hands out again
    assert honest.returncode == 0, honest.stderr
    front.app[MODE]["mode"] = mode
    result = cli.run("ask", "--stream", PROMPT)
    assert result.returncode == 1, result.stdout
    expected = {
        "swapped": "does not belong to this request",
        "reordered": "out of order: expected frame 1, got 2",
        "duplicated": "duplicated or replayed",
        "dropped": "a frame was dropped",
        "truncated": "ended before its terminator",
        "cut": "ended before its terminator",
    }[mode]
    assert "sealed answer" in result.stderr and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
