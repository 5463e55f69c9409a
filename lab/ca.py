"""The lab CA and its one server certificate, generated at first start and reused afterwards.

Clients verify the emulators with `ca.crt` (CONTRIBUTING.md: nothing disables TLS checks).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DNS_NAMES = ["localhost", "pve1", "pve2", "lab.test", "*.lab.test"]
IP_NAMES = ["127.0.0.1", "10.87.0.1"]
VALID_DAYS = 3650


def paths(ca_dir: Path) -> dict[str, Path]:
    return {
        "ca_crt": ca_dir / "ca.crt",
        "ca_key": ca_dir / "ca.key",
        "crt": ca_dir / "server.crt",
        "key": ca_dir / "server.key",
    }


def ensure(ca_dir: Path) -> dict[str, Path]:
    """Create the CA and the server certificate if missing; return their paths."""
    p = paths(ca_dir)
    ca_dir.mkdir(parents=True, exist_ok=True)
    if not (p["ca_crt"].exists() and p["ca_key"].exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm-relay lab CA")])
        cert = (
            _builder(name, name, key.public_key(), VALID_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(p["ca_key"], key)
        p["ca_crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        p["crt"].unlink(missing_ok=True)
    if not (p["crt"].exists() and p["key"].exists()):
        _issue_server_cert(p)
    return p


def _issue_server_cert(p: dict[str, Path]) -> None:
    ca_key = serialization.load_pem_private_key(p["ca_key"].read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(p["ca_crt"].read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm-relay lab")])
    sans = [x509.DNSName(n) for n in DNS_NAMES] + [x509.IPAddress(ipaddress.ip_address(a)) for a in IP_NAMES]
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), VALID_DAYS - 1)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write_key(p["key"], key)
    p["crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
