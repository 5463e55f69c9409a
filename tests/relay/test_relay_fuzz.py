"""Bad input at volume: >= 10,000 generated malformed requests against a real relay process.

Every answer must be a 4xx (the relay's own or a provider 4xx passed through), never a 5xx; the process
stays alive and its RSS stays bounded. Deterministic (seeded) so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
import sys
from collections import Counter

import aiohttp
import pytest
from conftest import make_relay_dir
from llm_relay import envelope as env
from relay_support import UPSTREAM_KEYS, raw_exchange, status_of

pytestmark = pytest.mark.slow
SEED = 20261122
HTTP_CASES = 5200
RAW_CASES = 2600
ENVELOPE_CASES = 2200
SLOW_SENDERS = 12
RSS_LIMIT_KB = 250 * 1024  # ~45 MB at rest; a leak over 10k requests would blow through this


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def junk(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def http_case(rng: random.Random, token: str) -> tuple[str, str, dict, bytes]:
    """A request that is wrong in at least one way the relay must catch (or the provider refuses)."""
    kind = rng.randrange(9)
    method = rng.choice(["GET", "POST", "PUT", "PATCH", "DELETE"])
    headers: dict[str, str] = {}
    body = junk(rng, rng.randrange(0, 2000))
    path = rng.choice(["/v1/chat/completions", "/relay", "/lab/v1/embeddings", "/envelope", "/v1/models"])
    if kind == 0:  # no token at all
        pass
    elif kind == 1:  # unknown token, in any channel
        fake = "lrt_" + base64.urlsafe_b64encode(junk(rng, 32)).decode().rstrip("=")
        headers = rng.choice([{"Authorization": f"Bearer {fake}"}, {"X-Relay-Token": fake}, {}])
        if not headers:
            path = f"/t/{fake}{path}"
    elif kind == 2:  # malformed auth headers
        headers = {"Authorization": rng.choice(["Bearer", "Basic Zm9vOmJhcg==", "bearer  ", token[:-1]])}
    elif kind == 3:  # valid token, invalid JSON (truncated, binary, deeply nested)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        method, path = "POST", rng.choice(["/v1/chat/completions", "/relay", "/lab/v1/embeddings"])
        body = rng.choice([b'{"model": "x", "messages": [', body + b"\xff", b"[" * 100_000, b'{"a":1}}'])
    elif kind == 4:  # valid token, unknown provider / route / dot segments
        headers = {"X-Relay-Token": token}
        path = rng.choice(["/nope/v1/chat/completions", "/v2/models", "/v1", "/t/", "/v1/%2e%2e/x", "/a/b/c"])
    elif kind == 5:  # oversized body (limit is 64 KiB in this config)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        method, body = "POST", b"[" + b"1," * 40_000 + b"1]"
    elif kind == 6:  # valid token, well-formed JSON the provider refuses (its 400 passes through)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        method, path = "POST", "/v1/chat/completions"
        body = json.dumps(
            rng.choice([{}, {"messages": []}, {"messages": [{"role": "x"}]}, [1], "s"])
        ).encode()
    elif kind == 7:  # envelope content type, garbage body
        headers = {"Content-Type": env.CONTENT_TYPE}
        method = "POST"
    else:  # huge but legal-length header values, junk header names
        headers = {f"X-Junk-{i}": "v" * rng.randrange(100, 4000) for i in range(rng.randrange(1, 20))}
    return method, path, headers, body


def raw_case(rng: random.Random, token: str) -> bytes:
    kind = rng.randrange(10)
    auth = f"X-Relay-Token: {token}\r\n"
    if kind == 0:
        return junk(rng, rng.randrange(1, 3000))
    if kind == 1:  # request line over the limit
        return b"GET /" + b"a" * rng.randrange(9000, 20000) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    if kind == 2:  # one header line over the limit
        return b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 10000 + b"\r\n\r\n"
    if kind == 3:  # too many headers
        return b"GET /v1/models HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(300)) + b"\r\n"
    if kind == 4:  # broken chunked body with a valid token
        return (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n"
            "Content-Type: application/json\r\n\r\nZZ\r\nxx\r\n0\r\n\r\n"
        ).encode()
    if kind == 5:  # smuggling attempt: both Content-Length and Transfer-Encoding
        return (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 4\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/models HTTP/1.1\r\n\r\n"
        ).encode()
    if kind == 6:  # invalid Content-Length values
        value = rng.choice(["-1", "abc", "1e9", "10, 20", "99999999999999999999"])
        return f"POST /v1/models HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {value}\r\n\r\n".encode()
    if kind == 7:  # header injection characters / bad names
        return b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\nX\x00: y\r\n\r\n"
    if kind == 8:  # HTTP/2 preface and unknown versions
        return rng.choice(
            [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET /v1/models HTTP/9.9\r\nHost: x\r\n\r\n"]
        )
    # a body shorter than its Content-Length, then the client half-closes
    return f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n{{".encode()


def envelope_case(rng: random.Random, fernet, token: str) -> bytes:
    kind = rng.randrange(7)
    good_inner = {"v": 1, "method": "POST", "path": "/v1/chat/completions", "body": "", "token": token}
    if kind == 0:  # truncated
        sealed = fernet.encrypt(json.dumps(good_inner).encode())
        return sealed[: rng.randrange(0, len(sealed) - 1)]
    if kind == 1:  # bit flips
        sealed = bytearray(fernet.encrypt(json.dumps(good_inner).encode()))
        sealed[rng.randrange(len(sealed))] ^= 1 << rng.randrange(7)
        return bytes(sealed)
    if kind == 2:  # wrong key
        return env.make_fernet([env.generate_key()]).encrypt(json.dumps(good_inner).encode())
    if kind == 3:  # not JSON / not an object / wrong fields, right key
        return fernet.encrypt(rng.choice([b"eval('1')", b"[]", b"null", b'{"v": 1}', junk(rng, 50)]))
    if kind == 4:  # right key, mangled fields, no token (sealed 4xx at worst)
        doc = {k: v for k, v in good_inner.items() if k != "token"}
        field = rng.choice(["method", "path", "body", "headers", "query", "v"])
        doc[field] = rng.choice([None, 5, [], {"a": 1}, "\r\n", "??", "/t/x/v1"])
        return fernet.encrypt(json.dumps(doc).encode())
    if kind == 5:  # right key, valid inner request, but its body is invalid JSON for the route
        doc = {**good_inner, "headers": {"Content-Type": "application/json"}}
        doc["body"] = base64.b64encode(b'{"messages": [' + junk(rng, 20)).decode()
        return fernet.encrypt(json.dumps(doc).encode())
    return base64.urlsafe_b64encode(junk(rng, rng.randrange(10, 400)))  # random base64


async def slow_sender(port: int, token: str) -> int:
    """Sends a body a byte every 100 ms, far slower than the 2 s body timeout allows; returns the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Relay-Token: {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    )
    answer = asyncio.create_task(reader.read(4096))
    try:
        writer.write(head.encode() + b'{"model"')
        for _ in range(60):
            await asyncio.wait([answer], timeout=0.1)
            if answer.done():
                break
            writer.write(b" ")
            await writer.drain()
    except ConnectionError:
        pass  # the relay hung up on us: its answer is already in the read buffer
    try:
        return status_of(await asyncio.wait_for(answer, 5))
    except (ConnectionError, TimeoutError):
        return 0
    finally:
        writer.close()


@pytest.mark.timeout(240)
async def test_ten_thousand_malformed_requests_only_4xx(tmp_path, upstream):
    rng = random.Random(SEED)
    token, _, keys = make_relay_dir(
        tmp_path, upstream.base, extra_server="max_body_bytes = 65536\naccess_log = true"
    )
    fernet = env.make_fernet(keys)
    log_path = tmp_path / "relay.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llm_relay.server", "--config", str(tmp_path / "relay.toml"), stderr=log
        )
    try:
        port = 0
        for _ in range(100):
            await asyncio.sleep(0.1)
            for line in log_path.read_text().splitlines():
                doc = json.loads(line)
                if doc.get("msg") == "listening":
                    port = int(doc["listen"].rsplit(":", 1)[1])
            if port:
                break
        assert port, log_path.read_text()
        url = f"http://127.0.0.1:{port}"
        rss_start = rss_kb(proc.pid)
        statuses: Counter[int] = Counter()
        failures: Counter[str] = Counter()
        peak = rss_start

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=24)) as http:

            async def send(method, path, headers, body):
                try:
                    async with http.request(method, url + path, headers=headers, data=body) as r:
                        data = await r.read()
                        status = r.status
                        if status == 200 and r.headers.get("Content-Type") == env.CONTENT_TYPE:
                            status = env.open_response(fernet, data).status  # sealed: the real status
                        statuses[status] += 1
                except aiohttp.ClientError as exc:
                    failures[type(exc).__name__] += 1

            slow = [asyncio.create_task(slow_sender(port, token)) for _ in range(SLOW_SENDERS)]
            cases = [http_case(rng, token) for _ in range(HTTP_CASES)]
            for i in range(0, len(cases), 200):
                await asyncio.gather(*(send(*c) for c in cases[i : i + 200]))
                peak = max(peak, rss_kb(proc.pid))
            envelopes = [envelope_case(rng, fernet, token) for _ in range(ENVELOPE_CASES)]
            ct = {"Content-Type": env.CONTENT_TYPE}
            for i in range(0, len(envelopes), 200):
                await asyncio.gather(*(send("POST", "/envelope", ct, e) for e in envelopes[i : i + 200]))
                peak = max(peak, rss_kb(proc.pid))
            raws = [raw_case(rng, token) for _ in range(RAW_CASES)]
            sem = asyncio.Semaphore(24)

            async def send_raw(data: bytes) -> None:
                async with sem:
                    try:
                        answer = await raw_exchange(port, data, wait_s=3)
                    except ConnectionError as exc:
                        failures["raw-" + type(exc).__name__] += 1
                        return
                    statuses[status_of(answer)] += 1

            for i in range(0, len(raws), 200):
                await asyncio.gather(*(send_raw(d) for d in raws[i : i + 200]))
                peak = max(peak, rss_kb(proc.pid))
            for status in await asyncio.gather(*slow):
                statuses[status] += 1

            total = sum(statuses.values()) + sum(failures.values())
            print(
                f"\nfuzz: {total} requests, statuses {dict(statuses)}, client-side failures {dict(failures)}"
            )
            print(f"fuzz: RSS start {rss_start / 1024:.1f} MB, peak {peak / 1024:.1f} MB")
            assert total >= 10_000
            assert proc.returncode is None, "relay process died"
            async with http.get(url + "/healthz") as r:
                assert r.status == 200
            async with http.get(url + "/v1/models", headers={"X-Relay-Token": token}) as r:
                assert r.status == 200
        assert all(400 <= s < 500 for s in statuses), dict(statuses)
        assert statuses[408] >= SLOW_SENDERS // 2
        # Connections the relay cut while a client was still sending an oversized body are the only
        # tolerated client-side errors, and they must stay rare.
        assert sum(failures.values()) < total * 0.02, dict(failures)
        assert peak < RSS_LIMIT_KB
        relay_statuses = Counter(
            json.loads(line).get("status")
            for line in log_path.read_text().splitlines()
            if '"request"' in line
        )
        assert not [s for s in relay_statuses if s >= 500 and s != 502], dict(relay_statuses)
        assert not relay_statuses.get(502)
        log_text = log_path.read_text()
        for secret in (token, keys[0], *UPSTREAM_KEYS):  # no secret in 10k lines of access log
            assert secret not in log_text
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
