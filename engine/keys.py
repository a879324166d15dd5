"""Share keys, dat:// links and discovery keys.

A share is an ed25519 key pair. The link is ``dat://`` + the 64 lowercase hex
characters of the public key. The discovery key is BLAKE2b-256 of the message
``b"hypercore"`` keyed with the public key (as Dat did): it is the only thing
ever announced to a network, and it does not reveal the link.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from .errors import BadLink

LINK_PREFIX = "dat://"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def discovery_key(public_key: bytes) -> bytes:
    """BLAKE2b-256(b"hypercore", key=public_key)."""
    if len(public_key) != 32:
        raise ValueError("public key must be 32 bytes")
    return hashlib.blake2b(b"hypercore", digest_size=32, key=public_key).digest()


def format_link(public_key: bytes) -> str:
    return LINK_PREFIX + public_key.hex()


def link_label(public_key: bytes) -> str:
    """A link shortened for messages, still telling two links apart: the first
    and the last 8 hex characters (a typo anywhere but the middle shows)."""
    h = public_key.hex()
    return f"{LINK_PREFIX}{h[:8]}…{h[-8:]}"


def parse_link(text: str) -> bytes:
    """Public key from a link. Accepts `dat://<hex>`, bare hex, a trailing slash,
    and upper-case hex. Raises BadLink with a one-line hint otherwise."""
    s = text.strip()
    if s.lower().startswith(LINK_PREFIX):
        s = s[len(LINK_PREFIX):]
    s = s.rstrip("/").lower()
    if not _HEX64.fullmatch(s):
        raise BadLink(
            f"not a dat:// link: {text!r}; a link is dat:// followed by 64 hex "
            "characters, as printed by `dattui share`"
        )
    return bytes.fromhex(s)


@dataclass(frozen=True)
class ShareKey:
    """A share's ed25519 key pair; `secret` is None for a clone (read-only)."""

    public: bytes
    secret: bytes | None = None  # 32-byte seed

    @classmethod
    def generate(cls) -> "ShareKey":
        sk = nacl.signing.SigningKey.generate()
        return cls(public=bytes(sk.verify_key), secret=bytes(sk))

    @classmethod
    def from_seed(cls, seed: bytes) -> "ShareKey":
        sk = nacl.signing.SigningKey(seed)
        return cls(public=bytes(sk.verify_key), secret=seed)

    @property
    def link(self) -> str:
        return format_link(self.public)

    @property
    def discovery_key(self) -> bytes:
        return discovery_key(self.public)

    @property
    def writable(self) -> bool:
        return self.secret is not None

    def sign(self, message: bytes) -> bytes:
        if self.secret is None:
            raise PermissionError("this share's secret key is not on this machine")
        return nacl.signing.SigningKey(self.secret).sign(message).signature

    def verify(self, message: bytes, signature: bytes) -> bool:
        return verify(self.public, message, signature)

    def __repr__(self) -> str:  # never print a secret
        return f"ShareKey(public={self.public.hex()[:8]}…, writable={self.writable})"


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
        return True
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
