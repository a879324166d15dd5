"""Packet protection of 1-RTT packets in one step, for the AES suites.

aioquic 1.x protects a packet through four Python layers (pair, context, AEAD,
header protection), each copying the packet once more; these functions do the
same arithmetic (RFC 9001 sections 5.3 and 5.4) with the same key objects and
give the same bytes (tests/test_shortcrypto.py checks them against aioquic's
own). `sealer(ctx)` and `opener(ctx)` bind one context's keys once and return
a function per packet (None when the context is not one they can work with:
ChaCha20, keys not ready, another aioquic; callers then use aioquic's;
engine/transport/aioquic_compat.py compares both on the aioquic in use).
A key update (or a teardown) gives the context another AEAD object, so a
bound function is right for as long as `ctx.aead` is the object it was made
with: callers key their cache on it.
"""

from __future__ import annotations

from collections.abc import Callable

from aioquic.quic.crypto import CryptoError
from cryptography.exceptions import InvalidTag

try:  # aioquic's private module: where it is not, nothing here is usable
    from aioquic._crypto import AEAD, HeaderProtection
except ImportError:  # pragma: no cover - another aioquic
    AEAD = HeaderProtection = None

SAMPLE = 16
PN_MAX = 4
PN_LIMIT = 1 << 62

Sealer = Callable[[int, bytes, int, bytes], bytes]
Opener = Callable[[bytes, int, int], "tuple[bytes, bytes, int] | None"]


def usable(ctx) -> bool:
    hp, aead = getattr(ctx, "hp", None), getattr(ctx, "aead", None)
    return (AEAD is not None and type(hp) is HeaderProtection and type(aead) is AEAD
            and not hp._is_chacha20 and hasattr(hp, "_encryptor")
            and hasattr(aead, "_aead") and hasattr(aead, "_iv"))


def sealer(ctx) -> Sealer | None:
    """seal(first_byte, dcid, pn, payload): a short-header packet with a 2-byte
    packet number, protected with `ctx`'s keys."""
    if not usable(ctx):
        return None
    encrypt = ctx.aead._aead.encrypt
    iv = ctx.aead._iv
    mask_of = ctx.hp._encryptor.update

    def seal(first_byte: int, dcid: bytes, pn: int, payload: bytes) -> bytes:
        pn16 = pn & 0xFFFF
        protected = encrypt((iv ^ pn).to_bytes(12, "big"), payload,
                            bytes((first_byte,)) + dcid + pn16.to_bytes(2, "big"))
        mask = mask_of(protected[PN_MAX - 2:PN_MAX - 2 + SAMPLE])
        return (bytes((first_byte ^ (mask[0] & 0x1F),)) + dcid
                + (pn16 ^ ((mask[1] << 8) | mask[2])).to_bytes(2, "big") + protected)

    return seal


def opener(ctx) -> Opener | None:
    """open(data, pn_offset, expected): (plain header, payload, packet number)
    of a short-header packet; None when its key phase is not the context's (a
    key update: aioquic's to handle). Raises CryptoError when it is too short
    or does not authenticate."""
    if not usable(ctx):
        return None
    decrypt = ctx.aead._aead.decrypt
    iv = ctx.aead._iv
    mask_of = ctx.hp._encryptor.update
    key_phase = ctx.key_phase

    def open_(data: bytes, pn_offset: int, expected: int):
        sample_at = pn_offset + PN_MAX
        if sample_at + SAMPLE > len(data):
            raise CryptoError("Packet is too short to sample")
        mask = mask_of(data[sample_at:sample_at + SAMPLE])
        first = data[0] ^ (mask[0] & 0x1F)
        if (first & 4) >> 2 != key_phase:
            return None
        pn_length = (first & 3) + 1
        end = pn_offset + pn_length
        truncated = int.from_bytes(data[pn_offset:end], "big") \
            ^ int.from_bytes(mask[1:1 + pn_length], "big")
        header = bytes((first,)) + data[1:pn_offset] + truncated.to_bytes(pn_length, "big")
        # RFC 9000 appendix A.3, as aioquic's decode_packet_number
        window = 1 << (pn_length * 8)
        half = window >> 1
        pn = (expected & ~(window - 1)) | truncated
        if pn <= expected - half and pn < PN_LIMIT - window:
            pn += window
        elif pn > expected + half and pn >= window:
            pn -= window
        try:
            payload = decrypt((iv ^ pn).to_bytes(12, "big"), data[end:], header)
        except InvalidTag as exc:
            raise CryptoError(str(exc)) from None
        return header, payload, pn

    return open_


def seal(ctx, first_byte: int, dcid: bytes, pn: int, payload: bytes) -> bytes:
    """One packet sealed with `ctx` (`sealer` binds the keys once for many)."""
    return sealer(ctx)(first_byte, dcid, pn, payload)


def open_(ctx, data: bytes, pn_offset: int, expected: int) -> tuple[bytes, bytes, int] | None:
    """One packet opened with `ctx` (`opener` binds the keys once for many)."""
    return opener(ctx)(data, pn_offset, expected)
