"""One-step 1-RTT packet protection gives aioquic's bytes, both ways."""

from __future__ import annotations

import os
import random

import pytest
from aioquic._crypto import CryptoError
from aioquic.quic.crypto import CryptoContext
from aioquic.tls import CipherSuite

from dattui.engine.transport import shortcrypto

DCID = bytes.fromhex("8394c8f03e515708")


def contexts(suite=CipherSuite.AES_128_GCM_SHA256, secret=None):
    secret = secret or os.urandom(32 if suite != CipherSuite.AES_256_GCM_SHA384 else 48)
    a, b = CryptoContext(), CryptoContext()
    a.setup(cipher_suite=suite, secret=secret, version=1)
    b.setup(cipher_suite=suite, secret=secret, version=1)
    return a, b


@pytest.mark.parametrize("suite", [CipherSuite.AES_128_GCM_SHA256, CipherSuite.AES_256_GCM_SHA384])
def test_seal_is_aioquics_encrypt(suite):
    ours, theirs = contexts(suite)
    rng = random.Random(1)
    for pn in [0, 1, 255, 65535, 65536, 1 << 30, 123456789]:
        payload = rng.randbytes(rng.choice([20, 300, 1400, 8900]))
        first = 0x40 | (rng.randrange(2) << 5) | 0x01
        header = bytes((first,)) + DCID + (pn & 0xFFFF).to_bytes(2, "big")
        assert shortcrypto.seal(ours, first, DCID, pn, payload) \
            == theirs.encrypt_packet(header, payload, pn)


@pytest.mark.parametrize("suite", [CipherSuite.AES_128_GCM_SHA256, CipherSuite.AES_256_GCM_SHA384])
def test_open_is_aioquics_decrypt(suite):
    sender, receiver = contexts(suite)
    mirror = contexts(suite, secret=receiver.secret)[0]
    rng = random.Random(2)
    expected = 0
    for pn in list(range(0, 300, 7)) + [20000, 45000, 70001, 95000]:  # within half a 2-byte window
        payload = rng.randbytes(rng.choice([30, 1400]))
        first = 0x40 | 0x01
        packet = sender.encrypt_packet(bytes((first,)) + DCID + (pn & 0xFFFF).to_bytes(2, "big"),
                                       payload, pn)
        header, plain, number, update = mirror.decrypt_packet(packet, 1 + len(DCID), expected)
        assert shortcrypto.open_(receiver, packet, 1 + len(DCID), expected) == (header, plain, number)
        assert plain == payload and number == pn and not update
        expected = pn + 1


def test_open_rejects_what_aioquic_rejects():
    sender, receiver = contexts()
    packet = sender.encrypt_packet(bytes((0x41,)) + DCID + b"\x00\x05", b"z" * 100, 5)
    with pytest.raises(CryptoError):
        shortcrypto.open_(receiver, packet[:-1] + bytes((packet[-1] ^ 1,)), 9, 0)  # tag
    with pytest.raises(CryptoError):
        shortcrypto.open_(receiver, packet[:20], 9, 0)  # too short to sample
    for _ in range(20):  # another key: never opens (None when the key phase bit
        other = contexts()[0]  # comes out flipped: aioquic's decrypt then rejects it)
        try:
            assert shortcrypto.open_(other, packet, 9, 0) is None
        except CryptoError:
            pass


def test_key_phase_change_is_left_to_aioquic():
    sender, receiver = contexts()
    sender.key_phase = 1  # the peer moved to the next key phase
    packet = sender.encrypt_packet(bytes((0x45,)) + DCID + b"\x00\x01", b"q" * 64, 1)
    assert shortcrypto.open_(receiver, packet, 9, 0) is None


def test_usable_only_for_aes():
    assert shortcrypto.usable(contexts()[0])
    chacha = contexts(CipherSuite.CHACHA20_POLY1305_SHA256)[0]
    assert not shortcrypto.usable(chacha)
    assert not shortcrypto.usable(CryptoContext())
