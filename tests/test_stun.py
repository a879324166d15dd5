"""STUN codec: RFC 5769 vectors both ways, round trips, the classifier, and
malformed input that only ever raises StunError."""

from __future__ import annotations

import random
import struct

import pytest

from dattui.engine import stun
from dattui.engine.stun import StunError

# RFC 5769 2.1-2.3 (short-term credential, password below)
PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

REQUEST = bytes.fromhex(
    "00010058" "2112a442" "b7e7a701bc34d686fa87dfae"
    "80220010" + b"STUN test client".hex() +
    "00240004" "6e0001ff"
    "80290008" "932ff9b151263b36"
    "00060009" "6576746a3a68367659202020"
    "00080014" "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004" "e57a3bcf"
)

RESPONSE_V4 = bytes.fromhex(
    "0101003c" "2112a442" "b7e7a701bc34d686fa87dfae"
    "8022000b" "7465737420766563746f7220"
    "00200008" "0001a147e112a643"
    "00080014" "2b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004" "c07d4c96"
)

RESPONSE_V6 = bytes.fromhex(
    "01010048" "2112a442" "b7e7a701bc34d686fa87dfae"
    "8022000b" "7465737420766563746f7220"
    "00200014" "0002a147" "0113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014" "a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004" "c8fb0b4c"
)

MAPPED_V4 = ("192.0.2.1", 32853)
MAPPED_V6 = ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


# -- RFC 5769, decoding ------------------------------------------------------------

def test_rfc5769_request_decodes():
    msg = stun.parse(REQUEST)
    assert msg.msg_type == stun.BINDING_REQUEST
    assert msg.transaction_id == TID and not msg.classic
    assert msg.software == "STUN test client"
    assert msg.get(stun.USERNAME) == b"evtj:h6vY"
    assert msg.get(stun.PRIORITY) == bytes.fromhex("6e0001ff")
    assert msg.get(stun.ICE_CONTROLLED) == bytes.fromhex("932ff9b151263b36")
    assert stun.check_integrity(REQUEST, PASSWORD)
    assert not stun.check_integrity(REQUEST, b"wrong")
    # USERNAME/MESSAGE-INTEGRITY/PRIORITY are required-range but a responder may ignore them
    assert msg.unknown_required(stun._IGNORABLE_IN_REQUEST) == []


@pytest.mark.parametrize("raw, mapped", [(RESPONSE_V4, MAPPED_V4), (RESPONSE_V6, MAPPED_V6)])
def test_rfc5769_responses_decode(raw, mapped):
    msg = stun.parse(raw)
    assert msg.msg_type == stun.BINDING_SUCCESS
    assert msg.software == "test vector"
    assert msg.xor_mapped_address == mapped
    assert stun.parse_binding_response(raw, TID) == mapped
    assert stun.check_integrity(raw, PASSWORD)
    assert stun.is_stun(raw)


# -- RFC 5769, encoding ------------------------------------------------------------

def test_rfc5769_request_encodes():
    attrs = [
        (stun.SOFTWARE, b"STUN test client"),
        (stun.PRIORITY, bytes.fromhex("6e0001ff")),
        (stun.ICE_CONTROLLED, bytes.fromhex("932ff9b151263b36")),
        (stun.USERNAME, b"evtj:h6vY"),
    ]
    built = stun.encode(stun.BINDING_REQUEST, TID, attrs, integrity_key=PASSWORD, fingerprint=True,
                        pad_byte=b" ")
    assert built == REQUEST


@pytest.mark.parametrize("raw, mapped", [(RESPONSE_V4, MAPPED_V4), (RESPONSE_V6, MAPPED_V6)])
def test_rfc5769_responses_encode(raw, mapped):
    attrs = [(stun.SOFTWARE, b"test vector"), (stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(mapped, TID))]
    built = stun.encode(stun.BINDING_SUCCESS, TID, attrs, integrity_key=PASSWORD, fingerprint=True,
                        pad_byte=b" ")
    assert built == raw


# -- round trips ---------------------------------------------------------------------

@pytest.mark.parametrize("mapped", [MAPPED_V4, MAPPED_V6, ("127.0.0.1", 0), ("::1", 65535)])
def test_binding_success_round_trip(mapped):
    tid = stun.new_transaction_id(random.Random(1).randbytes)
    raw = stun.binding_success(tid, mapped, response_origin=("198.51.100.7", 3478),
                               other_address=("198.51.100.8", 3479), software="dattui")
    msg = stun.parse(raw)
    assert msg.xor_mapped_address == mapped
    assert msg.mapped_address == mapped
    assert msg.response_origin == ("198.51.100.7", 3478)
    assert msg.other_address == ("198.51.100.8", 3479)
    assert msg.software == "dattui"
    assert msg.attributes[-1][0] == stun.FINGERPRINT
    assert stun.parse_binding_response(raw, tid) == mapped


def test_ipv4_mapped_ipv6_is_reported_as_ipv4():
    tid = bytes(12)
    raw = stun.binding_success(tid, ("::ffff:203.0.113.9", 4000))
    assert stun.parse_binding_response(raw, tid) == ("203.0.113.9", 4000)


def test_binding_request_padding_and_change_request():
    tid = bytes(range(12))
    raw = stun.binding_request(tid, pad_to=stun.RESPONSE_PAD)
    assert stun.RESPONSE_PAD <= len(raw) <= stun.RESPONSE_PAD + 3
    msg = stun.parse(raw)
    assert msg.msg_type == stun.BINDING_REQUEST and msg.transaction_id == tid
    assert msg.attributes[-1][0] == stun.FINGERPRINT
    small = stun.binding_request(tid, fingerprint=False)
    assert len(small) == 20
    raw = stun.binding_request(tid, change_ip=True, change_port=True, software="x")
    msg = stun.parse(raw)
    assert msg.change_request == (True, True) and msg.software == "x"


def test_error_response_round_trip():
    tid = bytes(12)
    raw = stun.binding_error(tid, 420, "Unknown Attribute", unknown=[0x0003, 0x0027])
    msg = stun.parse(raw)
    assert msg.msg_type == stun.BINDING_ERROR
    assert msg.error_code == (420, "Unknown Attribute")
    assert msg.unknown_attributes == [0x0003, 0x0027]
    with pytest.raises(StunError, match="420"):
        stun.parse_binding_response(raw, tid)


def test_unknown_optional_attributes_are_skipped():
    tid = bytes(12)
    raw = stun.encode(stun.BINDING_SUCCESS, tid, [
        (0x8fff, b"\x01\x02\x03"),                      # comprehension-optional, odd length
        (stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(MAPPED_V4, tid)),
        (0xC001, b""),
    ], fingerprint=True)
    msg = stun.parse(raw)
    assert msg.get(0x8fff) == b"\x01\x02\x03"
    assert msg.unknown_required(()) == [stun.XOR_MAPPED_ADDRESS]
    assert stun.parse_binding_response(raw, tid) == MAPPED_V4


def test_transaction_ids_are_fresh_and_checked():
    rng = random.Random(7)
    ids = {stun.new_transaction_id(rng.randbytes) for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 12 for i in ids)
    tid = stun.new_transaction_id()
    raw = stun.binding_success(tid, MAPPED_V4)
    with pytest.raises(StunError, match="transaction"):
        stun.parse_binding_response(raw, bytes(12))


# -- classic RFC 3489 messages -------------------------------------------------------

def test_classic_request_parsed_only_when_asked():
    tid16 = bytes(range(16))
    raw = struct.pack("!HH", stun.BINDING_REQUEST, 0) + tid16
    assert not stun.is_stun(raw)
    assert stun.is_stun(raw, classic=True)
    with pytest.raises(StunError):
        stun.parse(raw)
    msg = stun.parse(raw, classic=True)
    assert msg.classic and msg.transaction_id == tid16
    reply = stun.respond(raw, ("203.0.113.5", 5000))
    back = stun.parse(reply, classic=True)
    assert back.transaction_id == tid16 and back.mapped_address == ("203.0.113.5", 5000)
    assert stun.parse_binding_response(reply, tid16) == ("203.0.113.5", 5000)


# -- the responder --------------------------------------------------------------------

def test_respond_fits_the_budget():
    tid = bytes(range(12))
    small = stun.binding_request(tid, fingerprint=False)  # 20 bytes
    reply = stun.respond(small, ("203.0.113.5", 5000), local=("198.51.100.1", 3478), software="dattui",
                         budget=len(small))
    assert len(reply) == 32  # header + XOR-MAPPED-ADDRESS: the least a valid answer holds
    assert stun.parse_binding_response(reply, tid) == ("203.0.113.5", 5000)
    big = stun.binding_request(tid, pad_to=stun.RESPONSE_PAD)
    reply = stun.respond(big, ("2001:db8::5", 5000), local=("2001:db8::1", 3478), software="dattui rendezvous",
                         budget=len(big))
    msg = stun.parse(reply)
    assert len(reply) <= len(big)
    assert msg.xor_mapped_address == ("2001:db8::5", 5000)
    assert msg.response_origin == ("2001:db8::1", 3478)
    assert msg.software == "dattui rendezvous"
    assert msg.attributes[-1][0] == stun.FINGERPRINT


def test_respond_refuses_what_it_cannot_do():
    tid = bytes(range(12))
    change = stun.binding_request(tid, change_port=True)
    msg = stun.parse(stun.respond(change, ("203.0.113.5", 5000)))
    assert msg.error_code[0] == 420 and msg.unknown_attributes == [stun.CHANGE_REQUEST]
    reflect = stun.encode(stun.BINDING_REQUEST, tid, [(0x0002, stun.encode_address(("192.0.2.9", 9)))])
    msg = stun.parse(stun.respond(reflect, ("203.0.113.5", 5000)))
    assert msg.error_code[0] == 420 and msg.unknown_attributes == [0x0002]
    # not requests: no answer
    assert stun.respond(stun.binding_success(tid, MAPPED_V4), ("203.0.113.5", 5000)) is None
    assert stun.respond(stun.encode(stun.BINDING_INDICATION, tid), ("203.0.113.5", 5000)) is None
    assert stun.respond(b"garbage", ("203.0.113.5", 5000)) is None
    # a classic client asking for a changed address hears nothing
    classic = struct.pack("!HH", 1, 8) + bytes(16) + struct.pack("!HHI", stun.CHANGE_REQUEST, 4, 4)
    assert stun.respond(classic, ("203.0.113.5", 5000)) is None


# -- the classifier and malformed input ------------------------------------------------

def test_classifier():
    assert stun.is_stun(REQUEST) and stun.is_stun(RESPONSE_V4)
    assert not stun.is_stun(b"")
    assert not stun.is_stun(REQUEST[:-1])
    assert not stun.is_stun(bytes([0x40]) + REQUEST[1:])      # QUIC fixed bit
    assert not stun.is_stun(b"d1:ad2:id20:" + bytes(20))      # bencode
    assert not stun.is_stun(b"\x2aDR1" + bytes(40))           # rendezvous
    bad_cookie = REQUEST[:4] + b"\x21\x12\xa4\x43" + REQUEST[8:]
    assert not stun.is_stun(bad_cookie)


@pytest.mark.parametrize("mutate", [
    lambda b: b[:19],                                      # short header
    lambda b: b[:-4],                                      # length mismatch
    lambda b: b + b"\x00\x00\x00\x00",                     # trailing bytes
    lambda b: b[:3] + b"\x3d" + b[4:],                     # length not a multiple of 4
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),                 # fingerprint mismatch
    lambda b: b[:4] + b"\x00\x00\x00\x00" + b[8:],         # no cookie (not classic)
    lambda b: bytes([b[0] | 0x80]) + b[1:],                # first bits not 00
])
def test_malformed_raises_stun_error(mutate):
    with pytest.raises(StunError):
        stun.parse(mutate(RESPONSE_V4))


def test_bad_attributes_raise_stun_error():
    tid = bytes(12)
    for attrs in ([(stun.XOR_MAPPED_ADDRESS, b"\x00\x03\x00\x01\x01\x02\x03\x04")],   # family 3
                  [(stun.XOR_MAPPED_ADDRESS, b"\x00\x01\x00\x01\x01\x02\x03")],       # short v4
                  [(stun.MAPPED_ADDRESS, b"\x00\x02\x00\x01" + bytes(4))],            # v6 length 8
                  [(stun.ERROR_CODE, b"\x00\x00")],
                  [(stun.ERROR_CODE, b"\x00\x00\x09\x00")],
                  [(stun.SOFTWARE, b"\xff\xfe")]):
        msg = stun.parse(stun.encode(stun.BINDING_SUCCESS, tid, attrs))
        with pytest.raises(StunError):
            msg.xor_mapped_address, msg.mapped_address, msg.error_code, msg.software  # noqa: B018
    # an attribute that claims more than there is
    raw = struct.pack("!HHI12sHH", stun.BINDING_SUCCESS, 8, stun.MAGIC_COOKIE, tid, stun.SOFTWARE, 100) + bytes(4)
    with pytest.raises(StunError):
        stun.parse(raw)
    # FINGERPRINT not last, MESSAGE-INTEGRITY of the wrong size
    raw = stun.encode(stun.BINDING_SUCCESS, tid, [(stun.FINGERPRINT, bytes(4)), (stun.SOFTWARE, b"x")])
    with pytest.raises(StunError):
        stun.parse(raw)
    with pytest.raises(StunError):
        stun.parse(stun.encode(stun.BINDING_SUCCESS, tid, [(stun.MESSAGE_INTEGRITY, bytes(4))]))


def test_random_garbage_only_raises_stun_error():
    rng = random.Random(5389)
    seeds = [REQUEST, RESPONSE_V4, RESPONSE_V6,
             stun.binding_request(bytes(12), pad_to=64),
             stun.binding_error(bytes(12), 420, "x", unknown=[3])]
    for i in range(20000):
        if i % 2:
            base = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            if rng.random() < 0.3:
                del base[rng.randrange(len(base)):]
            data = bytes(base)
        else:
            data = struct.pack("!HH", rng.choice([1, 0x101, 0x111]), rng.randrange(0, 64) * 4)
            data += b"\x21\x12\xa4\x42" + rng.randbytes(12 + rng.randrange(0, 64))
        stun.is_stun(data)
        stun.is_stun(data, classic=True)
        try:
            msg = stun.parse(data, classic=bool(i % 3))
        except StunError:
            continue
        for name in ("xor_mapped_address", "mapped_address", "response_origin", "other_address",
                     "software", "error_code", "unknown_attributes", "change_request"):
            try:
                getattr(msg, name)
            except StunError:
                pass
        try:
            stun.parse_binding_response(data, msg.transaction_id)
        except StunError:
            pass
        stun.respond(data, ("203.0.113.5", 5000), budget=len(data))


# -- RFC 5780: answering from another socket --------------------------------------------------

OTHER = ("198.51.100.8", 3479)
HERE = ("198.51.100.7", 3478)


def _alternates(change_ip, change_port):
    return (("ip" if change_ip else "") + ("port" if change_port else ""),
            ("198.51.100.8" if change_ip else HERE[0], 3479 if change_port else HERE[1]))


@pytest.mark.parametrize("flags,via,origin", [
    ((False, True), "port", ("198.51.100.7", 3479)),
    ((True, False), "ip", ("198.51.100.8", 3478)),
    ((True, True), "ipport", ("198.51.100.8", 3479)),
])
def test_change_request_is_answered_from_the_other_socket(flags, via, origin):
    tid = bytes(range(12))
    req = stun.binding_request(tid, change_ip=flags[0], change_port=flags[1], pad_to=stun.RESPONSE_PAD)
    a = stun.answer(req, ("203.0.113.5", 5000), local=HERE, other=OTHER, alternate=_alternates,
                    budget=len(req), floor=stun.MIN_ANSWER)
    assert a.via == via
    msg = stun.parse(a.data)
    assert msg.xor_mapped_address == ("203.0.113.5", 5000)
    assert msg.response_origin == origin and msg.other_address == OTHER
    # no flag set: answered from where it came in, like a plain request
    plain = stun.binding_request(tid, pad_to=stun.RESPONSE_PAD)
    a = stun.answer(plain, ("203.0.113.5", 5000), local=HERE, other=OTHER, alternate=_alternates)
    assert a.via is None and stun.parse(a.data).response_origin == HERE


def test_change_request_replies_are_no_bigger_than_plain_ones():
    rng = random.Random(5)
    for _ in range(300):
        tid = rng.randbytes(12)
        pad = rng.choice([0, 0, 40, 64, stun.RESPONSE_PAD])
        fp = rng.random() < 0.5
        flags = (rng.random() < 0.5, rng.random() < 0.5)
        src = rng.choice([("203.0.113.5", 4000), ("2001:db8::5", 4000)])
        req = stun.binding_request(tid, change_ip=flags[0], change_port=flags[1], pad_to=pad, fingerprint=fp)
        plain = stun.binding_request(tid, pad_to=len(req) if pad else 0, fingerprint=fp)
        kw = dict(local=HERE, other=OTHER, alternate=_alternates, software="dattui rendezvous",
                  budget=len(req), floor=stun.MIN_ANSWER)
        changed, normal = stun.answer(req, src, **kw), stun.answer(plain, src, **kw)
        assert len(changed.data) <= max(len(req), stun.MIN_ANSWER)
        if len(plain) == len(req):
            assert len(changed.data) <= len(normal.data)
        assert stun.parse_binding_response(changed.data, tid) == src


def test_other_address_fits_a_20_byte_request_within_44_bytes():
    tid = bytes(range(12))
    small = stun.binding_request(tid, fingerprint=False)
    msg = stun.parse(stun.answer(small, ("203.0.113.5", 5000), local=HERE, other=OTHER,
                                 budget=len(small), floor=stun.MIN_ANSWER).data)
    assert len(stun.encode(msg.msg_type, tid, msg.attributes)) == 44
    assert msg.other_address == OTHER and msg.response_origin is None
    # IPv6: the mapped address alone takes the 44 bytes
    a = stun.answer(small, ("2001:db8::5", 5000), local=HERE, other=OTHER, budget=len(small),
                    floor=stun.MIN_ANSWER)
    assert len(a.data) == 44 and stun.parse(a.data).other_address is None


def test_change_request_the_server_cannot_honour():
    tid = bytes(range(12))
    port_only = lambda ip, port: None if ip else ("port", ("198.51.100.7", 3479))  # noqa: E731
    req = stun.binding_request(tid, change_ip=True, change_port=True)
    msg = stun.parse(stun.answer(req, ("203.0.113.5", 5000), alternate=port_only).data)
    assert msg.error_code[0] == 420 and msg.unknown_attributes == [stun.CHANGE_REQUEST]
    req = stun.binding_request(tid, change_port=True)
    assert stun.answer(req, ("203.0.113.5", 5000), alternate=port_only).via == "port"
    # a malformed CHANGE-REQUEST (not 4 bytes) is refused, never guessed at
    bad = stun.encode(stun.BINDING_REQUEST, tid, [(stun.CHANGE_REQUEST, b"\x00\x00\x06")])
    msg = stun.parse(stun.answer(bad, ("203.0.113.5", 5000), alternate=_alternates).data)
    assert msg.error_code[0] == 420
    # classic clients: silence when it cannot be done, an answer with CHANGED-ADDRESS when it can
    classic = struct.pack("!HH", 1, 8) + bytes(range(16)) + struct.pack("!HHI", stun.CHANGE_REQUEST, 4, 6)
    assert stun.answer(classic, ("203.0.113.5", 5000), alternate=port_only) is None
    a = stun.answer(classic, ("203.0.113.5", 5000), local=HERE, other=OTHER, alternate=_alternates,
                    budget=len(classic), floor=stun.MIN_ANSWER)
    msg = stun.parse(a.data, classic=True)
    assert a.via == "ipport" and msg.mapped_address == ("203.0.113.5", 5000)
    assert msg.other_address == OTHER and len(a.data) == 44
