"""A node's ed25519 identity and the self-signed certificate QUIC presents.

The node id is the raw 32-byte ed25519 public key; it is kept (mode 0600) in
the state directory so a node keeps its id across restarts.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from ..statedir import write_private


@dataclass(frozen=True)
class NodeIdentity:
    seed: bytes

    @classmethod
    def load_or_create(cls, state: Path) -> "NodeIdentity":
        path = state / "node.key"
        if path.exists():
            seed = bytes.fromhex(path.read_text().strip())
            if len(seed) == 32:
                return cls(seed)
        ident = cls(bytes(nacl.signing.SigningKey.generate()))
        write_private(path, ident.seed.hex().encode() + b"\n")
        return ident

    @property
    def public(self) -> bytes:
        return bytes(nacl.signing.SigningKey(self.seed).verify_key)

    @property
    def short_id(self) -> str:
        return self.public.hex()[:8]

    def sign(self, message: bytes) -> bytes:
        return nacl.signing.SigningKey(self.seed).sign(message).signature

    def private_key(self) -> ed25519.Ed25519PrivateKey:
        return ed25519.Ed25519PrivateKey.from_private_bytes(self.seed)

    def certificate(self) -> x509.Certificate:
        key = self.private_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dattui-" + self.short_id)])
        now = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(int.from_bytes(self.public[:8], "big") >> 1 or 1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=365 * 100))
            .sign(key, None)
        )


def certificate_public_key(cert: x509.Certificate | None) -> bytes:
    """Raw ed25519 public key of a peer's certificate, or b"" when it is not ed25519."""
    if cert is None:
        return b""
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return b""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
