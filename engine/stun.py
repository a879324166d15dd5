"""STUN (RFC 5389) codec: Binding requests and responses, nothing else.

Sans-IO: bytes in, bytes out. Used on both sides: the rendezvous server
answers Binding requests (`respond`), a node asks for its server-reflexive
address (`binding_request` / `parse_binding_response`) on its one UDP socket,
where `is_stun` is the demultiplexing classifier (RFC 7983: first two bits 00
and the magic cookie 0x2112A442 at bytes 4-8).

Message layout (RFC 5389 section 6), all integers big-endian::

    0      2 type     00 + method/class bits (Binding request 0x0001,
                      success response 0x0101, error response 0x0111)
    2      2 length   of the attributes, a multiple of 4
    4      4 magic cookie 0x2112A442
    8     12 transaction id
    20       attributes: type u16, length u16, value, zero padding to 4

What is understood:

- XOR-MAPPED-ADDRESS (0x0020), MAPPED-ADDRESS (0x0001), RESPONSE-ORIGIN
  (0x802B), OTHER-ADDRESS (0x802C), SOFTWARE (0x8022), FINGERPRINT (0x8028,
  CRC-32 of everything before it xor 0x5354554E, checked when present),
  ERROR-CODE (0x0009), UNKNOWN-ATTRIBUTES (0x000A), CHANGE-REQUEST (0x0003,
  RFC 5780) and MESSAGE-INTEGRITY (0x0008: parsed and kept; `check_integrity`
  verifies it for a known key, `encode(..., integrity_key=)` computes it, so
  the RFC 5769 vectors can be rebuilt byte for byte).
- Any other attribute is kept as raw (type, value); `unknown_required()`
  lists the comprehension-required ones (type < 0x8000) a server must refuse
  with a 420 error.
- Classic RFC 3489 requests (no magic cookie: the 16 bytes after the length
  are all transaction id) are parsed when asked (`classic=True`) and answered
  with MAPPED-ADDRESS, as RFC 5389 section 12 asks of a server; old clients
  such as pystun3 send them.
- NAT behaviour discovery (RFC 5780) on the server side: `answer` takes the
  server's OTHER-ADDRESS and a function that says from which of its other
  sockets a CHANGE-REQUEST (change IP, change port) can be answered.

Every malformed input raises `StunError` (a `ValueError`); nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Address",
    "StunError",
    "StunMessage",
    "MAGIC_COOKIE",
    "BINDING_REQUEST",
    "BINDING_SUCCESS",
    "BINDING_ERROR",
    "BINDING_INDICATION",
    "MAPPED_ADDRESS",
    "CHANGE_REQUEST",
    "SOURCE_ADDRESS",
    "CHANGED_ADDRESS",
    "USERNAME",
    "MESSAGE_INTEGRITY",
    "ERROR_CODE",
    "UNKNOWN_ATTRIBUTES",
    "XOR_MAPPED_ADDRESS",
    "PADDING",
    "SOFTWARE",
    "FINGERPRINT",
    "RESPONSE_ORIGIN",
    "OTHER_ADDRESS",
    "HEADER_SIZE",
    "RESPONSE_PAD",
    "is_stun",
    "parse",
    "encode",
    "new_transaction_id",
    "binding_request",
    "binding_success",
    "binding_error",
    "parse_binding_response",
    "respond",
    "answer",
    "Answer",
    "MIN_ANSWER",
    "check_integrity",
    "encode_address",
    "decode_address",
    "encode_xor_address",
    "decode_xor_address",
]

Address = tuple[str, int]

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
FINGERPRINT_XOR = 0x5354554E
HEADER_SIZE = 20
_HEADER = struct.Struct("!HHI12s")

# methods and classes
BINDING_REQUEST = 0x0001
BINDING_INDICATION = 0x0011
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

# attributes
MAPPED_ADDRESS = 0x0001
RESPONSE_ADDRESS = 0x0002   # RFC 3489, refused: it would make us reflect at a third party
CHANGE_REQUEST = 0x0003
SOURCE_ADDRESS = 0x0004     # RFC 3489 name of what RFC 5780 calls RESPONSE-ORIGIN
CHANGED_ADDRESS = 0x0005    # RFC 3489 name of what RFC 5780 calls OTHER-ADDRESS
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024           # ICE (RFC 8445)
USE_CANDIDATE = 0x0025      # ICE
PADDING = 0x0026            # RFC 5780
RESPONSE_PORT = 0x0027      # RFC 5780, refused like RESPONSE-ADDRESS
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A
RESPONSE_ORIGIN = 0x802B
OTHER_ADDRESS = 0x802C

_FAMILY_V4 = 0x01
_FAMILY_V6 = 0x02

# Comprehension-required attributes a Binding request may carry that the
# responder can safely ignore (no credentials are used; ICE attributes only
# matter to ICE agents). CHANGE-REQUEST is handled separately.
_IGNORABLE_IN_REQUEST = frozenset({USERNAME, MESSAGE_INTEGRITY, PRIORITY, USE_CANDIDATE, PADDING})

MAX_SOFTWARE = 763  # RFC 5389 15.10: fewer than 128 characters, at most 763 bytes


class StunError(ValueError):
    """A datagram is not a well-formed STUN message (or not the one expected)."""


@dataclass(frozen=True)
class StunMessage:
    """One parsed message. `transaction_id` is 12 bytes, or 16 for a classic
    RFC 3489 message (`classic` is then True and there is no magic cookie)."""

    msg_type: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = ()
    classic: bool = False

    def get(self, attr_type: int) -> bytes | None:
        """The value of the first attribute of this type, or None."""
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def unknown_required(self, known: Iterable[int]) -> list[int]:
        """Comprehension-required attribute types (< 0x8000) not in `known`."""
        known = set(known)
        out: list[int] = []
        for t, _ in self.attributes:
            if t < 0x8000 and t not in known and t not in out:
                out.append(t)
        return out

    # -- typed accessors; each raises StunError if the attribute is malformed --

    @property
    def xor_mapped_address(self) -> Address | None:
        v = self.get(XOR_MAPPED_ADDRESS)
        return None if v is None else decode_xor_address(v, self.transaction_id)

    @property
    def mapped_address(self) -> Address | None:
        v = self.get(MAPPED_ADDRESS)
        return None if v is None else decode_address(v)

    @property
    def response_origin(self) -> Address | None:
        v = self.get(RESPONSE_ORIGIN)
        if v is None:
            v = self.get(SOURCE_ADDRESS)
        return None if v is None else decode_address(v)

    @property
    def other_address(self) -> Address | None:
        v = self.get(OTHER_ADDRESS)
        if v is None:
            v = self.get(CHANGED_ADDRESS)
        return None if v is None else decode_address(v)

    @property
    def software(self) -> str | None:
        v = self.get(SOFTWARE)
        if v is None:
            return None
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StunError("SOFTWARE is not UTF-8") from exc

    @property
    def error_code(self) -> tuple[int, str] | None:
        v = self.get(ERROR_CODE)
        if v is None:
            return None
        if len(v) < 4:
            raise StunError("ERROR-CODE too short")
        cls, number = v[2] & 0x07, v[3]
        if not 3 <= cls <= 6 or number > 99:
            raise StunError("ERROR-CODE out of range")
        try:
            reason = v[4:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StunError("ERROR-CODE reason is not UTF-8") from exc
        return cls * 100 + number, reason

    @property
    def unknown_attributes(self) -> list[int]:
        v = self.get(UNKNOWN_ATTRIBUTES)
        if v is None:
            return []
        if len(v) % 2:
            raise StunError("UNKNOWN-ATTRIBUTES has an odd length")
        return [int.from_bytes(v[i:i + 2], "big") for i in range(0, len(v), 2)]

    @property
    def change_request(self) -> tuple[bool, bool]:
        """(change IP, change port) flags; (False, False) if absent."""
        v = self.get(CHANGE_REQUEST)
        if v is None:
            return False, False
        if len(v) != 4:
            raise StunError("CHANGE-REQUEST must be 4 bytes")
        flags = int.from_bytes(v, "big")
        return bool(flags & 0x4), bool(flags & 0x2)


# -- classification and parsing ------------------------------------------------

def is_stun(data: bytes, *, classic: bool = False) -> bool:
    """Whether `data` looks like a STUN message (cheap: no attribute walk).

    RFC 5389/7983: first two bits 00, the magic cookie at bytes 4-8, a length
    that is a multiple of 4 and matches the datagram. With `classic`, a
    Binding request without the magic cookie (RFC 3489) is accepted too.
    """
    if len(data) < HEADER_SIZE or data[0] & 0xC0:
        return False
    length = (data[2] << 8) | data[3]
    if length & 3 or len(data) != HEADER_SIZE + length:
        return False
    if data[4:8] == _COOKIE_BYTES:
        return True
    return classic and data[0] == 0x00 and data[1] == 0x01


def parse(data: bytes, *, classic: bool = False) -> StunMessage:
    """Parse one STUN message (the whole datagram). Raises StunError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StunError("not bytes")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise StunError("shorter than a STUN header")
    msg_type, length, cookie, tid = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise StunError("first two bits are not 00")
    if length & 3:
        raise StunError("length is not a multiple of 4")
    if len(data) != HEADER_SIZE + length:
        raise StunError("length does not match the datagram")
    is_classic = cookie != MAGIC_COOKIE
    if is_classic:
        if not classic:
            raise StunError("no magic cookie")
        tid = data[4:20]
    attrs: list[tuple[int, bytes]] = []
    pos = HEADER_SIZE
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise StunError("truncated attribute header")
        a_type, a_len = struct.unpack_from("!HH", data, pos)
        value_end = pos + 4 + a_len
        if value_end > end:
            raise StunError("attribute runs past the end")
        value = data[pos + 4:value_end]
        if a_type == FINGERPRINT:
            if a_len != 4:
                raise StunError("FINGERPRINT must be 4 bytes")
            if value_end != end:
                raise StunError("FINGERPRINT is not the last attribute")
            expected = (zlib.crc32(data[:pos]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            if int.from_bytes(value, "big") != expected:
                raise StunError("FINGERPRINT mismatch")
        elif a_type == MESSAGE_INTEGRITY and a_len != 20:
            raise StunError("MESSAGE-INTEGRITY must be 20 bytes")
        attrs.append((a_type, value))
        pos = value_end + (-a_len % 4)
        if pos > end:
            raise StunError("attribute padding runs past the end")
    return StunMessage(msg_type, tid, tuple(attrs), is_classic)


# -- encoding ------------------------------------------------------------------

def new_transaction_id(rand: Callable[[int], bytes] = os.urandom) -> bytes:
    """A fresh 96-bit transaction id (RFC 5389: cryptographically random)."""
    return bytes(rand(12))


def encode(
    msg_type: int,
    transaction_id: bytes,
    attributes: Sequence[tuple[int, bytes]] = (),
    *,
    fingerprint: bool = False,
    integrity_key: bytes | None = None,
    pad_byte: bytes = b"\x00",
) -> bytes:
    """Build a message. `transaction_id` of 16 bytes makes a classic (RFC 3489)
    message without magic cookie. `integrity_key` appends MESSAGE-INTEGRITY
    (HMAC-SHA1), `fingerprint` appends FINGERPRINT, in that order, last."""
    if msg_type & 0xC000 or not 0 <= msg_type <= 0x3FFF:
        raise ValueError("STUN message type out of range")
    if len(transaction_id) == 12:
        head_tail = _COOKIE_BYTES + bytes(transaction_id)
    elif len(transaction_id) == 16:
        head_tail = bytes(transaction_id)
    else:
        raise ValueError("transaction id must be 12 (or 16 for RFC 3489) bytes")
    body = bytearray()
    for a_type, value in attributes:
        if len(value) > 0xFFFF:
            raise ValueError("attribute value too long")
        body += struct.pack("!HH", a_type, len(value)) + value + pad_byte * (-len(value) % 4)
    if integrity_key is not None:
        # RFC 5389 15.4: the HMAC covers the message up to MESSAGE-INTEGRITY,
        # with a length that counts MESSAGE-INTEGRITY (not a later FINGERPRINT).
        head = struct.pack("!HH", msg_type, len(body) + 24) + head_tail
        mac = hmac.new(integrity_key, head + body, hashlib.sha1).digest()
        body += struct.pack("!HH", MESSAGE_INTEGRITY, 20) + mac
    if fingerprint:
        head = struct.pack("!HH", msg_type, len(body) + 8) + head_tail
        crc = (zlib.crc32(head + body) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
        body += struct.pack("!HHI", FINGERPRINT, 4, crc)
    if len(body) > 0xFFFF:
        raise ValueError("message too long")
    return struct.pack("!HH", msg_type, len(body)) + head_tail + bytes(body)


def check_integrity(data: bytes, key: bytes) -> bool:
    """Whether the MESSAGE-INTEGRITY of `data` is right for `key` (the password
    for short-term credentials). False if there is none. Raises StunError on
    a malformed message."""
    msg = parse(data, classic=True)
    pos = HEADER_SIZE
    for a_type, value in msg.attributes:
        if a_type == MESSAGE_INTEGRITY:
            head = struct.pack("!HH", msg.msg_type, pos - HEADER_SIZE + 24) + data[4:20]
            mac = hmac.new(key, head + data[HEADER_SIZE:pos], hashlib.sha1).digest()
            return hmac.compare_digest(mac, value)
        pos += 4 + len(value) + (-len(value) % 4)
    return False


# -- addresses -------------------------------------------------------------------

def _ip_bytes(host: str) -> tuple[int, bytes]:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError as exc:
        raise ValueError(f"not an IP address: {host!r}") from exc
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    if isinstance(ip, ipaddress.IPv4Address):
        return _FAMILY_V4, ip.packed
    return _FAMILY_V6, ip.packed


def _check_port(port: int) -> int:
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port!r}")
    return port


def encode_address(addr: Address) -> bytes:
    """MAPPED-ADDRESS-style value (also RESPONSE-ORIGIN, OTHER-ADDRESS)."""
    family, packed = _ip_bytes(addr[0])
    return struct.pack("!BBH", 0, family, _check_port(addr[1])) + packed


def decode_address(value: bytes) -> Address:
    if len(value) < 4:
        raise StunError("address attribute too short")
    family, port = value[1], int.from_bytes(value[2:4], "big")
    if family == _FAMILY_V4 and len(value) == 8:
        return str(ipaddress.IPv4Address(value[4:8])), port
    if family == _FAMILY_V6 and len(value) == 20:
        return str(ipaddress.IPv6Address(value[4:20])), port
    raise StunError("bad address family or length")


def _xor_pad(transaction_id: bytes) -> bytes:
    if len(transaction_id) != 12:
        raise StunError("XOR-MAPPED-ADDRESS needs the magic cookie (RFC 5389 message)")
    return _COOKIE_BYTES + transaction_id


def encode_xor_address(addr: Address, transaction_id: bytes) -> bytes:
    family, packed = _ip_bytes(addr[0])
    pad = _xor_pad(transaction_id)
    port = _check_port(addr[1]) ^ (MAGIC_COOKIE >> 16)
    return struct.pack("!BBH", 0, family, port) + bytes(a ^ b for a, b in zip(packed, pad))


def decode_xor_address(value: bytes, transaction_id: bytes) -> Address:
    if len(value) < 4:
        raise StunError("XOR address attribute too short")
    pad = _xor_pad(transaction_id)
    plain = value[:2] + (int.from_bytes(value[2:4], "big") ^ (MAGIC_COOKIE >> 16)).to_bytes(2, "big")
    plain += bytes(a ^ b for a, b in zip(value[4:], pad))
    return decode_address(plain + value[4 + len(pad):])


def _software(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > MAX_SOFTWARE:
        raise ValueError("SOFTWARE too long")
    return raw


# -- Binding, client side ---------------------------------------------------------

def binding_request(
    transaction_id: bytes,
    *,
    software: str | None = None,
    fingerprint: bool = True,
    pad_to: int = 0,
    change_ip: bool = False,
    change_port: bool = False,
) -> bytes:
    """A Binding request. `pad_to` grows the request (with SOFTWARE, which
    every server ignores) to at least that many bytes: servers that never
    send an unverified source more than it sent, like ours, then answer in
    full. Use `pad_to=RESPONSE_PAD` for dattui's server."""
    attrs: list[tuple[int, bytes]] = []
    if change_ip or change_port:
        attrs.append((CHANGE_REQUEST, struct.pack("!I", (4 if change_ip else 0) | (2 if change_port else 0))))
    sw = _software(software) if software is not None else None
    size = HEADER_SIZE + sum(4 + len(v) + (-len(v) % 4) for _, v in attrs) + (8 if fingerprint else 0)
    if sw is not None or pad_to > size:
        sw = sw or b""
        room = pad_to - size - 4  # value bytes that reach pad_to
        if len(sw) < room:
            sw = sw + b" " * min(room - len(sw), MAX_SOFTWARE - len(sw))
        attrs.append((SOFTWARE, sw))
    return encode(BINDING_REQUEST, transaction_id, attrs, fingerprint=fingerprint)


# A request this long gets every attribute of a full dattui response back
# (IPv6 XOR-MAPPED-ADDRESS, MAPPED-ADDRESS, RESPONSE-ORIGIN, SOFTWARE, FINGERPRINT).
RESPONSE_PAD = 128


def parse_binding_response(data: bytes, transaction_id: bytes) -> Address:
    """The mapped address in a Binding success response to `transaction_id`.

    Raises StunError for anything else: another transaction, an error
    response (its code and reason in the message), no address attribute."""
    msg = parse(data, classic=len(transaction_id) == 16)
    if msg.transaction_id != transaction_id:
        raise StunError("transaction id does not match")
    if msg.msg_type == BINDING_ERROR:
        code = msg.error_code
        raise StunError(f"STUN error {code[0]} {code[1]}" if code else "STUN error response")
    if msg.msg_type != BINDING_SUCCESS:
        raise StunError(f"not a Binding success response (type 0x{msg.msg_type:04x})")
    addr = msg.xor_mapped_address if not msg.classic else None
    if addr is None:
        addr = msg.mapped_address
    if addr is None:
        raise StunError("no mapped address in the response")
    return addr


# -- Binding, server side ---------------------------------------------------------

def binding_success(
    transaction_id: bytes,
    mapped: Address,
    *,
    response_origin: Address | None = None,
    other_address: Address | None = None,
    software: str | None = None,
    fingerprint: bool = True,
    budget: int | None = None,
    floor: int = 0,
) -> bytes:
    """A Binding success response for `mapped`.

    The mapped address (XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS for a classic
    16-byte transaction id) is always there. The optional attributes follow
    in order of use, each only while the message stays within `budget`
    bytes (None: no limit): OTHER-ADDRESS (CHANGED-ADDRESS for a classic
    client), which NAT behaviour discovery cannot do without, may also use
    the room up to `floor` bytes; then MAPPED-ADDRESS for old clients,
    RESPONSE-ORIGIN, SOFTWARE and FINGERPRINT within `budget` only."""
    classic = len(transaction_id) == 16
    other: list[tuple[int, bytes]] = []
    if classic:
        attrs = [(MAPPED_ADDRESS, encode_address(mapped))]
        if other_address is not None:
            other.append((CHANGED_ADDRESS, encode_address(other_address)))
        optional = []
        if response_origin is not None:
            optional.append((SOURCE_ADDRESS, encode_address(response_origin)))
    else:
        attrs = [(XOR_MAPPED_ADDRESS, encode_xor_address(mapped, transaction_id))]
        if other_address is not None:
            other.append((OTHER_ADDRESS, encode_address(other_address)))
        optional = [(MAPPED_ADDRESS, encode_address(mapped))]
        if response_origin is not None:
            optional.append((RESPONSE_ORIGIN, encode_address(response_origin)))
    if software is not None:
        optional.append((SOFTWARE, _software(software)))
    if other:
        size = HEADER_SIZE + sum(4 + len(v) + (-len(v) % 4) for _, v in attrs + other)
        if budget is None or size <= max(budget, floor):
            attrs = attrs + other
    return _fit(BINDING_SUCCESS, transaction_id, attrs, optional, fingerprint and not classic, budget)


def binding_error(
    transaction_id: bytes,
    code: int,
    reason: str = "",
    *,
    unknown: Sequence[int] = (),
    fingerprint: bool = True,
    budget: int | None = None,
) -> bytes:
    """A Binding error response; the reason phrase and FINGERPRINT are dropped
    before the code if `budget` is tight."""
    if not 300 <= code <= 699:
        raise ValueError("STUN error code out of range")
    value = struct.pack("!HBB", 0, code // 100, code % 100)
    attrs = [(ERROR_CODE, value)]
    if unknown:
        attrs.append((UNKNOWN_ATTRIBUTES, b"".join(struct.pack("!H", t) for t in unknown)))
    msg = _fit(BINDING_ERROR, transaction_id, attrs, [], fingerprint, budget)
    if reason:
        with_reason = [(ERROR_CODE, value + reason.encode("utf-8"))] + attrs[1:]
        full = _fit(BINDING_ERROR, transaction_id, with_reason, [], fingerprint, budget)
        if budget is None or len(full) <= budget:
            msg = full
    return msg


def _fit(msg_type, tid, attrs, optional, fingerprint, budget) -> bytes:
    size = HEADER_SIZE + sum(4 + len(v) + (-len(v) % 4) for _, v in attrs)
    limit = None if budget is None else budget - (8 if fingerprint else 0)
    for a_type, value in optional:
        step = 4 + len(value) + (-len(value) % 4)
        if limit is None or size + step <= limit:
            attrs = attrs + [(a_type, value)]
            size += step
    use_fp = fingerprint and (budget is None or size + 8 <= budget)
    return encode(msg_type, tid, attrs, fingerprint=use_fp)


# The smallest valid answer to an IPv6 client (header + XOR-MAPPED-ADDRESS): no
# unverified source is ever sent a STUN answer larger than this or its request.
MIN_ANSWER = 44


@dataclass(frozen=True)
class Answer:
    """What a STUN server sends back: `data`, from the socket `via` (None: the
    one the request came in on; otherwise what `alternate` returned)."""

    data: bytes
    via: object = None


def answer(
    data: bytes,
    source: Address,
    *,
    local: Address | None = None,
    other: Address | None = None,
    alternate: Callable[[bool, bool], tuple[object, Address | None] | None] | None = None,
    software: str | None = None,
    budget: int | None = None,
    floor: int = 0,
) -> Answer | None:
    """What a STUN server sends back for `data` from `source`, received on
    its socket `local` (reported as RESPONSE-ORIGIN when known).

    None for anything that is not a Binding request (responses, indications
    and malformed input get no answer).

    RFC 5780: `other` is the server's OTHER-ADDRESS (its other IP address and
    other port; give it only when the server has a second IP address), and
    `alternate(change_ip, change_port)` names the socket a CHANGE-REQUEST
    with those flags is answered from, as `(via, its address or None)`, or
    None when the server has no such socket. A CHANGE-REQUEST the server
    cannot honour gets a 420 error (RFC 5780 6.1) -- or, from a classic RFC
    3489 client, silence, which such a client reads as "that test failed"
    (some loop forever on an error). CHANGE-REQUEST with no flag set is
    answered normally: classic clients send it in their first test.
    Requests with comprehension-required attributes it does not know,
    RESPONSE-ADDRESS and RESPONSE-PORT included (they ask for the answer to
    go to a third party), get a 420 error too.

    `budget` caps the response size (see `binding_success`, and `floor` for
    OTHER-ADDRESS); the mapped address and an error code are never dropped,
    so the reply to a 20-byte request is 32 bytes (IPv4) or 44 bytes (IPv6)
    at least. An answer from another socket is built exactly like the plain
    one: a CHANGE-REQUEST never makes a reply larger.
    """
    try:
        msg = parse(data, classic=True)
    except StunError:
        return None
    if msg.msg_type != BINDING_REQUEST:
        return None
    fp = not msg.classic
    unknown = msg.unknown_required(_IGNORABLE_IN_REQUEST | {CHANGE_REQUEST})
    try:
        change_ip, change_port = msg.change_request
        malformed = False
    except StunError:
        change_ip = change_port = malformed = True
    via, origin = None, local
    if change_ip or change_port:
        alt = None if malformed or alternate is None else alternate(change_ip, change_port)
        if alt is None:
            if msg.classic:
                return None
            unknown = unknown + [CHANGE_REQUEST]
        else:
            via, origin = alt
    if unknown:
        return Answer(binding_error(msg.transaction_id, 420, "Unknown Attribute", unknown=unknown,
                                    fingerprint=fp, budget=budget))
    return Answer(binding_success(msg.transaction_id, source, response_origin=origin,
                                  other_address=other, software=software, fingerprint=fp,
                                  budget=budget, floor=floor), via)


def respond(
    data: bytes,
    source: Address,
    *,
    local: Address | None = None,
    software: str | None = None,
    budget: int | None = None,
) -> bytes | None:
    """What a STUN server with one address sends back for `data` from
    `source` (see `answer`: this server cannot answer from another address,
    so a CHANGE-REQUEST with a flag set gets a 420 error, or silence for a
    classic client)."""
    a = answer(data, source, local=local, software=software, budget=budget)
    return None if a is None else a.data
