"""The edge's own certificate: cloudflared dials its edge with SNI `h2.cftunnel.com` and checks the name.

The lab CA (lab/ca.py) signs a second server certificate for the names cloudflared verifies on the
connector side (`h2.cftunnel.com` for tunnel connections, `probe.cftunnel.com` for its start-up pre-check),
kept beside the CA as `edge.crt`/`edge.key`. cloudflared trusts it through `--cacert`/`TUNNEL_CACERT`
pointing at the lab CA, which replaces its system roots for edge connections only.
"""

import datetime as dt
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

EDGE_NAMES = ["h2.cftunnel.com", "probe.cftunnel.com", "quic.cftunnel.com"]
VALID_DAYS = 3640


def ensure_edge_cert(ca_crt: Path) -> tuple[Path, Path]:
    """The edge certificate and key beside the CA certificate `ca_crt`, issued once by the lab CA."""
    crt, key_path = ca_crt.with_name("edge.crt"), ca_crt.with_name("edge.key")
    if crt.exists() and key_path.exists() and _issued_by(crt, ca_crt):
        return crt, key_path
    ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_crt.with_name("ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EDGE_NAMES[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in EDGE_NAMES]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt, key_path


def _issued_by(crt: Path, ca_crt: Path) -> bool:
    """False when the CA was re-made since (a stale edge cert would fail cloudflared's verification)."""
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):  # any mismatch means: issue anew
        return False
    return True


def edge_tls(ca_crt: Path) -> ssl.SSLContext:
    """Server TLS for the connector side. No ALPN is required: cloudflared offers none."""
    crt, key = ensure_edge_cert(ca_crt)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(crt, key)
    return tls
