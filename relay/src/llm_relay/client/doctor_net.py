"""doctor's network checks: DNS, the corporate proxy, TLS. Raw sockets, so each hop's cause is exact.

The route is the one `network.proxy_url()` chose for every other command, so a green doctor means the
other commands take a working path.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from .access import headers_for
from .config import Profile
from .network import dial_target, proxy_credentials, proxy_url, ssl_context


@dataclass
class Check:
    name: str
    status: str  # ok | fail | warn | skip
    detail: str
    code: str = ""  # stable identifier of a failure (scripts and tests match on it)
    hint: str = ""
    ms: float | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ms = (time.perf_counter() - self.start) * 1000


def resolve(host: str, port: int) -> list[str]:
    """Addresses of `host`; names under `.invalid` never resolve (RFC 6761 6.4), without any query."""
    if host.rstrip(".").lower().endswith(".invalid") or host.lower() == "invalid":
        raise socket.gaierror(socket.EAI_NONAME, "reserved .invalid name (RFC 6761): never resolves")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def _relay_dns(profile: Profile) -> Check:
    host, port = dial_target(profile)
    mapped = f" (connect_to: {profile.host} is dialled at {host}:{port})" if profile.connect_to else ""
    try:
        addrs = resolve(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        return Check(
            "dns",
            "fail",
            f"relay host {host!r} does not resolve: {exc}{mapped}",
            "relay_host_unknown",
            "check `url`; if this PC needs a proxy to reach the internet, set `proxy` or HTTPS_PROXY",
        )
    return Check("dns", "ok", f"relay {host} -> {', '.join(addrs)}{mapped}")


def _proxy_dns(profile: Profile, proxy: str) -> Check:
    parts = urlsplit(proxy)
    try:
        addrs = resolve(parts.hostname or "", parts.port or 8080)
    except (socket.gaierror, UnicodeError) as exc:
        return Check(
            "dns",
            "fail",
            f"proxy host {parts.hostname!r} does not resolve: {exc}",
            "proxy_host_unknown",
            "check the proxy host name in `proxy` / HTTPS_PROXY",
        )
    detail = f"proxy {parts.hostname} -> {', '.join(addrs)}"
    if _relay_dns(profile).failed:
        detail += f"; relay {profile.host} left to the proxy to resolve (normal behind one)"
    else:
        detail += f"; relay {profile.host} also resolves locally"
    return Check("dns", "ok", detail)


def check_dns(profile: Profile) -> Check:
    proxy = proxy_url(profile)
    with Timer() as timer:
        check = _proxy_dns(profile, proxy) if proxy else _relay_dns(profile)
    check.ms = timer.ms
    return check


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > 65536:
            break
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP proxy answer: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.setdefault(key.strip().lower(), value.strip())
    return int(parts[1]), headers


def _proxy_request(profile: Profile, proxy: str) -> bytes:
    target = f"{profile.host}:{profile.port}"
    if urlsplit(profile.url).scheme == "https":
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    else:  # plain-http relay: the proxy forwards an absolute-form request instead of tunnelling
        lines = [f"GET {profile.root}/healthz HTTP/1.1", f"Host: {target}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers_for(profile).items()]  # for Access, if any
    creds = proxy_credentials(proxy)
    if creds:
        basic = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {basic}")
    return ("\r\n".join([*lines, "", ""])).encode("latin-1")


def _proxy_verdict(status: int, headers: dict[str, str], profile: Profile, has_creds: bool) -> Check | None:
    """None when the proxy let us through; otherwise the failure, named as precisely as the answer allows."""
    if 200 <= status < 300 or "cf-ray" in headers:
        return None  # a CF-RAY came from Cloudflare, past the proxy: the relay checks judge that answer
    via = f"proxy answered {status}"
    if status == 407:
        schemes = headers.get("proxy-authenticate", "unknown scheme")
        if has_creds:
            return Check(
                "proxy",
                "fail",
                f"{via}: proxy rejected the credentials ({schemes})",
                "proxy_auth_rejected",
                "check user/password in the proxy URL (percent-encode @ : /)",
            )
        return Check(
            "proxy",
            "fail",
            f"{via}: proxy requires authentication ({schemes})",
            "proxy_auth_required",
            "put credentials in the proxy URL: http://user:password@proxy:port (percent-encoded); "
            "for NTLM/Kerberos-only proxies run a local helper (cntlm, px) and point `proxy` at it",
        )
    squid_error = headers.get("x-squid-error", "")
    if "DNS" in squid_error:
        return Check(
            "proxy",
            "fail",
            f"{via} ({squid_error}): the proxy cannot resolve {profile.host}",
            "relay_host_unknown",
            "check the host in `url`",
        )
    if status == 403:
        return Check(
            "proxy",
            "fail",
            f"{via}: the proxy refuses to reach {profile.host}:{profile.port} (policy)",
            "proxy_denied",
            "ask for the relay host to be allowed, or use port 443",
        )
    if status in (502, 503, 504):
        return Check(
            "proxy",
            "fail",
            f"{via} ({squid_error or 'no detail'}): the proxy cannot reach the relay",
            "relay_unreachable_via_proxy",
            "is the relay up? `llm-relay doctor` from another network",
        )
    return Check("proxy", "fail", f"{via}", "proxy_error", "unexpected proxy answer")


def open_route(profile: Profile) -> tuple[socket.socket, Check]:
    """A TCP connection to the relay (tunnelled through the proxy when one is configured), and its Check.

    On failure the socket is closed and the Check says why; the caller stops there.
    """
    proxy = proxy_url(profile)
    timeout = profile.connect_timeout
    if not proxy:
        host, port = dial_target(profile)
        with Timer() as timer:
            try:
                sock = socket.create_connection((host, port), timeout=timeout)
            except OSError as exc:
                check = Check(
                    "connect",
                    "fail",
                    f"cannot connect to {host}:{port}: {exc}",
                    "relay_unreachable",
                    "is the relay URL right and the relay up?",
                )
                return None, check
        return sock, Check("proxy", "skip", "no proxy: direct connection", ms=timer.ms)
    parts = urlsplit(proxy)
    where = f"{parts.hostname}:{parts.port or 8080}"
    with Timer() as timer:
        try:
            sock = socket.create_connection((parts.hostname, parts.port or 8080), timeout=timeout)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            return None, Check(
                "proxy",
                "fail",
                f"proxy {where} is down or unreachable: {reason}",
                "proxy_unreachable",
                "check the proxy host/port; is the proxy running?",
            )
        try:
            sock.sendall(_proxy_request(profile, proxy))
            status, headers = _read_head(sock)
        except OSError as exc:
            sock.close()
            return None, Check(
                "proxy",
                "fail",
                f"proxy {where} broke the connection: {exc}",
                "proxy_unreachable",
                "is that address really an HTTP proxy?",
            )
    verdict = _proxy_verdict(status, headers, profile, proxy_credentials(proxy) is not None)
    if verdict is not None:
        sock.close()
        verdict.ms = timer.ms
        return None, verdict
    how = "CONNECT allowed" if urlsplit(profile.url).scheme == "https" else "forwards plain HTTP"
    auth = ", authenticated" if proxy_credentials(proxy) else ""
    return sock, Check("proxy", "ok", f"proxy {where} reachable, {how}{auth}", ms=timer.ms)


def _describe_cert(profile: Profile) -> str:
    """Subject and issuer of the certificate the relay address presents (fetched without verification)."""
    sock, _ = open_route(profile)
    if sock is None:
        return ""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with context.wrap_socket(sock, server_hostname=profile.host) as tls:
            der = tls.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        return f"presented: subject {cert.subject.rfc4514_string()}, issuer {cert.issuer.rfc4514_string()}"
    except (OSError, ValueError):
        return ""


def check_tls(profile: Profile, sock: socket.socket) -> Check:
    if urlsplit(profile.url).scheme != "https":
        sock.close()
        if profile.encrypting:
            return Check("tls", "skip", "relay URL is plain http; payloads are Fernet envelopes")
        return Check(
            "tls",
            "warn",
            "relay URL is plain http and encrypt is off: prompts and token are readable",
            hint="use https, or encrypt = true with a fernet_key",
        )
    with Timer() as timer:
        try:
            with ssl_context(profile).wrap_socket(sock, server_hostname=profile.host) as tls:
                version = tls.version()
        except ssl.SSLCertVerificationError as exc:
            code = "tls_hostname_mismatch" if exc.verify_code == 62 else "tls_verify_failed"
            detail = f"certificate verify failed: {exc.verify_message}"
            seen = _describe_cert(profile)
            return Check(
                "tls",
                "fail",
                f"{detail}; {seen}" if seen else detail,
                code,
                "if the issuer is your company's CA, the proxy inspects TLS: set ca_bundle to its PEM "
                "(and use encrypt = true so it still sees nothing); never verify_tls = false",
            )
        except (ssl.SSLError, OSError) as exc:
            return Check(
                "tls",
                "fail",
                f"TLS handshake failed: {exc}",
                "tls_handshake_failed",
                "is the relay port really HTTPS? does the proxy intercept it?",
            )
    if not profile.verify_tls:
        return Check(
            "tls",
            "warn",
            f"{version} but verification is DISABLED (verify_tls = false)",
            hint="set ca_bundle instead",
            ms=timer.ms,
        )
    return Check("tls", "ok", f"{version}, certificate valid for {profile.host}", ms=timer.ms)
