"""Load side of the sweep (test_relay_sweep.py): every route x every body shape x with/without a token,
all at once, each on its own connection. Stdlib only; run as its own process (`python sweep_load.py
SPEC_JSON`) so that its sending threads do not share a GIL with the health probe that times the relay.

Loopback only. Every connection is bounded in bytes (`send_limit`) and in time (`time_limit`); the whole
run is bounded by the number of combinations (routes x shapes x 2). Prints one JSON line per connection:
route, shape, token, the status of the answer it got (0: none, the connection was cut or timed out),
bytes sent and seconds held.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time

HOST = "127.0.0.1"
SLICE = 65536


def routes(spec: dict) -> list[tuple[str, str, str, dict[str, str]]]:
    """(name, listener, method + target, extra headers): each route the relay serves."""
    return [
        ("healthz", "main", "GET /healthz", {}),
        ("readyz", "main", "POST /readyz", {}),
        (
            "preflight",
            "main",
            "OPTIONS /v1/chat/completions",
            {"Origin": spec["origin"], "Access-Control-Request-Method": "POST"},
        ),
        ("proxy", "main", "POST /v1/chat/completions", {"Content-Type": "application/json"}),
        ("relay", "main", "POST /relay", {"Content-Type": "application/json"}),
        ("fallback", "main", "POST /auto/v1/chat/completions", {"Content-Type": "application/json"}),
        ("envelope_v1", "main", "POST /v1/x", {"Content-Type": "application/vnd.llm-relay.fernet"}),
        ("envelope_v2", "main", "POST /e/x", {"Content-Type": "application/octet-stream"}),
        ("metrics", "metrics", "GET /metrics", {}),
    ]


def _head(target: str, host: str, headers: dict[str, str], token: str | None) -> bytes:
    lines = [f"{target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n").encode()


def shape_bytes(shape: str, limit: int):
    """(extra head lines, generator of body pieces) for a body shape, bounded by `limit` wire bytes."""
    if shape == "content_length":
        size = limit
        return b"Content-Length: %d\r\n" % size, (b"x" * SLICE for _ in range(size // SLICE))
    if shape == "endless":  # declares far more than it will ever send
        return b"Content-Length: 1000000000000\r\n", (b"x" * SLICE for _ in range(limit // SLICE))
    if shape == "slow":
        return b"Content-Length: %d\r\n" % limit, (b"x" * 512 for _ in range(limit // 512))
    te = b"Transfer-Encoding: chunked\r\n"
    if shape == "tiny_chunks":
        piece = b"2\r\nxx\r\n" * (SLICE // 7)
        return te, (piece for _ in range(limit // len(piece)))
    if shape == "large_chunks":
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20))
        return te, (chunk for _ in range(max(1, limit // len(chunk))))
    if shape == "extensions":  # one chunk header whose extension never ends
        return te, (b"1;ext=" if i == 0 else b"a" * SLICE for i in range(limit // SLICE))
    if shape == "trailers":  # a small body, then trailer fields without end
        first = b"2\r\nxx\r\n0\r\n"
        return te, (first if i == 0 else b"X-T%d: %s\r\n" % (i, b"v" * 200) for i in range(limit // 220))
    raise ValueError(shape)


SHAPES = ["content_length", "tiny_chunks", "large_chunks", "extensions", "trailers", "slow", "endless"]


def one(spec: dict, route: tuple, shape: str, token: str | None, out: list) -> None:
    name, listener, target, headers = route
    port = spec["port"] if listener == "main" else spec["metrics_port"]
    started = time.monotonic()
    deadline = started + spec["time_limit"]
    status, sent = 0, 0
    try:
        sock = socket.socket()
        if shape == "not_reading":  # a small window before connecting: the answer cannot vanish in it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect((HOST, port))
    except OSError:
        out.append({"route": name, "shape": shape, "token": bool(token), "status": -1, "sent": 0, "s": 0})
        return
    with sock:
        if shape == "not_reading":
            status, sent = _not_reading(sock, spec, token, deadline)
        else:
            extra, body = shape_bytes(shape, spec["send_limit"])
            try:
                sock.sendall(_head(target, "relay", headers, token) + extra + b"\r\n")
            except OSError:
                body = iter(())
            sock.setblocking(False)
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLOUT)
            answer = b""
            pace = 0.02 if shape == "slow" else 0.0
            for piece in body:
                if time.monotonic() > deadline:
                    break
                events = 0
                while not events & select.POLLOUT and time.monotonic() < deadline:
                    events = dict(poller.poll(100)).get(sock.fileno(), 0)
                    if events & select.POLLIN:
                        break
                if events & select.POLLIN:
                    break  # answered (or closed): stop sending
                try:
                    sent += sock.send(piece)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break
                if pace:
                    time.sleep(pace)
            sock.setblocking(True)
            sock.settimeout(max(0.2, deadline - time.monotonic()))
            with contextlib.suppress(OSError):
                answer = sock.recv(4096)
            if answer.startswith(b"HTTP/1.1 "):
                status = int(answer[9:12])
    out.append(
        {
            "route": name,
            "shape": shape,
            "token": bool(token),
            "status": status,
            "sent": sent,
            "s": round(time.monotonic() - started, 2),
        }
    )


def _not_reading(sock: socket.socket, spec: dict, token: str | None, deadline: float) -> tuple[int, int]:
    """Ask for a large answer, never read it: held until the relay cuts us (or the time is up)."""
    body = json.dumps({"model": "m", "size": spec["answer_size"]}).encode()
    head = _head("POST /v1/big", "relay", {"Content-Type": "application/json"}, token)
    sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(max(0.0, deadline - time.monotonic()))
    # Now read what is there: a relay that cut us ends with EOF or a reset before the whole answer.
    got, status = 0, -2
    sock.settimeout(1.0)
    try:
        while chunk := sock.recv(1 << 20):
            if not got and chunk.startswith(b"HTTP/1.1 "):
                status = int(chunk[9:12])
            got += len(chunk)
        return (0 if status in (-2, 200) else status), len(body)  # EOF: cut (or a refusal)
    except TimeoutError:
        return status, len(body)  # still open: not cut (a 401 keeps its connection)
    except OSError:
        return 0, len(body)  # reset: cut


def main() -> None:
    spec = json.loads(sys.argv[1])
    out: list[dict] = []
    threads = []
    for route in routes(spec):
        shapes = [*SHAPES, "not_reading"] if route[0] == "proxy" else SHAPES
        for shape in shapes:
            for token in (spec["token"], None):
                threads.append(threading.Thread(target=one, args=(spec, route, shape, token, out)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(spec["time_limit"] + 30)
    for line in out:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
