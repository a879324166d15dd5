"""Packet protection of 1-RTT packets in one step, for the AES suites.

aioquic 1.x protects a packet through four Python layers (pair, context, AEAD,
header protection), each copying the packet once more; these two functions do
the same arithmetic (RFC 9001 sections 5.3 and 5.4) with the same objects and
give the same bytes (tests/test_shortcrypto.py checks them against aioquic's
own). `usable(ctx)` says whether a context is one they can work with; when it
is not (ChaCha20, keys not ready, another aioquic), callers use aioquic's.
"""

from __future__ import annotations

from aioquic._crypto import AEAD, CryptoError, HeaderProtection
from aioquic.quic.packet import decode_packet_number
from cryptography.exceptions import InvalidTag

SAMPLE = 16
PN_MAX = 4


def usable(ctx) -> bool:
    hp, aead = ctx.hp, ctx.aead
    return (type(hp) is HeaderProtection and type(aead) is AEAD
            and not hp._is_chacha20 and hasattr(hp, "_encryptor")
            and hasattr(aead, "_aead") and hasattr(aead, "_iv"))


def seal(ctx, first_byte: int, dcid: bytes, pn: int, payload: bytes) -> bytes:
    """A short-header packet with a 2-byte packet number, protected."""
    pn16 = pn & 0xFFFF
    header = bytes((first_byte,)) + dcid + pn16.to_bytes(2, "big")
    aead = ctx.aead
    protected = aead._aead.encrypt((aead._iv ^ pn).to_bytes(12, "big"), payload, header)
    mask = ctx.hp._encryptor.update(protected[PN_MAX - 2:PN_MAX - 2 + SAMPLE])
    return (bytes((first_byte ^ (mask[0] & 0x1F),)) + dcid
            + (pn16 ^ ((mask[1] << 8) | mask[2])).to_bytes(2, "big") + protected)


def open_(ctx, data: bytes, pn_offset: int, expected: int) -> tuple[bytes, bytes, int] | None:
    """(plain header, payload, packet number) of a short-header packet; None
    when its key phase is not the context's (a key update: aioquic's to handle).
    Raises CryptoError when it is too short or does not authenticate."""
    sample_at = pn_offset + PN_MAX
    if sample_at + SAMPLE > len(data):
        raise CryptoError("Packet is too short to sample")
    mask = ctx.hp._encryptor.update(data[sample_at:sample_at + SAMPLE])
    first = data[0] ^ (mask[0] & 0x1F)
    if (first & 4) >> 2 != ctx.key_phase:
        return None
    pn_length = (first & 3) + 1
    end = pn_offset + pn_length
    truncated = int.from_bytes(data[pn_offset:end], "big") \
        ^ int.from_bytes(mask[1:1 + pn_length], "big")
    header = bytes((first,)) + data[1:pn_offset] + truncated.to_bytes(pn_length, "big")
    pn = decode_packet_number(truncated, pn_length * 8, expected)
    aead = ctx.aead
    try:
        payload = aead._aead.decrypt((aead._iv ^ pn).to_bytes(12, "big"), data[end:], header)
    except InvalidTag as exc:
        raise CryptoError(str(exc)) from None
    return header, payload, pn
