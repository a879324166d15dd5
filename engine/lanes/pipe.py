"""What a lane process and its main process say to each other, sans-IO.

The pipe carries frames in the peer protocol's framing (engine/wire.py):
peer-protocol frames (requests from the main process for the lane's peer, and
the peer's frames other than DATA for the main process) and the messages
below, whose types (0xE0-0xEF) never travel on the network. A lane is a child
of the main process and trusted by it; what it forwards from its peer is not.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from .. import wire
from ..errors import ProtocolError

_U16 = struct.Struct(">H")
_BLOCK = struct.Struct(">II")
_VERIFIED = struct.Struct(">QIIB32s")


@dataclass(frozen=True)
class _Json:
    """A message whose payload is one JSON object."""

    body: dict

    def payload(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, p: memoryview):
        try:
            body = json.loads(bytes(p))
        except ValueError as exc:
            raise ProtocolError(f"bad {cls.__name__}: {exc}") from None
        if not isinstance(body, dict):
            raise ProtocolError(f"bad {cls.__name__}: not an object")
        return cls(body)


@dataclass(frozen=True)
class LaneConfig(_Json):
    """Main to lane, first: what the lane is for (see worker.py)."""

    TYPE = 0xE0


@dataclass(frozen=True)
class LaneListening:
    """Share lane to main: the UDP port it serves on."""

    TYPE = 0xE1
    port: int

    def payload(self) -> bytes:
        return _U16.pack(self.port)

    @classmethod
    def parse(cls, p: memoryview) -> "LaneListening":
        return cls(*_U16.unpack(p))


@dataclass(frozen=True)
class LaneReady:
    """Clone lane to main: its connection passed the handshake."""

    TYPE = 0xE2

    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, p: memoryview) -> "LaneReady":
        return cls()


@dataclass(frozen=True)
class LaneStats(_Json):
    """Lane to main, a few times a second: its connection's round trip and
    datagram size (clone lane), or what it served and to whom (share lane)."""

    TYPE = 0xE3


@dataclass(frozen=True)
class LaneClosed:
    """Lane to main: its connection ended (the lane exits next)."""

    TYPE = 0xE4
    reason: str

    def payload(self) -> bytes:
        return self.reason.encode()[:200]

    @classmethod
    def parse(cls, p: memoryview) -> "LaneClosed":
        return cls(bytes(p).decode(errors="replace"))


@dataclass(frozen=True)
class Verified:
    """Clone lane to main: a block that checked out against the signed tree,
    with its leaf hash and the proof it came with."""

    TYPE = 0xE5
    BULK = True
    version: int
    file: int
    block: int
    leaf: bytes
    proof: tuple[bytes, ...]
    data: bytes | memoryview

    def payload(self) -> bytes:
        return b"".join((self.header(), self.data))

    def header(self) -> bytes:
        return _VERIFIED.pack(self.version, self.file, self.block, len(self.proof),
                              self.leaf) + b"".join(self.proof)

    @classmethod
    def parse(cls, p: memoryview) -> "Verified":
        v, f, b, n, leaf = _VERIFIED.unpack_from(p)
        end = _VERIFIED.size + 32 * n
        if n > wire.MAX_PROOF or end > len(p):
            raise ProtocolError("bad proof in VERIFIED")
        proof = tuple(bytes(p[i:i + 32]) for i in range(_VERIFIED.size, end, 32))
        return cls(v, f, b, leaf, proof, p[end:])


def encode_verified_header(version: int, file: int, block: int, leaf: bytes,
                           proof, size: int) -> bytes:
    """Length, type and header of a VERIFIED message whose block follows (no copy)."""
    n = 1 + _VERIFIED.size + 32 * len(proof) + size
    return struct.pack(">IB", n, Verified.TYPE) + _VERIFIED.pack(
        version, file, block, len(proof), leaf) + b"".join(proof)


@dataclass(frozen=True)
class BadBlock:
    """Clone lane to main: its peer sent a block that does not verify (the
    lane closes the connection)."""

    TYPE = 0xE6
    file: int
    block: int

    def payload(self) -> bytes:
        return _BLOCK.pack(self.file, self.block)

    @classmethod
    def parse(cls, p: memoryview) -> "BadBlock":
        return cls(*_BLOCK.unpack(p))


class ManifestParts:
    """A version told as ManifestPart frames and its ManifestSignature
    (serve.manifest_frames), put back together."""

    def __init__(self) -> None:
        self._parts = bytearray()

    def feed(self, msg) -> tuple[int, bytes, bytes] | None:
        """(version, encoded, signature) once the signature arrives, else None."""
        if isinstance(msg, wire.ManifestPart):
            if msg.offset == 0:
                self._parts = bytearray()
            self._parts += msg.chunk
        elif isinstance(msg, wire.ManifestSignature):
            encoded, self._parts = bytes(self._parts), bytearray()
            return msg.version, encoded, msg.signature
        return None


PIPE_TYPES = {c.TYPE: c for c in (LaneConfig, LaneListening, LaneReady, LaneStats,
                                  LaneClosed, Verified, BadBlock)}
TYPES = {**wire.FRAME_TYPES, **PIPE_TYPES}
MAX_MESSAGE = wire.MAX_FRAME + 64


def decoder() -> wire.FrameDecoder:
    return wire.FrameDecoder(MAX_MESSAGE, TYPES)
