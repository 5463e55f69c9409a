"""Attack suite: the security review's attacks on a relay process over loopback, with its acceptance
numbers (issue 16). Each attack prints the relay's RSS and the latency of /healthz probed on another
connection while it runs. Bounds are the acceptance figures; every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time

import pytest
from attack_support import (
    HOST,
    Probe,
    RelayProcess,
    UpstreamThread,
    open_fds,
    raise_own_fd_limit,
    read_response,
)
from relay_support import CHAT, status_of

pytestmark = pytest.mark.slow
MIB = 1024 * 1024


def settle(relay: RelayProcess) -> int:
    """The relay's RSS once it has answered a first request (imports and pools warmed up)."""
    with socket.create_connection((HOST, relay.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        read_response(sock, 5)
    time.sleep(0.2)
    return relay.rss_kb()


def push(sock: socket.socket, chunk: bytes, total: int, limit_s: float, stop_on_answer: bool) -> int:
    """Send up to `total` bytes without blocking, for at most `limit_s`; stop early when the peer
    answers (if asked), stops taking bytes for good (reset) or the time is up. Returns bytes sent."""
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + limit_s
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLOUT)
    try:
        while sent < total and time.monotonic() < deadline:
            events = dict(poller.poll(200)).get(sock.fileno(), 0)
            if events & select.POLLIN and stop_on_answer:
                break
            if events & select.POLLOUT:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(chunk[: total - sent])
    except OSError:
        pass  # the relay cut the connection: it is done with us
    sock.setblocking(True)
    return sent


def readable(sock: socket.socket) -> bool:
    poller = select.poll()  # select() cannot watch descriptors above 1023
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def one_big_header(port: int) -> tuple[int, bool, int]:
    """One client sending a 64 MiB header value: (status it got, whether the relay then closed, bytes it
    had sent when the answer came, kernel buffers included)."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = push(sock, b"a" * 65536, 64 * MIB, 30, stop_on_answer=True)
        answer = read_response(sock, 5)
        sock.settimeout(5)
        try:
            closed = sock.recv(65536) == b""
        except OSError:
            closed = True  # reset after the answer: closed too
    return status_of(answer), closed, sent


def test_attack_one_64mib_header(tmp_path):
    """The attack repeated 40 times in a row (bounded by 60 s), so the probe gets enough samples."""
    with UpstreamThread() as up, RelayProcess(tmp_path, up.base) as relay:
        before = settle(relay)
        probe = Probe(relay).start()
        time.sleep(0.2)
        results = []
        deadline = time.monotonic() + 60
        while len(results) < 40 and time.monotonic() < deadline:
            results.append(one_big_header(relay.port))
        time.sleep(0.3)
        probe.stop()
        most = max(sent for _, _, sent in results)
        probe.report(f"one 64 MiB header, x{len(results)} (at most {most} bytes sent before its 431)", before)
        assert results and all(status == 431 and closed for status, closed, _ in results), results
        assert probe.rss_peak_kb - before < 16 * 1024
        assert probe.failures == 0 and probe.p95_ms() < 100
        assert relay.alive()


def test_attack_600k_pipelined_requests_never_read(tmp_path):
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with UpstreamThread() as up, RelayProcess(tmp_path, up.base) as relay:
        before = settle(relay)
        probe = Probe(relay).start()
        with socket.create_connection((HOST, relay.port), timeout=5) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # never read, keep it small
            sent = push(sock, one * 600_000, len(one) * 600_000, 20, stop_on_answer=False)
        time.sleep(0.5)
        probe.stop()
        probe.report(f"600,000 pipelined requests never read ({sent // len(one)} accepted by TCP)", before)
        assert probe.rss_peak_kb - before < 32 * 1024
        assert probe.failures == 0 and probe.p95_ms() < 1000
        assert relay.alive()


def _stream(port: int, token: str, result: dict) -> None:
    body = json.dumps({**CHAT, "stream": True}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    data = b""
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(head + body)
        deadline = time.monotonic() + 60
        while b"data: [DONE]" not in data and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    result["data"] = data


def test_attack_2000_idle_connections_with_cap_1000(tmp_path):
    if raise_own_fd_limit(4600) < 4600:
        pytest.skip("this test process cannot open 2,000+ sockets (RLIMIT_NOFILE hard limit)")
    slow_stream = [{"path": "chat", "token_delay_ms": 150}]
    with (
        UpstreamThread(slow_stream) as up,
        RelayProcess(tmp_path, up.base, "max_connections = 1000", nofile=2048) as relay,
    ):
        before = settle(relay)
        probe = Probe(relay).start()
        result: dict = {}
        streamer = threading.Thread(target=_stream, args=(relay.port, relay.token, result), daemon=True)
        streamer.start()
        time.sleep(0.3)
        socks, refused = [], 0
        for _ in range(2000):
            try:
                socks.append(socket.create_connection((HOST, relay.port), timeout=2))
            except OSError:
                refused += 1
        time.sleep(1.0)
        fds = open_fds(relay.pid)
        held = got_503 = 0
        for sock in socks:
            if not readable(sock):
                held += 1
                continue
            try:
                answer = sock.recv(4096)
            except OSError:
                answer = b""
            if status_of(answer) == 503:
                got_503 += 1
            else:
                refused += 1
        for sock in socks:
            sock.close()
        streamer.join(60)
        time.sleep(0.3)
        probe.stop()
        probe.report(
            f"2,000 idle connections, cap 1,000: {held} held, {got_503} got 503, {refused} refused; "
            f"relay fds {fds}",
            before,
        )
        assert held <= 1000 and held + got_503 + refused == 2000 and got_503 + refused >= 1000
        assert fds < 2048 and "Too many open files" not in relay.log_text()
        assert b"data: [DONE]" in result.get("data", b"")  # the stream running all along completed
        assert probe.failures == 0 and relay.alive()
        with socket.create_connection((HOST, relay.port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(read_response(sock, 5)) == 200


def test_attack_40_unauthenticated_10mib_bodies(tmp_path):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10485760\r\n\r\n"
    )
    with UpstreamThread() as up, RelayProcess(tmp_path, up.base) as relay:
        before = settle(relay)
        probe = Probe(relay).start()
        socks = [socket.create_connection((HOST, relay.port), timeout=5) for _ in range(40)]
        for sock in socks:
            sock.sendall(head)
        answers = [read_response(sock, 5) for sock in socks]  # before a single body byte is sent
        pushed = sum(push(sock, b"x" * 65536, 10 * MIB, 0.25, stop_on_answer=False) for sock in socks)
        for sock in socks:
            sock.close()
        time.sleep(0.3)
        probe.stop()
        probe.report(f"40 unauthenticated 10 MiB bodies ({pushed // MIB} MiB pushed after the 401s)", before)
        assert [status_of(a) for a in answers] == [401] * 40
        assert probe.rss_peak_kb - before < 16 * 1024
        assert probe.failures == 0 and probe.p95_ms() < 1000 and relay.alive()
