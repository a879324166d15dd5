import struct

import pytest

from dattui.engine import handshake, keys
from dattui.engine import manifest as mf
from dattui.engine.errors import UnsafeManifest

KEY = keys.ShareKey.from_seed(bytes(range(32)))


def entries(*paths):
    out = []
    for p in paths:
        if p.endswith("/"):
            out.append(mf.Entry(mf.Kind.DIR, p.rstrip("/"), 0o755, 1))
        else:
            out.append(mf.Entry(mf.Kind.FILE, p, 0o644, 2, 5, b"\x01" * 32))
    return tuple(out)


def test_round_trip_and_signature():
    m = mf.Manifest(3, 262144, "data", entries("a/", "a/b.txt", "c"))
    enc, sig = mf.sign(m, KEY)
    assert mf.verify(KEY.public, enc, sig)
    assert mf.decode(enc) == m
    assert not mf.verify(KEY.public, enc[:-1] + bytes([enc[-1] ^ 1]), sig)
    other = keys.ShareKey.from_seed(b"\x09" * 32)
    assert not mf.verify(other.public, enc, sig)


def test_signature_is_deterministic_known_answer():
    m = mf.Manifest(1, 262144, "d", entries("x"))
    enc, sig = mf.sign(m, KEY)
    assert mf.sign(m, KEY)[1] == sig  # ed25519 is deterministic
    assert enc[:4] == b"DATM"


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/.",
                                  ".dat/dattui.db", "a\\b", "a\x00b", ""])
def test_paths_leaving_the_target_are_refused(path):
    m = mf.Manifest(1, 262144, "d", (mf.Entry(mf.Kind.FILE, path, 0o644, 0, 1, b"\x00" * 32),))
    with pytest.raises(UnsafeManifest) as e:
        mf.decode(m.encode())
    assert "refusing" in str(e.value)


def test_duplicate_and_file_as_folder_are_refused():
    with pytest.raises(UnsafeManifest):
        mf.decode(mf.Manifest(1, 262144, "d", entries("a", "a")).encode())
    with pytest.raises(UnsafeManifest):
        mf.decode(mf.Manifest(1, 262144, "d", entries("a", "a/b")).encode())


def test_bounds():
    m = mf.Manifest(1, 262144, "d", entries("a"))
    enc = m.encode()
    for cut in range(1, len(enc)):
        with pytest.raises(UnsafeManifest):
            mf.decode(enc[:cut])
    with pytest.raises(UnsafeManifest):
        mf.decode(enc + b"x")
    at = mf._HEAD.size + 1  # after the header and the one-byte name
    assert enc[at:at + 4] == struct.pack(">I", 1)
    huge_count = enc[:at] + struct.pack(">I", 0xFFFFFFFF) + enc[at + 4:]
    with pytest.raises(UnsafeManifest):
        mf.decode(huge_count)
    with pytest.raises(UnsafeManifest):
        mf.decode(mf.Manifest(1, 1, "d", ()).encode())  # block size out of range


def test_handshake_proofs_bind_share_and_server_certificate():
    node_c, node_s = keys.ShareKey.from_seed(b"\x01" * 32), keys.ShareKey.from_seed(b"\x02" * 32)
    dk, nc, ns = KEY.discovery_key, b"\x03" * 32, b"\x04" * 32
    msg = handshake.client_message(dk, nc, node_c.public, node_s.public)
    mac, sig = handshake.prove(KEY.public, msg, node_c.sign)
    assert handshake.check(KEY.public, msg, mac, sig, node_c.public)
    # a peer without the link cannot produce the MAC
    wrong = keys.ShareKey.from_seed(b"\x05" * 32)
    mac2, sig2 = handshake.prove(wrong.public, msg, node_c.sign)
    assert not handshake.check(KEY.public, msg, mac2, sig2, node_c.public)
    # a proof made for a man in the middle's certificate does not verify at the real server
    mitm = keys.ShareKey.from_seed(b"\x06" * 32)
    relayed = handshake.client_message(dk, nc, node_c.public, mitm.public)
    mac3, sig3 = handshake.prove(KEY.public, relayed, node_c.sign)
    assert not handshake.check(KEY.public, msg, mac3, sig3, node_c.public)
    # the signature binds the client's node key
    assert not handshake.check(KEY.public, msg, mac, sig, node_s.public)
    smsg = handshake.server_message(dk, nc, ns, node_c.public, node_s.public)
    smac, ssig = handshake.prove(KEY.public, smsg, node_s.sign)
    assert handshake.check(KEY.public, smsg, smac, ssig, node_s.public)
    assert smac != mac
