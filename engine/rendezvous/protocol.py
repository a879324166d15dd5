"""The rendezvous wire format: how nodes meet, punch and relay through a server.

A node registers the 32-byte *discovery keys* it serves (never the link) with
a rendezvous server, looks up other nodes by key, asks the server to make a
peer punch towards it at the same moment, and, when no direct path works,
relays its (end-to-end encrypted) QUIC datagrams through the server.

Transport. Over UDP every message is one datagram, sent from the node's one
socket. Over TCP (networks that block UDP) the same messages are framed with
a u16 big-endian length before each one (`frame`, `Deframer`); a frame
length of 0 is an error.

Every message starts with the 4-byte magic ``2A 44 52 31`` (``*DR1``). The
first byte 0x2A sorts it apart on a shared socket (RFC 7983 style): STUN
starts with 0x00-0x03 (and its magic cookie 0x21 at byte 4 never equals our
type byte, all < 0x20), QUIC long and short headers have the fixed bit 0x40
set, bencoded DHT messages start with ``d`` (0x64). All integers big-endian.

Requests, client to server::

    0   4  magic "*DR1"
    4   1  type
    5   4  txid     chosen by the client, echoed in the reply (not 0)
    9  16  cookie   from a COOKIE reply; 16 zero bytes if none yet
    25     body:
      0x01 REGISTER       key 32 | nonce 16 | candidates
      0x02 LOOKUP         key 32 | max_peers u8 (0: server's choice)
      0x03 CONNECT        key 32 | token 8 | candidates (the requester's own)
      0x04 RELAY_ALLOCATE key 32 | token 8
      0x05 RELAY_BIND     channel 8
      0x06 KEEPALIVE      nonce 16
      0x07 UNREGISTER     key 32 | nonce 16
      0x08 RELAY_CLOSE    channel 8

Relayed data, both directions (no txid, no cookie: 13 bytes of overhead)::

      0x09 RELAY_DATA     magic | type | channel 8 | payload (0-1500 bytes)

Replies and pushes, server to client (txid 0 in a push nobody asked for)::

    0   4  magic "*DR1"
    4   1  type
    5   4  txid
    9      body:
      0x10 COOKIE         cookie 16                          (25 bytes in all)
      0x11 REGISTERED     ttl u16 s | token 8 | observed address
      0x12 PEERS          count u8 | count x peer
      0x13 PUNCH          key 32 | delay u16 ms | peer
      0x14 RELAY_ALLOCATED channel 8 | lifetime u16 s | rate u32 bytes/s
      0x15 RELAY_OFFER    key 32 | channel 8 | token 8 (the allocator's, or 0s)
      0x16 RELAY_BOUND    channel 8 | lifetime u16 s | rate u32 bytes/s
      0x17 RELAY_CLOSED   channel 8 | reason u8
      0x18 ALIVE          ttl u16 s | observed address
      0x1F ERROR          code u8                            (10 bytes in all)

    address     family u8 (4 or 6) | port u16 | 4 or 16 address bytes
    candidates  count u8 (0-8) | count x address
    peer        token 8 | flags u8 (bit 0: the observed address is a TCP
                connection, so UDP to it is pointless) | observed address |
                candidates

Meanings.

- *nonce*: 16 random bytes a node picks once and keeps secret; it names the
  node's registrations. A REGISTER or KEEPALIVE with a known nonce from a
  new address moves them there (a laptop that changed networks).
- *token*: 8 bytes the server gives a registered node (in REGISTERED), shown
  to others in PEERS; CONNECT and RELAY_ALLOCATE name a peer by it. All
  zeros means "not registered". The nonce is never shown to anyone.
- *observed address*: the source address the server saw (server-reflexive).
  *candidates* are addresses the node claims for itself (LAN addresses, a
  port-mapped address); the server passes them on unchecked.
- PUNCH goes to both sides of a CONNECT at once (the reply to the requester,
  a push to the target), each carrying the other side's addresses; both
  start probing `delay` ms after they receive it.
- Relay: RELAY_ALLOCATE (from A, naming B's token) gets RELAY_ALLOCATED to A
  and RELAY_OFFER pushed to B; B sends RELAY_BIND (over UDP or TCP, as it
  likes); RELAY_BOUND goes to B as the reply and to A as a push. Then each
  RELAY_DATA from one side's bound address is forwarded, unchanged, to the
  other side. `rate` caps the bytes per second of the allocation, `lifetime`
  its remaining seconds; RELAY_CLOSED says it ended (reasons below).

Anti-amplification. No reply to an unverified source is larger than the
request it answers. A UDP source is verified by a valid cookie in the request
(an HMAC of its address and a timestamp, see server_core); TCP sources are
verified by the handshake. REGISTER, CONNECT, RELAY_*, KEEPALIVE and
UNREGISTER without a valid cookie get a COOKIE (25 bytes, never more than any
request) and nothing else; a LOOKUP without one gets PEERS only if it is no
larger than the request, else a COOKIE. The client then repeats the request
with the cookie. Pushes only go to verified, registered or bound addresses.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "Address",
    "RendezvousError",
    "MAGIC",
    "KEY_SIZE",
    "NONCE_SIZE",
    "TOKEN_SIZE",
    "CHANNEL_SIZE",
    "COOKIE_SIZE",
    "NO_COOKIE",
    "NO_TOKEN",
    "MAX_CANDIDATES",
    "MAX_RELAY_PAYLOAD",
    "REQUEST_HEADER_SIZE",
    "REPLY_HEADER_SIZE",
    "RELAY_DATA_OVERHEAD",
    "ErrorCode",
    "CloseReason",
    "Peer",
    "Register",
    "Lookup",
    "Connect",
    "RelayAllocate",
    "RelayBind",
    "Keepalive",
    "Unregister",
    "RelayClose",
    "RelayData",
    "Cookie",
    "Registered",
    "Peers",
    "Punch",
    "RelayAllocated",
    "RelayOffer",
    "RelayBound",
    "RelayClosed",
    "Alive",
    "Error",
    "Request",
    "Reply",
    "Message",
    "REQUEST_TYPES",
    "is_rendezvous",
    "encode",
    "decode",
    "relay_data",
    "parse_relay_data",
    "frame",
    "Deframer",
    "encode_address",
]

Address = tuple[str, int]

MAGIC = b"\x2aDR1"
KEY_SIZE = 32
NONCE_SIZE = 16
TOKEN_SIZE = 8
CHANNEL_SIZE = 8
COOKIE_SIZE = 16
NO_COOKIE = bytes(COOKIE_SIZE)
NO_TOKEN = bytes(TOKEN_SIZE)
MAX_CANDIDATES = 8
MAX_RELAY_PAYLOAD = 1500
REQUEST_HEADER_SIZE = 4 + 1 + 4 + COOKIE_SIZE  # 25
REPLY_HEADER_SIZE = 4 + 1 + 4                  # 9
RELAY_DATA_OVERHEAD = 4 + 1 + CHANNEL_SIZE     # 13


class RendezvousError(ValueError):
    """A datagram or frame is not a well-formed rendezvous message."""


class ErrorCode:
    """ERROR codes (u8)."""

    NOT_FOUND = 1       # no such key/peer/channel/nonce (re-register after a server restart)
    LIMIT = 2           # a per-client or global limit was reached
    BAD_REQUEST = 3     # well-formed but not acceptable (e.g. connect to yourself)
    RATE_LIMITED = 4    # slow down (only sent to verified sources)


class CloseReason:
    """RELAY_CLOSED reasons (u8)."""

    BY_PEER = 1         # the other side sent RELAY_CLOSE or went away
    EXPIRED = 2         # reached the allocation's maximum duration
    IDLE = 3            # nothing relayed for too long (or never bound)
    SHUTDOWN = 4        # the server is stopping


# -- addresses ---------------------------------------------------------------------

def encode_address(addr: Address) -> bytes:
    host, port = addr
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"not an IP address: {host!r}") from exc
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port!r}")
    return struct.pack("!BH", ip.version, port) + ip.packed


def _encode_candidates(cands: Sequence[Address]) -> bytes:
    if len(cands) > MAX_CANDIDATES:
        raise ValueError(f"at most {MAX_CANDIDATES} candidates")
    return bytes([len(cands)]) + b"".join(encode_address(a) for a in cands)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise RendezvousError("truncated message")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def address(self) -> Address:
        family = self.u8()
        port = self.u16()
        if family == 4:
            return str(ipaddress.IPv4Address(self.take(4))), port
        if family == 6:
            return str(ipaddress.IPv6Address(self.take(16))), port
        raise RendezvousError("bad address family")

    def candidates(self) -> tuple[Address, ...]:
        n = self.u8()
        if n > MAX_CANDIDATES:
            raise RendezvousError("too many candidates")
        return tuple(self.address() for _ in range(n))

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise RendezvousError("trailing bytes")


def _check(value: bytes, size: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return bytes(value)


# -- messages ------------------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    """One registered node as PEERS and PUNCH describe it."""

    token: bytes
    observed: Address
    candidates: tuple[Address, ...] = ()
    over_tcp: bool = False

    def _encode(self) -> bytes:
        return (_check(self.token, TOKEN_SIZE, "token") + bytes([1 if self.over_tcp else 0])
                + encode_address(self.observed) + _encode_candidates(self.candidates))

    @classmethod
    def _read(cls, r: _Reader) -> Peer:
        token = r.take(TOKEN_SIZE)
        flags = r.u8()
        if flags & ~1:
            raise RendezvousError("unknown peer flags")
        observed = r.address()
        return cls(token, observed, r.candidates(), bool(flags & 1))

    @property
    def size(self) -> int:
        return len(self._encode())


@dataclass(frozen=True)
class _Request:
    txid: int
    cookie: bytes = field(default=NO_COOKIE, kw_only=True)
    TYPE = 0

    def _body(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        if not 0 < self.txid <= 0xFFFFFFFF:
            raise ValueError("txid must be 1..2**32-1")
        return (MAGIC + bytes([self.TYPE]) + struct.pack("!I", self.txid)
                + _check(self.cookie, COOKIE_SIZE, "cookie") + self._body())


@dataclass(frozen=True)
class Register(_Request):
    key: bytes
    nonce: bytes
    candidates: tuple[Address, ...] = ()
    TYPE = 0x01

    def _body(self) -> bytes:
        return (_check(self.key, KEY_SIZE, "key") + _check(self.nonce, NONCE_SIZE, "nonce")
                + _encode_candidates(self.candidates))

    @classmethod
    def _read(cls, txid, cookie, r):
        return cls(txid, r.take(KEY_SIZE), r.take(NONCE_SIZE), r.candidates(), cookie=cookie)


@dataclass(frozen=True)
class Lookup(_Request):
    key: bytes
    max_peers: int = 0
    TYPE = 0x02

    def _body(self) -> bytes:
        if not 0 <= self.max_peers <= 255:
            raise ValueError("max_peers must be 0..255")
        return _check(self.key, KEY_SIZE, "key") + bytes([self.max_peers])

    @classmethod
    def _read(cls, txid, cookie, r):
        return cls(txid, r.take(KEY_SIZE), r.u8(), cookie=cookie)


@dataclass(frozen=True)
class Connect(_Request):
    key: bytes
    token: bytes
    candidates: tuple[Address, ...] = ()
    TYPE = 0x03

    def _body(self) -> bytes:
        return (_check(self.key, KEY_SIZE, "key") + _check(self.token, TOKEN_SIZE, "token")
                + _encode_candidates(self.candidates))

    @classmethod
    def _read(cls, txid, cookie, r):
        return cls(txid, r.take(KEY_SIZE), r.take(TOKEN_SIZE), r.candidates(), cookie=cookie)


@dataclass(frozen=True)
class RelayAllocate(_Request):
    key: bytes
    token: bytes
    TYPE = 0x04

    def _body(self) -> bytes:
        return _check(self.key, KEY_SIZE, "key") + _check(self.token, TOKEN_SIZE, "token")

    @classmethod
    def _read(cls, txid, cookie, r):
        return cls(txid, r.take(KEY_SIZE), r.take(TOKEN_SIZE), cookie=cookie)


@dataclass(frozen=True)
class RelayBind(_Request):
    channel: bytes
    TYPE = 0x05

    def _body(self) -> bytes:
        return _check(self.channel, CHANNEL_SIZE, "channel")

    @classmethod
    def _read(cls, txid, cookie, r):
        return cls(txid, r.take(CHANNEL_SIZE), cookie=cookie)


@dataclass(frozen=True)
class Keepalive(_Request):
    nonce: bytes
    TYPE = 0x06

    def _body(self) -> bytes:
        return _check(self.nonce, NONCE_SIZE, "nonce")

    @classmethod
    def _read(cls, txid, cookie, r):
        return cls(txid, r.take(NONCE_SIZE), cookie=cookie)


@dataclass(frozen=True)
class Unregister(_Request):
    key: bytes
    nonce: bytes
    TYPE = 0x07

    def _body(self) -> bytes:
        return _check(self.key, KEY_SIZE, "key") + _check(self.nonce, NONCE_SIZE, "nonce")

    @classmethod
    def _read(cls, txid, cookie, r):
        return cls(txid, r.take(KEY_SIZE), r.take(NONCE_SIZE), cookie=cookie)


@dataclass(frozen=True)
class RelayClose(_Request):
    channel: bytes
    TYPE = 0x08

    def _body(self) -> bytes:
        return _check(self.channel, CHANNEL_SIZE, "channel")

    @classmethod
    def _read(cls, txid, cookie, r):
        return cls(txid, r.take(CHANNEL_SIZE), cookie=cookie)


@dataclass(frozen=True)
class RelayData:
    channel: bytes
    payload: bytes
    TYPE = 0x09

    def encode(self) -> bytes:
        return relay_data(self.channel, self.payload)


@dataclass(frozen=True)
class _Reply:
    txid: int
    TYPE = 0

    def _body(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        if not 0 <= self.txid <= 0xFFFFFFFF:
            raise ValueError("txid must be 0..2**32-1")
        return MAGIC + bytes([self.TYPE]) + struct.pack("!I", self.txid) + self._body()


@dataclass(frozen=True)
class Cookie(_Reply):
    cookie: bytes
    TYPE = 0x10

    def _body(self) -> bytes:
        return _check(self.cookie, COOKIE_SIZE, "cookie")

    @classmethod
    def _read(cls, txid, r):
        return cls(txid, r.take(COOKIE_SIZE))


@dataclass(frozen=True)
class Registered(_Reply):
    ttl: int
    token: bytes
    observed: Address
    TYPE = 0x11

    def _body(self) -> bytes:
        return struct.pack("!H", self.ttl) + _check(self.token, TOKEN_SIZE, "token") + encode_address(self.observed)

    @classmethod
    def _read(cls, txid, r):
        return cls(txid, r.u16(), r.take(TOKEN_SIZE), r.address())


@dataclass(frozen=True)
class Peers(_Reply):
    peers: tuple[Peer, ...] = ()
    TYPE = 0x12

    def _body(self) -> bytes:
        if len(self.peers) > 255:
            raise ValueError("at most 255 peers")
        return bytes([len(self.peers)]) + b"".join(p._encode() for p in self.peers)

    @classmethod
    def _read(cls, txid, r):
        n = r.u8()
        return cls(txid, tuple(Peer._read(r) for _ in range(n)))


@dataclass(frozen=True)
class Punch(_Reply):
    key: bytes
    delay_ms: int
    peer: Peer
    TYPE = 0x13

    def _body(self) -> bytes:
        return _check(self.key, KEY_SIZE, "key") + struct.pack("!H", self.delay_ms) + self.peer._encode()

    @classmethod
    def _read(cls, txid, r):
        return cls(txid, r.take(KEY_SIZE), r.u16(), Peer._read(r))


@dataclass(frozen=True)
class _RelayGrant(_Reply):
    channel: bytes
    lifetime: int
    rate: int

    def _body(self) -> bytes:
        return _check(self.channel, CHANNEL_SIZE, "channel") + struct.pack("!HI", self.lifetime, self.rate)

    @classmethod
    def _read(cls, txid, r):
        return cls(txid, r.take(CHANNEL_SIZE), r.u16(), r.u32())


@dataclass(frozen=True)
class RelayAllocated(_RelayGrant):
    TYPE = 0x14


@dataclass(frozen=True)
class RelayOffer(_Reply):
    key: bytes
    channel: bytes
    token: bytes
    TYPE = 0x15

    def _body(self) -> bytes:
        return (_check(self.key, KEY_SIZE, "key") + _check(self.channel, CHANNEL_SIZE, "channel")
                + _check(self.token, TOKEN_SIZE, "token"))

    @classmethod
    def _read(cls, txid, r):
        return cls(txid, r.take(KEY_SIZE), r.take(CHANNEL_SIZE), r.take(TOKEN_SIZE))


@dataclass(frozen=True)
class RelayBound(_RelayGrant):
    TYPE = 0x16


@dataclass(frozen=True)
class RelayClosed(_Reply):
    channel: bytes
    reason: int
    TYPE = 0x17

    def _body(self) -> bytes:
        return _check(self.channel, CHANNEL_SIZE, "channel") + bytes([self.reason])

    @classmethod
    def _read(cls, txid, r):
        return cls(txid, r.take(CHANNEL_SIZE), r.u8())


@dataclass(frozen=True)
class Alive(_Reply):
    ttl: int
    observed: Address
    TYPE = 0x18

    def _body(self) -> bytes:
        return struct.pack("!H", self.ttl) + encode_address(self.observed)

    @classmethod
    def _read(cls, txid, r):
        return cls(txid, r.u16(), r.address())


@dataclass(frozen=True)
class Error(_Reply):
    code: int
    TYPE = 0x1F

    def _body(self) -> bytes:
        return bytes([self.code])

    @classmethod
    def _read(cls, txid, r):
        return cls(txid, r.u8())


Request = Register | Lookup | Connect | RelayAllocate | RelayBind | Keepalive | Unregister | RelayClose
Reply = Cookie | Registered | Peers | Punch | RelayAllocated | RelayOffer | RelayBound | RelayClosed | Alive | Error
Message = Request | Reply | RelayData

_REQUESTS = {c.TYPE: c for c in (Register, Lookup, Connect, RelayAllocate, RelayBind, Keepalive,
                                  Unregister, RelayClose)}
_REPLIES = {c.TYPE: c for c in (Cookie, Registered, Peers, Punch, RelayAllocated, RelayOffer,
                                 RelayBound, RelayClosed, Alive, Error)}
REQUEST_TYPES = tuple(_REQUESTS.values())


def is_rendezvous(data: bytes) -> bool:
    """Classifier for a shared socket: starts with the magic."""
    return data[:4] == MAGIC


def encode(msg: Message) -> bytes:
    return msg.encode()


def relay_data(channel: bytes, payload: bytes) -> bytes:
    """A RELAY_DATA datagram (the hot path: no dataclass)."""
    if len(channel) != CHANNEL_SIZE:
        raise ValueError("channel must be 8 bytes")
    if len(payload) > MAX_RELAY_PAYLOAD:
        raise ValueError(f"relayed payload over {MAX_RELAY_PAYLOAD} bytes")
    return MAGIC + b"\x09" + bytes(channel) + bytes(payload)


def parse_relay_data(data: bytes) -> tuple[bytes, bytes] | None:
    """(channel, payload) if `data` is a RELAY_DATA message, else None."""
    if len(data) < RELAY_DATA_OVERHEAD or data[:5] != MAGIC + b"\x09":
        return None
    if len(data) - RELAY_DATA_OVERHEAD > MAX_RELAY_PAYLOAD:
        return None
    return bytes(data[5:13]), bytes(data[13:])


def decode(data: bytes) -> Message:
    """Parse one message (a whole datagram or frame). Raises RendezvousError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RendezvousError("not bytes")
    data = bytes(data)
    if len(data) < 5 or data[:4] != MAGIC:
        raise RendezvousError("no rendezvous magic")
    kind = data[4]
    if kind == RelayData.TYPE:
        parsed = parse_relay_data(data)
        if parsed is None:
            raise RendezvousError("bad RELAY_DATA")
        return RelayData(*parsed)
    r = _Reader(data, 5)
    try:
        if kind in _REQUESTS:
            txid = r.u32()
            if txid == 0:
                raise RendezvousError("request txid 0")
            cookie = r.take(COOKIE_SIZE)
            msg = _REQUESTS[kind]._read(txid, cookie, r)
        elif kind in _REPLIES:
            msg = _REPLIES[kind]._read(r.u32(), r)
        else:
            raise RendezvousError(f"unknown message type 0x{kind:02x}")
        r.end()
    except (ValueError, IndexError) as exc:  # ipaddress errors and the like
        if isinstance(exc, RendezvousError):
            raise
        raise RendezvousError(str(exc)) from exc
    return msg


# -- TCP framing -------------------------------------------------------------------------

MAX_FRAME = 0xFFFF


def frame(message: bytes) -> bytes:
    """u16 length + message, for the TCP transport."""
    if not 0 < len(message) <= MAX_FRAME:
        raise ValueError("frame must be 1..65535 bytes")
    return struct.pack("!H", len(message)) + message


class Deframer:
    """Splits a TCP byte stream into messages; holds at most one partial frame."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Messages completed by `data`. Raises RendezvousError on a 0-length frame."""
        self._buf += data
        out = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 2:
            n = (buf[pos] << 8) | buf[pos + 1]
            if n == 0:
                raise RendezvousError("zero-length frame")
            if len(buf) - pos - 2 < n:
                break
            out.append(bytes(buf[pos + 2:pos + 2 + n]))
            pos += 2 + n
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
