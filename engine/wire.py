"""The peer protocol's frames, sans-IO.

Every frame on the connection's one bidirectional QUIC stream is
    u32 length | u8 type | payload          (length counts type + payload)
All integers are big-endian. The first frame each side sends is HELLO, which
carries the protocol version; a frame type this version does not know is
skipped (so later versions can add frames), and a frame longer than
MAX_FRAME is a protocol error that ends the connection.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .errors import ProtocolError

PROTOCOL_VERSION = 1
MAGIC = b"DATTUI"
MAX_FRAME = 4 * 1024 * 1024 + 64 * 1024  # a 4 MiB block, its proof and headers
MAX_PROOF = 64
MAX_RANGES = 512    # block ranges in one HAVE_BLOCKS frame
MAX_PEX_PEERS = 32  # peers in one PEX frame
MAX_PEX_ADDRS = 4   # candidate addresses per peer in PEX and PUNCH_INTRO
MAX_LANES = 8       # ports in one LANES frame

_LEN = struct.Struct(">IB")
_HELLO = struct.Struct(">6sH32s32s32s")
_AUTH = struct.Struct(">32s64s")
_U64 = struct.Struct(">Q")
_MPART = struct.Struct(">QII")
_MSIG = struct.Struct(">Q64s")
_BLOCKREF = struct.Struct(">QII")
_DATA = struct.Struct(">QIIB")
_CLOSE = struct.Struct(">H")
_HAVE = struct.Struct(">QI")
_BITFIELD = struct.Struct(">QI")
_HAVE_BLOCKS = struct.Struct(">QIH")
_RANGE = struct.Struct(">II")
_ID = struct.Struct(">32s")
_SESSION = struct.Struct(">16s32s")


@dataclass(frozen=True)
class Hello:
    TYPE = 0x01
    version: int
    discovery_key: bytes
    nonce: bytes
    node_id: bytes  # the sender's ed25519 node public key

    def payload(self) -> bytes:
        return _HELLO.pack(MAGIC, self.version, self.discovery_key, self.nonce, self.node_id)

    @classmethod
    def parse(cls, p: memoryview) -> "Hello":
        magic, version, dk, nonce, node = _HELLO.unpack(p)
        if magic != MAGIC:
            raise ProtocolError("not a dattui peer")
        return cls(version, dk, nonce, node)


@dataclass(frozen=True)
class Auth:
    """Proof of knowing the share's public key (a MAC keyed with it) and a
    signature by the sender's node key, both over the connection transcript."""

    TYPE = 0x02
    mac: bytes
    signature: bytes

    def payload(self) -> bytes:
        return _AUTH.pack(self.mac, self.signature)

    @classmethod
    def parse(cls, p: memoryview) -> "Auth":
        return cls(*_AUTH.unpack(p))


@dataclass(frozen=True)
class GetManifest:
    TYPE = 0x03
    have_version: int

    def payload(self) -> bytes:
        return _U64.pack(self.have_version)

    @classmethod
    def parse(cls, p: memoryview) -> "GetManifest":
        return cls(*_U64.unpack(p))


@dataclass(frozen=True)
class ManifestPart:
    TYPE = 0x04
    version: int
    total: int
    offset: int
    chunk: bytes

    def payload(self) -> bytes:
        return _MPART.pack(self.version, self.total, self.offset) + self.chunk

    @classmethod
    def parse(cls, p: memoryview) -> "ManifestPart":
        v, total, off = _MPART.unpack_from(p)
        return cls(v, total, off, bytes(p[_MPART.size:]))


@dataclass(frozen=True)
class ManifestSignature:
    TYPE = 0x05
    version: int
    signature: bytes

    def payload(self) -> bytes:
        return _MSIG.pack(self.version, self.signature)

    @classmethod
    def parse(cls, p: memoryview) -> "ManifestSignature":
        return cls(*_MSIG.unpack(p))


@dataclass(frozen=True)
class Request:
    TYPE = 0x06
    version: int
    file: int
    block: int

    def payload(self) -> bytes:
        return _BLOCKREF.pack(self.version, self.file, self.block)

    @classmethod
    def parse(cls, p: memoryview) -> "Request":
        return cls(*_BLOCKREF.unpack(p))


@dataclass(frozen=True)
class Cancel(Request):
    TYPE = 0x07


@dataclass(frozen=True)
class NoData(Request):
    """The sender cannot serve this block (other version, not verified yet)."""

    TYPE = 0x08


@dataclass(frozen=True)
class Data:
    TYPE = 0x09
    BULK = True  # parsed in place: its block is a view of the bytes fed
    version: int
    file: int
    block: int
    proof: tuple[bytes, ...]
    data: bytes | memoryview

    def payload(self) -> bytes:
        return b"".join((_DATA.pack(self.version, self.file, self.block, len(self.proof)),
                         *self.proof, self.data))

    @classmethod
    def parse(cls, p: memoryview) -> "Data":
        v, f, b, n = _DATA.unpack_from(p)
        if n > MAX_PROOF:
            raise ProtocolError("proof too long")
        off = _DATA.size
        end = off + 32 * n
        if end > len(p):
            raise ProtocolError("truncated proof")
        proof = tuple(bytes(p[i:i + 32]) for i in range(off, end, 32))
        return cls(v, f, b, proof, p[end:])


@dataclass(frozen=True)
class NewVersion:
    TYPE = 0x0A
    version: int

    def payload(self) -> bytes:
        return _U64.pack(self.version)

    @classmethod
    def parse(cls, p: memoryview) -> "NewVersion":
        return cls(*_U64.unpack(p))


@dataclass(frozen=True)
class Ping:
    TYPE = 0x0B
    token: int

    def payload(self) -> bytes:
        return _U64.pack(self.token)

    @classmethod
    def parse(cls, p: memoryview) -> "Ping":
        return cls(*_U64.unpack(p))


@dataclass(frozen=True)
class Pong(Ping):
    TYPE = 0x0C


@dataclass(frozen=True)
class Close:
    TYPE = 0x0D
    code: int
    reason: str

    def payload(self) -> bytes:
        return _CLOSE.pack(self.code) + self.reason.encode()[:256]

    @classmethod
    def parse(cls, p: memoryview) -> "Close":
        (code,) = _CLOSE.unpack_from(p)
        return cls(code, bytes(p[_CLOSE.size:_CLOSE.size + 256]).decode("utf-8", "replace"))


@dataclass(frozen=True)
class Have:
    """The sender has just verified every block of file `file` of `version` and
    serves it from now on."""

    TYPE = 0x0E
    version: int
    file: int

    def payload(self) -> bytes:
        return _HAVE.pack(self.version, self.file)

    @classmethod
    def parse(cls, p: memoryview) -> "Have":
        return cls(*_HAVE.unpack(p))


@dataclass(frozen=True)
class HaveAll:
    """The sender serves every file of `version` (a share, or a finished clone).
    Sent after the manifest signature in answer to GET_MANIFEST."""

    TYPE = 0x0F
    version: int

    def payload(self) -> bytes:
        return _U64.pack(self.version)

    @classmethod
    def parse(cls, p: memoryview) -> "HaveAll":
        return cls(*_U64.unpack(p))


@dataclass(frozen=True)
class Bitfield:
    """The manifest entries of `version` the sender serves: `count` is the
    manifest's entry count, bit i (most significant bit of byte 0 first) is
    entry i. Spare bits in the last byte are zero. Sent after the manifest
    signature in answer to GET_MANIFEST; HAVE frames follow as files complete."""

    TYPE = 0x10
    version: int
    count: int
    bits: bytes

    def payload(self) -> bytes:
        return _BITFIELD.pack(self.version, self.count) + self.bits

    @classmethod
    def parse(cls, p: memoryview) -> "Bitfield":
        version, count = _BITFIELD.unpack_from(p)
        bits = bytes(p[_BITFIELD.size:])
        if len(bits) != (count + 7) // 8:
            raise ProtocolError(f"bitfield of {len(bits)} bytes for {count} entries")
        if count % 8 and bits[-1] & (0xFF >> (count % 8)):
            raise ProtocolError("bitfield spare bits set")
        return cls(version, count, bits)

    @classmethod
    def of(cls, version: int, count: int, indices) -> "Bitfield":
        bits = bytearray((count + 7) // 8)
        for i in indices:
            bits[i >> 3] |= 0x80 >> (i & 7)
        return cls(version, count, bytes(bits))

    def has(self, i: int) -> bool:
        return 0 <= i < self.count and bool(self.bits[i >> 3] & (0x80 >> (i & 7)))


@dataclass(frozen=True)
class HaveBlocks:
    """The sender serves these blocks of file `file` of `version` (verified,
    each with its Merkle proof), although not yet the whole file: a list of
    (first block, count) ranges, at most MAX_RANGES. Sent after the summary
    (HAVE_ALL or BITFIELD) for every file the sender holds in part, then as
    blocks are verified; a HAVE follows when the file is complete."""

    TYPE = 0x11
    version: int
    file: int
    ranges: tuple[tuple[int, int], ...]

    def payload(self) -> bytes:
        return _HAVE_BLOCKS.pack(self.version, self.file, len(self.ranges)) + b"".join(
            _RANGE.pack(start, count) for start, count in self.ranges)

    @classmethod
    def parse(cls, p: memoryview) -> "HaveBlocks":
        version, file, n = _HAVE_BLOCKS.unpack_from(p)
        if n > MAX_RANGES:
            raise ProtocolError(f"{n} block ranges in one frame")
        if len(p) != _HAVE_BLOCKS.size + _RANGE.size * n:
            raise ProtocolError("block ranges do not match their count")
        ranges = tuple(_RANGE.unpack_from(p, _HAVE_BLOCKS.size + i * _RANGE.size) for i in range(n))
        if any(count == 0 for _, count in ranges):
            raise ProtocolError("empty block range")
        return cls(version, file, ranges)


def block_ranges(blocks) -> list[tuple[int, int]]:
    """Sorted block numbers -> (first, count) ranges."""
    out: list[list[int]] = []
    for b in blocks:
        if out and out[-1][0] + out[-1][1] == b:
            out[-1][1] += 1
        else:
            out.append([b, 1])
    return [(a, n) for a, n in out]


Address = tuple[str, int]


def _pack_addrs(addrs) -> bytes:
    out = [struct.pack(">B", len(addrs))]
    for host, port in addrs:
        packed = ipaddress.ip_address(host).packed
        out.append(struct.pack(">B", len(packed)) + packed + struct.pack(">H", port))
    return b"".join(out)


def _parse_addrs(p: memoryview, off: int) -> tuple[tuple[Address, ...], int]:
    (n,) = struct.unpack_from(">B", p, off)
    if n > MAX_PEX_ADDRS:
        raise ProtocolError(f"{n} addresses for one peer")
    off += 1
    addrs = []
    for _ in range(n):
        (size,) = struct.unpack_from(">B", p, off)
        if size not in (4, 16):
            raise ProtocolError(f"address of {size} bytes")
        raw = bytes(p[off + 1:off + 1 + size])
        (port,) = struct.unpack_from(">H", p, off + 1 + size)
        if len(raw) != size:
            raise ProtocolError("truncated address")
        addrs.append((str(ipaddress.ip_address(raw)), port))
        off += 3 + size
    return tuple(addrs), off


@dataclass(frozen=True)
class PexPeer:
    node_id: bytes                # 32 bytes: the peer's ed25519 node key
    addrs: tuple[Address, ...]    # where the sender reaches it (at most MAX_PEX_ADDRS)


@dataclass(frozen=True)
class Pex:
    """Peer exchange: peers of this share the sender is connected to, at most
    MAX_PEX_PEERS, each with at most MAX_PEX_ADDRS candidate addresses."""

    TYPE = 0x12
    peers: tuple[PexPeer, ...]

    def payload(self) -> bytes:
        return struct.pack(">B", len(self.peers)) + b"".join(
            _ID.pack(p.node_id) + _pack_addrs(p.addrs) for p in self.peers)

    @classmethod
    def parse(cls, p: memoryview) -> "Pex":
        (n,) = struct.unpack_from(">B", p)
        if n > MAX_PEX_PEERS:
            raise ProtocolError(f"{n} peers in one PEX frame")
        off, peers = 1, []
        for _ in range(n):
            (node,) = _ID.unpack_from(p, off)
            addrs, off = _parse_addrs(p, off + 32)
            peers.append(PexPeer(node, addrs))
        if off != len(p):
            raise ProtocolError("trailing bytes in PEX")
        return cls(tuple(peers))


@dataclass(frozen=True)
class PunchRequest:
    """Asks the receiver (a peer both sides are connected to) to introduce the
    sender to `node_id` so both punch at once."""

    TYPE = 0x13
    node_id: bytes

    def payload(self) -> bytes:
        return _ID.pack(self.node_id)

    @classmethod
    def parse(cls, p: memoryview) -> "PunchRequest":
        if len(p) != _ID.size:
            raise ProtocolError("PUNCH_REQUEST of the wrong size")
        return cls(*_ID.unpack(p))


@dataclass(frozen=True)
class PunchIntro:
    """From a common peer to both sides at once: punch towards `node_id` at
    `addrs` with probes of `session`; the side with the smaller node id dials."""

    TYPE = 0x14
    session: bytes
    node_id: bytes
    addrs: tuple[Address, ...]

    def payload(self) -> bytes:
        return _SESSION.pack(self.session, self.node_id) + _pack_addrs(self.addrs)

    @classmethod
    def parse(cls, p: memoryview) -> "PunchIntro":
        session, node = _SESSION.unpack_from(p)
        addrs, off = _parse_addrs(p, _SESSION.size)
        if off != len(p):
            raise ProtocolError("trailing bytes in PUNCH_INTRO")
        return cls(session, node, addrs)


@dataclass(frozen=True)
class Lanes:
    """From a share to a peer on a direct path: more UDP ports of the sender's
    host, each served by a worker process (a lane) that answers the same
    handshake and requests, so a clone can spread a transfer over several
    connections and cores (engine/lanes/). `busy`: the sender's own process
    is CPU-bound (sent again when it becomes so)."""

    TYPE = 0x15
    ports: tuple[int, ...]
    busy: bool = False

    def payload(self) -> bytes:
        return struct.pack(f">BB{len(self.ports)}H", int(self.busy), len(self.ports), *self.ports)

    @classmethod
    def parse(cls, p: memoryview) -> "Lanes":
        flags, n = struct.unpack_from(">BB", p)
        if n > MAX_LANES or len(p) != 2 + 2 * n:
            raise ProtocolError(f"LANES of {len(p)} bytes for {n} ports")
        ports = struct.unpack_from(f">{n}H", p, 2)
        if 0 in ports:
            raise ProtocolError("lane port 0")
        return cls(tuple(ports), bool(flags & 1))


_PROGRESS = struct.Struct(">QQI")


@dataclass(frozen=True)
class Progress:
    """From a clone to a peer that holds the whole version (the share, a
    finished clone): how much of `version` the sender holds verified, so the
    sharing side can show its collaborators' progress. Sent when the peer's
    summary says it holds everything, then at most a few times a second while
    it changes, and once more when the clone has the whole version. Purely
    informative: nothing is requested or served because of it. Peers of an
    earlier protocol revision skip it (unknown frame types are skipped)."""

    TYPE = 0x16
    version: int
    bytes_have: int
    files_done: int

    def payload(self) -> bytes:
        return _PROGRESS.pack(self.version, self.bytes_have, self.files_done)

    @classmethod
    def parse(cls, p: memoryview) -> "Progress":
        return cls(*_PROGRESS.unpack(p))


FRAME_TYPES = {c.TYPE: c for c in (Hello, Auth, GetManifest, ManifestPart, ManifestSignature,
                                   Request, Cancel, NoData, Data, NewVersion, Ping, Pong, Close,
                                   Have, HaveAll, Bitfield, HaveBlocks, Pex, PunchRequest,
                                   PunchIntro, Lanes, Progress)}


def encode(frame) -> bytes:
    payload = frame.payload()
    return _LEN.pack(len(payload) + 1, frame.TYPE) + payload


def encode_data_header(version: int, file: int, block: int, proof: list[bytes], size: int) -> bytes:
    """Header of a DATA frame whose block bytes follow separately (no copy of the block)."""
    n = 1 + _DATA.size + 32 * len(proof) + size
    return _LEN.pack(n, Data.TYPE) + _DATA.pack(version, file, block, len(proof)) + b"".join(proof)


class FrameDecoder:
    """Feed stream bytes, get frames. Bounded: never buffers more than one frame.

    DATA frames that lie whole within one piece fed are parsed in place (their
    block is a memoryview of that piece, no copy); only a frame split across
    pieces is assembled in the buffer."""

    def __init__(self, max_frame: int = MAX_FRAME, types: dict | None = None) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._types = FRAME_TYPES if types is None else types

    def feed(self, data: bytes) -> list:
        frames: list = []
        view = memoryview(data)
        buf = self._buf
        if buf:
            # finish the frame an earlier piece began
            if len(buf) < 5:
                take = 5 - len(buf)
                buf += view[:take]
                view = view[take:]
                if len(buf) < 5:
                    return frames
            length, ftype = _LEN.unpack_from(buf, 0)
            self._check(length)
            need = 4 + length - len(buf)
            if need > len(view):
                buf += view
                return frames
            buf += view[:need]
            view = view[need:]
            self._frame(ftype, memoryview(bytes(buf))[5:], frames)
            buf.clear()
        pos, n = 0, len(view)
        while n - pos >= 5:
            length, ftype = _LEN.unpack_from(view, pos)
            self._check(length)
            if n - pos - 4 < length:
                break
            self._frame(ftype, view[pos + 5:pos + 4 + length], frames)
            pos += 4 + length
        if pos < n:
            buf += view[pos:]
        return frames

    def _check(self, length: int) -> None:
        if length == 0 or length > self._max:
            raise ProtocolError(f"frame length {length} out of bounds")

    def _frame(self, ftype: int, body: memoryview, frames: list) -> None:
        cls = self._types.get(ftype)
        if cls is None:
            return  # a later version's frame: skip
        if not getattr(cls, "BULK", False):
            body = memoryview(bytes(body))  # small frames own their bytes
        try:
            frames.append(cls.parse(body))
        except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
            # whatever a peer sends ends as a protocol error, never an exception out
            raise ProtocolError(f"malformed frame type {ftype:#x}: {exc}") from None
