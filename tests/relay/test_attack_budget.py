"""The 2026-12-07 review's attacks (issue 25), each in the shape the review used, against a relay process
with the default settings (so the same file measures an older relay too: run it with that relay's
interpreter). Each prints the relay's RSS growth and /healthz latency on another connection; the bounds
are the acceptance figures: RSS growth under the default memory budget (128 MiB, + the allocator's 25 %),
/healthz p95 < 100 ms, the relay alive. Loopback only; every loop bounded in count and time.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time

import pytest
from attack_support import HOST, Probe, RelayProcess, SizedUpstream, raise_own_fd_limit, read_response
from llm_relay import envelope, envelope_v2
from llm_relay.client.codec_v2 import relay_epoch
from relay_support import status_of
from test_attack_relay import push, settle

pytestmark = pytest.mark.slow
MIB = 1024 * 1024
BUDGET_KIB = 128 * 1024 * 5 // 4  # the default memory_budget_bytes + the allocator's share on it
ORIGIN = "https://app.example"
EXTRA = f"""
[routes.auto]
providers = [
  {{ provider = "openrouter", model = "first/model" }}, {{ provider = "lab", model = "other/model" }},
]

[cors]
allow_origins = ["{ORIGIN}"]
"""


def relay_with(tmp_path, up: SizedUpstream, extra_server: str = "") -> RelayProcess:
    return RelayProcess(tmp_path, f"http://{HOST}:{up.port}/api/v1", extra_server=extra_server, extra=EXTRA)


def in_threads(n: int, target, *args) -> list:
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(target(*args))) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def send_body(port: int, head: bytes, size: int, limit_s: float = 10.0) -> int:
    """One client: `head` declaring `size` bytes, then the bytes (until answered); returns the status."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(head)
        push(sock, b"x" * 65536, size, limit_s, stop_on_answer=True)
        return status_of(read_response(sock, 5))


def check(probe: Probe, relay: RelayProcess, what: str, before_kb: int) -> None:
    line = probe.report(what, before_kb)
    assert relay.alive(), relay.log_text()[-2000:]
    assert probe.rss_peak_kb - before_kb < BUDGET_KIB, line
    assert probe.p95_ms() < 100, line


def test_attack_bodies_to_token_free_routes(tmp_path):
    raise_own_fd_limit(4096)
    with SizedUpstream() as up, relay_with(tmp_path, up) as relay:
        before = settle(relay)
        probe = Probe(relay).start()
        statuses = []
        healthz = b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (10 * MIB)
        for _ in range(3):  # the review's repeated rounds of 40 x 10 MB
            statuses += in_threads(40, send_body, relay.port, healthz, 10 * MIB)
        readyz = b"GET /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (10 * MIB)
        statuses += in_threads(30, send_body, relay.port, readyz, 10 * MIB)
        preflight = (
            b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n"
            b"Access-Control-Request-Method: POST\r\nContent-Length: %d\r\n\r\n" % (ORIGIN.encode(), 10 * MIB)
        )
        statuses += in_threads(30, send_body, relay.port, preflight, 10 * MIB)
        probe.stop()
        print("statuses:", sorted(set(statuses)))
        check(probe, relay, "40 x 10 MB to /healthz x 3, 30 /readyz, 30 preflights", before)
        assert set(statuses) == {413}


def test_attack_150_unauthenticated_envelopes(tmp_path):
    raise_own_fd_limit(4096)
    with SizedUpstream() as up, relay_with(tmp_path, up) as relay:
        before = settle(relay)
        probe = Probe(relay).start()
        head = (
            b"POST /e/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n%cunknown!" % (2 * MIB, envelope_v2.VERSION)
        )
        statuses = in_threads(150, send_body, relay.port, head, 2 * MIB - 9)
        probe.stop()
        print("statuses:", sorted(set(statuses)))
        check(probe, relay, "150 x 2 MB envelopes with an unknown key", before)
        assert set(statuses) == {403}


def tiny_chunks(port: int, token: str, size: int) -> int:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" % token.encode()
        )
        piece = b"2\r\nxx\r\n" * 9000
        push(sock, piece, size * 7 // 2, 30, stop_on_answer=True)
        return status_of(read_response(sock, 5))


def test_attack_tiny_chunks(tmp_path):
    with SizedUpstream() as up, relay_with(tmp_path, up) as relay:
        before = settle(relay)
        probe = Probe(relay).start()
        statuses = in_threads(2, tiny_chunks, relay.port, relay.token, 33 * MIB)
        probe.stop()
        print("statuses:", statuses)
        check(probe, relay, "2 connections x 33 MiB in 2-byte chunks", before)
        assert set(statuses) == {400}


def client_key(relay: RelayProcess) -> envelope_v2.ClientKey:
    line = next(x for x in (relay.dir / "client-keys").read_text().splitlines() if x.startswith("alice:"))
    return envelope_v2.ClientKey(line.partition(":")[2], "alice")


def epoch_of(relay: RelayProcess) -> str:
    """The relay process's epoch, which every envelope names (server/replay.py): learnt from one probe."""
    line = next(x for x in (relay.dir / "client-keys").read_text().splitlines() if x.startswith("alice:"))
    return relay_epoch(f"http://{HOST}:{relay.port}", line.partition(":")[2], relay.token)


def sealed_v2(relay: RelayProcess, size: int, result: list, open_it: bool = True, epoch: str = "") -> None:
    """One v2 request for a `size`-byte answer; appends (inner status, body bytes) when `open_it`, else
    (outer status, bytes received): opening 57 MiB costs this process's GIL, which the probe shares."""
    key = client_key(relay)
    inner = envelope.InnerRequest(
        "POST",
        "/v1/big",
        body=json.dumps({"model": "m", "size": size}).encode(),
        token=relay.token,
        headers={"Content-Type": "application/json"},
        epoch=epoch,
    )
    body, nonce = envelope_v2.seal_request(key, inner)
    conn = http.client.HTTPConnection(HOST, relay.port, timeout=30)
    conn.request("POST", "/e/x", body, {"Content-Type": "application/octet-stream"})
    resp = conn.getresponse()
    opener = envelope_v2.ReplyOpener(key, nonce)
    got = 0
    while chunk := resp.read(1 << 20):
        got += sum(len(p) for p in opener.feed(chunk)) if open_it else len(chunk)
    conn.close()
    if not open_it:
        result.append((resp.status, got))
        return
    opener.close()
    result.append((opener.head[0] if opener.head else 0, got))


def test_attack_sealed_57mib_answers(tmp_path):
    size = 57 * MIB
    with SizedUpstream() as up, relay_with(tmp_path, up) as relay:
        before = settle(relay)
        epoch = epoch_of(relay)
        one: list = []
        sealed_v2(relay, size, one, epoch=epoch)  # opened whole: the frames reassemble the answer
        probe = Probe(relay).start()
        three: list = []
        threads = [
            threading.Thread(target=sealed_v2, args=(relay, size, three, False, epoch)) for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        keys = envelope.make_fernet(relay.fernet_keys)
        inner = envelope.InnerRequest(
            "POST",
            "/v1/big",
            body=json.dumps({"model": "m", "size": size}).encode(),
            token=relay.token,
            headers={"Content-Type": "application/json"},
            epoch=epoch,
        )
        conn = http.client.HTTPConnection(HOST, relay.port, timeout=60)
        conn.request(
            "POST", "/v1/x", envelope.seal_request(keys, inner), {"Content-Type": envelope.CONTENT_TYPE}
        )
        v1 = envelope.open_response(keys, conn.getresponse().read())
        conn.close()
        probe.stop()
        print("v2 one:", one, "v2 three:", three, "v1:", v1.status)
        check(probe, relay, "v2 57 MiB answer x 1 then x 3, v1 x 1", before)
        answer = len(b'{"model":"m","usage":{"prompt_tokens":1,"completion_tokens":1},"x":""}') + size
        assert one == [(200, answer)]  # the whole answer, frame by frame
        assert [status for status, got in three] == [200] * 3 and min(got for _, got in three) > answer
        assert v1.status == 502  # v1 cannot be sealed frame by frame: over the connection's share, refused


def not_reading(port: int, token: str, hold_s: float) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((HOST, port))
    body = json.dumps({"model": "m", "size": 8 * MIB}).encode()
    sock.sendall(
        b"POST /v1/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (token.encode(), len(body), body)
    )
    time.sleep(hold_s)
    sock.close()


def test_attack_40_clients_that_stop_reading(tmp_path):
    with SizedUpstream() as up, relay_with(tmp_path, up) as relay:
        before = settle(relay)
        probe = Probe(relay).start()
        in_threads(40, not_reading, relay.port, relay.token, 6.0)
        probe.stop()
        check(probe, relay, "40 clients asking for 8 MiB and reading none of it", before)


def test_attack_fallback_model_override_on_a_large_body(tmp_path):
    with SizedUpstream() as up, relay_with(tmp_path, up) as relay:
        before = settle(relay)
        body = json.dumps({"model": "a", "messages": [{"role": "user", "content": "x" * 8_300_000}]}).encode()
        # The route's first entry overrides the model: before, that parsed and re-serialised the body.
        probe = Probe(relay).start()
        conn = http.client.HTTPConnection(HOST, relay.port, timeout=30)
        conn.request(
            "POST",
            "/auto/v1/chat/completions",
            body,
            {"Authorization": f"Bearer {relay.token}", "Content-Type": "application/json"},
        )
        status = conn.getresponse().status
        conn.close()
        time.sleep(0.5)
        probe.stop()
        check(probe, relay, "one 8.3 MB body on a fallback route", before)
        assert status == 200 and max(probe.latencies_ms) < 500


def extension(port: int, limit_s: float) -> int:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;e=")
        push(sock, b"a" * 65536, 1 << 40, limit_s, stop_on_answer=True)
        return status_of(read_response(sock, 5))


def test_attack_endless_chunk_extensions(tmp_path):
    with SizedUpstream() as up, relay_with(tmp_path, up) as relay:
        before = settle(relay)
        probe = Probe(relay).start()
        started = time.monotonic()
        statuses = in_threads(4, extension, relay.port, 5.0)
        took = time.monotonic() - started
        probe.stop()
        check(probe, relay, f"4 endless chunk extensions (answered after {took:.1f} s)", before)
        assert set(statuses) == {413} or set(statuses) <= {400, 413}


def test_attack_idle_connections_leave_their_slots(tmp_path):
    with SizedUpstream() as up, relay_with(tmp_path, up, extra_server="max_connections = 64") as relay:
        settle(relay)
        idle = [socket.create_connection((HOST, relay.port), timeout=5) for _ in range(64)]
        try:
            with relay.connect() as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert status_of(read_response(sock, 5)) == 503  # every slot held
            time.sleep(11)  # the first-byte timeout (10 s) and one deadline sweep
            with relay.connect() as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert status_of(read_response(sock, 5)) == 200
        finally:
            for sock in idle:
                sock.close()


def test_attack_distinct_model_names_keep_metrics_bounded(tmp_path):
    with SizedUpstream() as up, relay_with(tmp_path, up) as relay:
        settle(relay)
        conn = http.client.HTTPConnection(HOST, relay.port, timeout=10)
        headers = {"Authorization": f"Bearer {relay.token}", "Content-Type": "application/json"}
        for i in range(2000):
            conn.request("POST", "/v1/chat/completions", json.dumps({"model": f"m{i}"}), headers)
            conn.getresponse().read()
        conn.request("GET", "/metrics", headers=headers)
        text = conn.getresponse().read().decode()
        conn.close()
        models = set(re.findall(r'model="([^"]*)"', text))
        print(f"/metrics: {len(text)} bytes, {len(models)} model label values")
        assert len(models) <= 257 and "other" in models
