"""Frame golden vectors, checked in both directions, and hostile input."""

import os
import random

import pytest

from dattui.engine import wire
from dattui.engine.errors import ProtocolError

H = bytes.hex
GOLDEN = [
    (wire.Hello(1, b"\x11" * 32, b"\x22" * 32, b"\x33" * 32),
     "0000006901" + H(b"DATTUI") + "0001" + "11" * 32 + "22" * 32 + "33" * 32),
    (wire.Auth(b"\x44" * 32, b"\x55" * 64), "0000006102" + "44" * 32 + "55" * 64),
    (wire.GetManifest(7), "00000009030000000000000007"),
    (wire.ManifestPart(2, 10, 0, b"abc"), "000000140400000000000000020000000a00000000616263"),
    (wire.ManifestSignature(2, b"\x66" * 64), "000000490500000000000000" + "02" + "66" * 64),
    (wire.Request(2, 5, 9), "000000110600000000000000020000000500000009"),
    (wire.Cancel(2, 5, 9), "000000110700000000000000020000000500000009"),
    (wire.NoData(2, 5, 9), "000000110800000000000000020000000500000009"),
    (wire.NewVersion(3), "000000090a0000000000000003"),
    (wire.Ping(1), "000000090b0000000000000001"),
    (wire.Pong(1), "000000090c0000000000000001"),
    (wire.Have(2, 5), "0000000d0e000000000000000200000005"),
    (wire.HaveAll(2), "000000090f0000000000000002"),
    (wire.Bitfield(2, 10, b"\xa0\x40"), "0000000f1000000000000000020000000aa040"),
    (wire.HaveBlocks(2, 5, ((0, 3), (9, 1))),
     "0000001f11" "0000000000000002" "00000005" "0002" "00000000" "00000003" "00000009" "00000001"),
    (wire.Pex((wire.PexPeer(b"\x33" * 32, (("10.0.0.1", 3282), ("::1", 80))),)),
     "0000003d12" "01" + "33" * 32 + "02" "04" "0a000001" "0cd2" "10" + "00" * 15 + "01" "0050"),
    (wire.PunchRequest(b"\x44" * 32), "0000002113" + "44" * 32),
    (wire.PunchIntro(b"\x55" * 16, b"\x66" * 32, (("203.0.113.7", 3282),)),
     "0000003914" + "55" * 16 + "66" * 32 + "01" "04" "cb007107" "0cd2"),
    (wire.Lanes((3283, 40000)), "0000000715" "00" "02" "0cd3" "9c40"),
    (wire.Lanes((3283,), True), "0000000515" "01" "01" "0cd3"),
    (wire.Progress(2, 1000, 3), "0000001516" "0000000000000002" "00000000000003e8" "00000003"),
    (wire.Close(1, "bye"), "000000060d0001627965"),
]
DATA_HEX = "00000035090000000000000002000000050000000901" + "77" * 32 + "78797a"


@pytest.mark.parametrize("frame,hexed", GOLDEN, ids=[type(f).__name__ for f, _ in GOLDEN])
def test_golden_both_directions(frame, hexed):
    assert wire.encode(frame).hex() == hexed
    (decoded,) = wire.FrameDecoder().feed(bytes.fromhex(hexed))
    assert decoded == frame and type(decoded) is type(frame)


def test_data_frame_golden_and_zero_copy_header():
    f = wire.Data(2, 5, 9, (b"\x77" * 32,), b"xyz")
    assert wire.encode(f).hex() == DATA_HEX
    assert (wire.encode_data_header(2, 5, 9, [b"\x77" * 32], 3) + b"xyz").hex() == DATA_HEX
    (d,) = wire.FrameDecoder().feed(bytes.fromhex(DATA_HEX))
    assert (d.version, d.file, d.block, d.proof, bytes(d.data)) == (2, 5, 9, (b"\x77" * 32,), b"xyz")


def test_any_fragmentation_gives_the_same_frames():
    stream = b"".join(bytes.fromhex(h) for _, h in GOLDEN) + bytes.fromhex(DATA_HEX)
    rng = random.Random(5)
    for _ in range(50):
        dec, out, i = wire.FrameDecoder(), [], 0
        while i < len(stream):
            n = rng.randint(1, 40)
            out += dec.feed(stream[i:i + n])
            i += n
        assert [type(f) for f in out[:len(GOLDEN)]] == [type(f) for f, _ in GOLDEN]
        assert len(out) == len(GOLDEN) + 1


def test_unknown_frame_type_is_skipped():
    unknown = bytes.fromhex("0000000460616263")
    assert wire.FrameDecoder().feed(unknown + wire.encode(wire.Ping(4))) == [wire.Ping(4)]


@pytest.mark.parametrize("length", [0, wire.MAX_FRAME + 1, 0xFFFFFFFF])
def test_frame_length_out_of_bounds_is_an_error(length):
    with pytest.raises(ProtocolError):
        wire.FrameDecoder().feed(length.to_bytes(4, "big") + b"\x06")


def test_truncated_payloads_are_protocol_errors():
    for frame, hexed in GOLDEN[:-1]:
        raw = bytes.fromhex(hexed)
        body = raw[5:-1]  # one byte short inside a correct length prefix
        bad = (len(body) + 1).to_bytes(4, "big") + raw[4:5] + body
        if isinstance(frame, (wire.ManifestPart,)):
            continue  # a shorter chunk is still a valid part
        with pytest.raises(ProtocolError):
            wire.FrameDecoder().feed(bad)


def test_random_garbage_never_raises_anything_but_protocol_error():
    rng = random.Random(1)
    for _ in range(2000):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 80)))
        if rng.random() < 0.5:  # plausible length prefix
            blob = len(blob).to_bytes(4, "big") + blob
        try:
            wire.FrameDecoder().feed(blob)
        except ProtocolError:
            pass


def test_decoder_holds_at_most_one_frame():
    dec = wire.FrameDecoder()
    big = wire.encode(wire.Data(1, 0, 0, (), os.urandom(1 << 20)))
    for i in range(0, len(big) - 1, 65536):
        assert dec.feed(big[i:min(i + 65536, len(big) - 1)]) == []
    assert len(dec._buf) < len(big)
    assert len(dec.feed(big[-1:])) == 1 and len(dec._buf) == 0


def test_bitfield_bits_and_bounds():
    bf = wire.Bitfield.of(2, 10, [0, 2, 9])
    assert bf == wire.Bitfield(2, 10, b"\xa0\x40")
    assert [i for i in range(12) if bf.has(i)] == [0, 2, 9]
    assert wire.Bitfield.of(1, 0, []).bits == b""
    with pytest.raises(ProtocolError):  # a byte too many for 10 entries
        wire.FrameDecoder().feed(wire.encode(wire.Bitfield(2, 10, b"\xa0\x40\x00")))
    with pytest.raises(ProtocolError):  # a spare bit set
        wire.FrameDecoder().feed(wire.encode(wire.Bitfield(2, 10, b"\xa0\x60")))


def _frame(ftype: int, payload: bytes) -> bytes:
    return (len(payload) + 1).to_bytes(4, "big") + bytes([ftype]) + payload


@pytest.mark.parametrize("name,raw", [
    ("too many ranges", _frame(0x11, bytes(12) + (wire.MAX_RANGES + 1).to_bytes(2, "big")
                                + bytes(8 * (wire.MAX_RANGES + 1)))),
    ("range count short of its ranges", _frame(0x11, bytes(12) + b"\x00\x02" + bytes(8))),
    ("empty range", _frame(0x11, bytes(12) + b"\x00\x01" + bytes(8))),
    ("too many peers", _frame(0x12, bytes([wire.MAX_PEX_PEERS + 1]) + (b"\x01" * 32 + b"\x00") * 33)),
    ("too many addresses", _frame(0x12, b"\x01" + b"\x01" * 32 + bytes([wire.MAX_PEX_ADDRS + 1])
                                  + b"\x04\x0a\x00\x00\x01\x00\x01" * 5)),
    ("address of 5 bytes", _frame(0x12, b"\x01" + b"\x01" * 32 + b"\x01\x05" + bytes(7))),
    ("trailing bytes", _frame(0x12, b"\x00\x00")),
    ("short punch request", _frame(0x13, bytes(31))),
    ("long punch request", _frame(0x13, bytes(33))),
    ("punch intro with trailing bytes", _frame(0x14, bytes(48) + b"\x00\x00")),
    ("too many lanes", _frame(0x15, bytes([0, wire.MAX_LANES + 1]) + b"\x01\x00" * (wire.MAX_LANES + 1))),
    ("lane count short of its ports", _frame(0x15, b"\x00\x02\x01\x00")),
    ("lane port 0", _frame(0x15, b"\x00\x01\x00\x00")),
    ("short progress", _frame(0x16, bytes(19))),
])
def test_hostile_swarm_frames_are_protocol_errors(name, raw):
    with pytest.raises(ProtocolError):
        wire.FrameDecoder().feed(raw)


def test_block_ranges_of_sorted_blocks():
    assert wire.block_ranges([0, 1, 2, 9, 11, 12]) == [(0, 3), (9, 1), (11, 2)]
    assert wire.block_ranges([]) == []
