"""SSE relayed chunk by chunk, and the provider request cancelled when the client goes away."""

from __future__ import annotations

import asyncio
import json
import time

from relay_support import CHAT, bearer, provider_toml

from lab.upstream import answers


def long_chat(words: int) -> dict:
    return {**CHAT, "stream": True, "messages": [{"role": "user", "content": "word " * words}]}


async def test_stream_is_relayed_event_by_event_and_concatenates_to_the_answer(relay, upstream, http):
    upstream.state.add_fault({"path": "chat", "token_delay_ms": 30})
    body = long_chat(10)
    arrivals = []
    async with http.post(relay.url + "/v1/chat/completions", json=body, headers=bearer(relay.token)) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        # once: the provider's own Cache-Control is not doubled by the relay's
        assert r.headers.getall("Cache-Control") == ["no-cache"] and r.headers["X-Accel-Buffering"] == "no"
        raw = b""
        async for chunk in r.content.iter_any():
            arrivals.append(time.monotonic())
            raw += chunk
    events = [e for e in raw.split(b"\n\n") if e.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    text = "".join(
        c["choices"][0]["delta"].get("content", "")
        for c in (json.loads(e[6:]) for e in events[:-1])
        if c["choices"]
    )
    assert text == answers.chat_answer(body)[0]
    # Not buffered: chunks arrived spread over the upstream's pacing, not in one lump at the end.
    assert len(arrivals) >= 5 and arrivals[-1] - arrivals[0] > 0.2


async def test_client_disconnect_cancels_the_upstream_request(relay, upstream, http):
    upstream.state.add_fault({"path": "chat", "token_delay_ms": 100})
    body = long_chat(60)  # ~6 s of stream if nobody stopped it
    started = time.monotonic()
    resp = await http.post(relay.url + "/v1/chat/completions", json=body, headers=bearer(relay.token))
    assert resp.status == 200
    await resp.content.readany()
    resp.close()  # the client goes away mid-stream
    closed_at = time.monotonic()
    for _ in range(40):
        await asyncio.sleep(0.05)
        if upstream.handled[-1]["ended"] is not None:
            break
    entry = upstream.handled[-1]
    assert entry["ended"] is not None, "upstream still streaming after the client left"
    assert entry["ended"] - closed_at < 1.5 and entry["ended"] - started < 4
    await asyncio.sleep(0.05)
    line = json.loads(relay.log.lines[-1])
    assert line["status"] == 499 and line["stream"] is True


async def test_upstream_idle_timeout_ends_a_silent_stream(relay_factory, upstream, http):
    relay = await relay_factory(extra=provider_toml("idle", upstream.base, idle_timeout=0.3))
    upstream.state.add_fault({"path": "chat", "token_delay_ms": 1000})
    body = long_chat(5)
    started = time.monotonic()
    got = b""
    try:
        async with http.post(
            relay.url + "/idle/v1/chat/completions", json=body, headers=bearer(relay.token)
        ) as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                got += chunk
    except Exception as exc:  # the client sees a truncated chunked body
        assert "Payload" in type(exc).__name__ or "Connection" in type(exc).__name__
    assert b"[DONE]" not in got and time.monotonic() - started < 3
    await asyncio.sleep(0.05)
    assert '"upstream_error":"timeout"' in relay.log.lines[-1]
