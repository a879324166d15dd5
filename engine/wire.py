"""The peer protocol's frames, sans-IO.

Every frame on the connection's one bidirectional QUIC stream is
    u32 length | u8 type | payload          (length counts type + payload)
All integers are big-endian. The first frame each side sends is HELLO, which
carries the protocol version; a frame type this version does not know is
skipped (so later versions can add frames), and a frame longer than
MAX_FRAME is a protocol error that ends the connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ProtocolError

PROTOCOL_VERSION = 1
MAGIC = b"DATTUI"
MAX_FRAME = 4 * 1024 * 1024 + 64 * 1024  # a 4 MiB block, its proof and headers
MAX_PROOF = 64

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


FRAME_TYPES = {c.TYPE: c for c in (Hello, Auth, GetManifest, ManifestPart, ManifestSignature,
                                   Request, Cancel, NoData, Data, NewVersion, Ping, Pong, Close,
                                   Have, HaveAll, Bitfield)}


def encode(frame) -> bytes:
    payload = frame.payload()
    return _LEN.pack(len(payload) + 1, frame.TYPE) + payload


def encode_data_header(version: int, file: int, block: int, proof: list[bytes], size: int) -> bytes:
    """Header of a DATA frame whose block bytes follow separately (no copy of the block)."""
    n = 1 + _DATA.size + 32 * len(proof) + size
    return _LEN.pack(n, Data.TYPE) + _DATA.pack(version, file, block, len(proof)) + b"".join(proof)


class FrameDecoder:
    """Feed stream bytes, get frames. Bounded: never buffers more than one frame."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list:
        self._buf += data
        frames = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 5:
            length, ftype = _LEN.unpack_from(buf, pos)
            if length == 0 or length > self._max:
                raise ProtocolError(f"frame length {length} out of bounds")
            if len(buf) - pos - 4 < length:
                break
            body = bytes(buf[pos + 5:pos + 4 + length])
            pos += 4 + length
            cls = FRAME_TYPES.get(ftype)
            if cls is None:
                continue  # a later version's frame: skip
            try:
                frames.append(cls.parse(memoryview(body)))
            except struct.error as exc:
                raise ProtocolError(f"malformed frame type {ftype:#x}: {exc}") from None
        if pos:
            del buf[:pos]
        return frames
