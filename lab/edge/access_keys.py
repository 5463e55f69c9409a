"""The lab team's Access signing key: signs `Cf-Access-Jwt-Assertion`, published as the team's certs.

Cloudflare signs application tokens with "a key pair unique to your account" and publishes the public key at
`https://<team>.cloudflareaccess.com/cdn-cgi/access/certs` (developers.cloudflare.com, cloudflare-one …
authorization-cookie/validating-json): `keys` (a JWKS: kid, kty RSA, alg RS256, use sig, e, n),
`public_cert` (the current key's `{kid, cert}`, PEM) and `public_certs` (all of them). The token is an
RS256 JWT with header `{"alg": "RS256", "kid": …, "typ": "JWT"}` (…/application-token).

The key is an RSA-2048 key kept in `<state dir>/edge/access-signing-key.pem` (0600), so tokens issued before
a daemon restart still verify after it. kid = SHA-256 hex of the public key's DER (64 hex digits, the shape
of Cloudflare's kids). One key: Cloudflare rotates its keys every six weeks and publishes two; the lab never
rotates, so it publishes one.
"""

import base64
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

KEY_FILE = "access-signing-key.pem"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(number: int) -> str:
    return b64url(number.to_bytes((number.bit_length() + 7) // 8, "big"))


class AccessSigner:
    def __init__(self, key: rsa.RSAPrivateKey, team_domain: str):
        self.key = key
        self.team_domain = team_domain
        public = key.public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = hashlib.sha256(der).hexdigest()
        self.cert_pem = self._self_signed(public)

    @classmethod
    def load_or_create(cls, directory: Path, team_domain: str) -> "AccessSigner":
        path = directory / KEY_FILE
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            directory.mkdir(parents=True, exist_ok=True)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            # Written 0600 from the start, then renamed: a private key is never readable by others.
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            os.replace(tmp, path)
        return cls(key, team_domain)

    def _self_signed(self, public) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.team_domain)])
        start = datetime.now(UTC) - timedelta(days=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(int(self.kid[:16], 16))
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=3650))
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def certs(self) -> dict:
        """The body of `/cdn-cgi/access/certs`."""
        numbers = self.key.public_key().public_numbers()
        jwk = {
            "kid": self.kid,
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "e": _uint(numbers.e),
            "n": _uint(numbers.n),
        }
        cert = {"kid": self.kid, "cert": self.cert_pem}
        return {"keys": [jwk], "public_cert": cert, "public_certs": [cert]}

    def sign(self, claims: dict) -> str:
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        signing_input = ".".join(
            b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"
