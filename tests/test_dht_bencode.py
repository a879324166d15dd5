"""Strict, bounded bencode: golden vectors both ways, every rejection rule."""

import random

import pytest

from dattui.engine.dht.bencode import (
    MAX_DEPTH, MAX_INPUT, MAX_ITEMS, BencodeError, decode, encode, looks_like_krpc,
)

GOLDEN = [
    (b"i0e", 0),
    (b"i42e", 42),
    (b"i-42e", -42),
    (b"i9223372036854775807e", 2**63 - 1),
    (b"i-9223372036854775808e", -(2**63)),
    (b"0:", b""),
    (b"4:spam", b"spam"),
    (b"3:\x00\xff\x80", b"\x00\xff\x80"),
    (b"le", []),
    (b"de", {}),
    (b"l4:spami42ee", [b"spam", 42]),
    (b"d3:bar4:spam3:fooi42ee", {b"bar": b"spam", b"foo": 42}),
    (b"d4:spaml1:a1:bee", {b"spam": [b"a", b"b"]}),
    # BEP 5 examples: ping query and response
    (b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
     {b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": b"abcdefghij0123456789"}}),
    (b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
     {b"t": b"aa", b"y": b"r", b"r": {b"id": b"mnopqrstuvwxyz123456"}}),
    # BEP 5 get_peers response with values
    (b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
     {b"t": b"aa", b"y": b"r", b"r": {b"id": b"abcdefghij0123456789", b"token": b"aoeusnth",
                                       b"values": [b"axje.u", b"idhtnm"]}}),
    # BEP 5 error
    (b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
     {b"t": b"aa", b"y": b"e", b"e": [201, b"A Generic Error Ocurred"]}),
]


@pytest.mark.parametrize("raw,value", GOLDEN)
def test_golden_vectors_both_ways(raw, value):
    assert decode(raw) == value
    assert encode(value) == raw


def test_encode_sorts_keys_by_raw_bytes_and_accepts_tuples():
    assert encode({b"b": 1, b"a": 2, b"\xff": 3, b"A": 4}) == b"d1:Ai4e1:ai2e1:bi1e1:\xffi3ee"
    assert encode((1, bytearray(b"x"), memoryview(b"yz"))) == b"li1e1:x2:yze"


@pytest.mark.parametrize("bad", [
    b"", b"i", b"ie", b"i-e", b"i-0e", b"i03e", b"i-03e", b"i1.5e", b"i 1e", b"i+1e",
    b"i9223372036854775808e", b"i-9223372036854775809e", b"i123456789012345678901234e",
    b"01:a", b"-1:a", b"5:abc", b"1a", b":", b"4294967296:x",
    b"l", b"li1e", b"d", b"d1:a", b"d1:ai1e", b"di1ei2ee", b"dle1:ae",
    b"d1:ai1e1:ai2ee",                 # duplicate key
    b"i1ei2e", b"4:spamx", b"lee",     # trailing bytes
    b"x", b"e", b"\x00", b"\xff",
])
def test_rejects_malformed(bad):
    with pytest.raises(BencodeError):
        decode(bad)


def test_unsorted_keys_are_tolerated_duplicates_are_not():
    assert decode(b"d1:bi1e1:ai2ee") == {b"a": 2, b"b": 1}
    with pytest.raises(BencodeError):
        decode(b"d1:bi1e1:ai2e1:bi3ee")


def test_bounds():
    ok_depth = b"l" * MAX_DEPTH + b"e" * MAX_DEPTH
    assert decode(ok_depth) is not None
    with pytest.raises(BencodeError):
        decode(b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1))
    with pytest.raises(BencodeError):
        decode(b"d1:a" * (MAX_DEPTH + 1) + b"i1e" + b"e" * (MAX_DEPTH + 1))
    assert len(decode(b"l" + b"i1e" * MAX_ITEMS + b"e")) == MAX_ITEMS
    with pytest.raises(BencodeError):
        decode(b"l" + b"i1e" * (MAX_ITEMS + 1) + b"e")
    many_keys = b"d" + b"".join(b"3:%03di1e" % i for i in range(MAX_ITEMS + 1)) + b"e"
    with pytest.raises(BencodeError):
        decode(many_keys)
    big = b"%d:" % (MAX_INPUT - 5) + b"x" * (MAX_INPUT - 5)
    assert len(big) == MAX_INPUT and decode(big) == b"x" * (MAX_INPUT - 5)
    with pytest.raises(BencodeError):
        decode(b"%d:" % (MAX_INPUT) + b"x" * MAX_INPUT)
    with pytest.raises(BencodeError):
        decode("4:spam")  # str is not bytes


@pytest.mark.parametrize("bad", ["text", True, 1.5, None, {1: 2}, {"a": 1}, 2**63, -(2**63) - 1, object()])
def test_encode_rejects(bad):
    with pytest.raises(BencodeError):
        encode(bad)


def test_encode_depth_bound_stops_cycles():
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(BencodeError):
        encode(cyclic)


def _random_value(rng, depth=0):
    kind = rng.randrange(4 if depth < MAX_DEPTH - 1 else 2)
    if kind == 0:
        return rng.randrange(-(2**63), 2**63)
    if kind == 1:
        return rng.randbytes(rng.randrange(12))
    if kind == 2:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.randbytes(rng.randrange(1, 4)): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_round_trip_random_values():
    rng = random.Random(5)
    for _ in range(500):
        value = _random_value(rng)
        raw = encode(value)
        if len(raw) <= MAX_INPUT:
            assert decode(raw) == value
            assert encode(decode(raw)) == raw


def test_random_bytes_raise_only_bencode_error():
    rng = random.Random(6)
    seeds = [raw for raw, _ in GOLDEN]
    for _ in range(20000):
        if rng.random() < 0.5:
            data = rng.randbytes(rng.randrange(40))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(data))
                data[i] = rng.randrange(256)
            data = bytes(data)
        try:
            decode(data)
        except BencodeError:
            pass


def test_looks_like_krpc():
    assert looks_like_krpc(GOLDEN[13][0])
    assert looks_like_krpc(GOLDEN[-1][0])
    assert not looks_like_krpc(b"de")                       # no t, y
    assert not looks_like_krpc(b"d1:t2:aae")                # no y
    assert not looks_like_krpc(b"l1:t1:ye")                 # a list
    assert not looks_like_krpc(b"d1:t2:aa1:y1:qex")         # trailing byte
    assert not looks_like_krpc(b"d1:t2:aa1:y1:q")           # truncated
    assert not looks_like_krpc(b"")
    # a QUIC short-header packet that happens to start with 'd' (0x64 has the fixed bit)
    quic = b"d" + random.Random(1).randbytes(40) + b"e"
    assert not looks_like_krpc(quic)
    assert not looks_like_krpc(b"d" + b"1:x" * 2000 + b"e")  # too long
