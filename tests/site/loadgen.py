"""Bounded load generator for the playbook suites: chat requests through the lab edge, as a client would.

Each worker cycles through four kinds of request to `/v1/chat/completions`: plain JSON and plain streamed
(SSE) with the client token as a bearer, and the same two sealed in envelope v2 under the client's own
key (the artifact's `encrypt = true`) by the client library's own transport (llm_relay.client), which names
the relay process's epoch, learns it from a replica's sealed 409 and checks every answer's binding,
numbering and terminator, as a user's client does. Before every request the client artifact (the TOML file the
playbooks write) is re-read if it changed, so the generator switches to a rotated token or key the way a
user's client does when the file is replaced. A request counts as failed on any transport error, a status
other than 200, an answer that cannot be opened, or a stream that ends without `data: [DONE]`.

Bounded: at most `max_requests` requests, `max_seconds` seconds and `rate` requests per second (below the
relay's per-client rate limit, so a 429 is a failure too), `concurrency` threads. Loopback only:
the artifact's hostname must resolve to a loopback address (the lab edge); anything else is refused.

Run by hand: `python -m tests.site.loadgen ARTIFACT --ca CA --seconds 30` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import socket
import sys
import threading
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from llm_relay.client.config import Profile
from llm_relay.client.factory import http_client

KINDS = ("plain", "plain_stream", "sealed", "sealed_stream")
PATH = "/v1/chat/completions"
MODEL = "lab/echo"


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str
    fernet_key: str
    # The service token of a deployment behind Cloudflare Access (playbooks: cloudflare_access_enabled).
    access_client_id: str = ""
    access_client_secret: str = field(default="", repr=False)

    def access_headers(self) -> dict[str, str]:
        """CF-Access-Client-Id/-Secret: the lab edge checks them before any request reaches a connector."""
        if not self.access_client_id:
            return {}
        return {
            "CF-Access-Client-Id": self.access_client_id,
            "CF-Access-Client-Secret": self.access_client_secret,
        }

    @property
    def label(self) -> str:
        """A non-secret name for this token/key pair (tests compare labels, never print secrets)."""
        digest = hashlib.sha256(f"{self.token}:{self.fernet_key}".encode()).hexdigest()
        return digest[:12]


def read_artifact(path: Path) -> Credentials:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    profile = data["profiles"][data["default_profile"]]
    return Credentials(
        profile["url"].rstrip("/"),
        profile["token"],
        profile.get("fernet_key", ""),
        profile.get("access_client_id", ""),
        profile.get("access_client_secret", ""),
    )


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise ValueError(f"{host} resolves to {sorted(addresses)}: load goes to loopback only")


@dataclass
class Stats:
    sent: int = 0
    failed: int = 0
    by_kind: Counter = field(default_factory=Counter)
    by_credentials: Counter = field(default_factory=Counter)
    failed_by_kind: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    switches: list[tuple[float, str]] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    def summary(self) -> dict:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "seconds": round(self.stopped - self.started, 1),
            "by_kind": dict(self.by_kind),
            "by_credentials": dict(self.by_credentials),
            "failed_by_kind": dict(self.failed_by_kind),
            "switches": len(self.switches),
            "first_failures": self.failures[:10],
        }


class LoadGenerator:
    """Threads sending requests until stop(), max_requests or max_seconds, whichever comes first."""

    def __init__(
        self,
        artifact: Path,
        ca_path: Path,
        concurrency: int = 4,
        max_requests: int = 20000,
        max_seconds: float = 1800,
        rate: float = 6.0,
    ) -> None:
        self.artifact, self.ca_path = Path(artifact), str(ca_path)
        self.concurrency, self.max_requests, self.max_seconds = concurrency, max_requests, max_seconds
        # At most `rate` requests per second in all: a steady load under the relay's per-client rate limit
        # (600/min by default) even when a single replica takes all of it, not a flood.
        self.pause = concurrency / rate
        self.stats = Stats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stamp: tuple[int, int] | None = None
        self._creds: Credentials | None = None
        self.credentials()  # fail now, not in a thread, when the artifact is missing or not loopback

    # -- the artifact, re-read when it changes --------------------------------------------------------
    def credentials(self) -> Credentials:
        with self._lock:
            stat = self.artifact.stat()
            stamp = (stat.st_mtime_ns, stat.st_ino)
            if stamp != self._stamp:
                creds = read_artifact(self.artifact)
                require_loopback(creds.url)
                if self._creds is None or creds != self._creds:
                    self.stats.switches.append((time.monotonic(), creds.label))
                self._stamp, self._creds = stamp, creds
            assert self._creds is not None
            return self._creds

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> LoadGenerator:
        self.stats.started = time.monotonic()
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._worker, args=(n,), name=f"loadgen-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> Stats:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        self.stats.stopped = time.monotonic()
        return self.stats

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _claim(self) -> bool:
        with self._lock:
            if self.stats.sent >= self.max_requests:
                return False
            self.stats.sent += 1
            return True

    def _worker(self, n: int) -> None:
        session = requests.Session()
        sealed = SealedClient(self.ca_path)
        deadline = self.stats.started + self.max_seconds
        i = n
        while not self._stop.is_set() and time.monotonic() < deadline and self._claim():
            kind = KINDS[i % len(KINDS)]
            i += 1
            creds = self.credentials()
            try:
                self._one(session, sealed, creds, kind)
                error = None
            except Exception as exc:  # every failure is counted and described, none hidden
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.stats.by_kind[kind] += 1
                self.stats.by_credentials[creds.label] += 1
                if error is not None:
                    self.stats.failed += 1
                    self.stats.failed_by_kind[kind] += 1
                    at = time.monotonic() - self.stats.started
                    self.stats.failures.append(f"{at:.1f}s {kind} [{creds.label}] {error}"[:400])
            self._stop.wait(self.pause)
        sealed.close()

    # -- one request of each kind ----------------------------------------------------------------------
    def _one(self, session: requests.Session, sealed: SealedClient, creds: Credentials, kind: str) -> None:
        stream = kind.endswith("stream")
        body = json.dumps(
            {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": f"load {kind}"}]}
        ).encode()
        if kind.startswith("plain"):
            headers = {"Authorization": f"Bearer {creds.token}", "Content-Type": "application/json"}
            headers.update(creds.access_headers())
            with session.post(
                creds.url + PATH, data=body, headers=headers, verify=self.ca_path, timeout=60, stream=stream
            ) as resp:
                expect(resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text[:200]}")
                if stream:
                    check_events(b"".join(resp.iter_content(chunk_size=None)).split(b"\n\n"))
                else:
                    expect("choices" in resp.json(), "answer without choices")
            return
        # The client transport raises on an answer that is not sealed or fails a check, and opens the rest.
        client = sealed.for_credentials(creds)
        headers = {"Content-Type": "application/json"}
        with client.stream("POST", creds.url + PATH, content=body, headers=headers) as resp:
            answer = resp.read()
            expect(resp.status_code == 200, f"inner HTTP {resp.status_code}: {answer[:200]!r}")
            if stream:
                expect(resp.headers.get("Content-Type", "").startswith("text/event-stream"), "not a stream")
                check_events(answer.split(b"\n\n"))
            else:
                expect("choices" in json.loads(answer), "answer without choices")


class SealedClient:
    """One worker's envelope v2 client (llm_relay.client.factory.http_client), made again when the
    artifact's credentials change (a new client learns the relays' epochs again, as a restarted tool does)."""

    def __init__(self, ca_path: str) -> None:
        self.ca_path = ca_path
        self._creds: Credentials | None = None
        self._client = None

    def for_credentials(self, creds: Credentials):
        if creds != self._creds:
            self.close()
            # proxy="": the lab edge is on loopback; never through a proxy of this host's environment.
            profile = Profile(
                url=creds.url,
                token=creds.token,
                fernet_key=creds.fernet_key,
                encrypt=True,
                ca_bundle=self.ca_path,
                proxy="",
                timeout=60.0,
                access_client_id=creds.access_client_id,
                access_client_secret=creds.access_client_secret,
            )
            self._creds, self._client = creds, http_client(profile)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def plain(resp: requests.Response) -> str:
    return f"HTTP {resp.status_code} {resp.headers.get('Content-Type')}: {resp.text[:200]}"


def check_events(events: list[bytes]) -> None:
    data = [e.strip() for e in events if e.strip().startswith(b"data:")]
    expect(bool(data) and data[-1] == b"data: [DONE]", f"stream ended without [DONE] ({len(data)} events)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=6.0, help="requests per second in all")
    args = parser.parse_args(argv)
    gen = LoadGenerator(args.artifact, args.ca, args.concurrency, args.max_requests, args.seconds, args.rate)
    gen.start()
    try:
        while any(t.is_alive() for t in gen._threads):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    print(json.dumps(gen.stop().summary(), indent=2))
    return 1 if gen.stats.failed else 0


if __name__ == "__main__":
    sys.exit(main())
