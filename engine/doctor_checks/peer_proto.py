"""The two-machine peer test's wire formats, sans-IO.

- The *test id*: 80 random bits written as 16 base32 letters and digits
  (shown in groups of four: ``k3j9-q2m8-d3h7-f4xa``). Everything the two
  sides share is derived from it (`derive`): the 32-byte key both register
  at the rendezvous server (the server never sees the id), the key of the
  control messages' tags, and the 16-byte session of the echo probes.
- *Control messages* travel through a relay channel of the rendezvous server:
  ``"DTC1" | tag 16 | sender u8 | seq u32 | JSON object`` (at most
  `MAX_CONTROL` bytes), the tag a truncated HMAC-SHA256 of the rest under the
  control key, so neither the server nor anyone without the id can forge
  or reflect one (the sender byte: 1 host, 2 joiner).
- *Echo probes* test one path (``"+DT1" | type u8 (1 ping, 2 pong) |
  session 16 | nonce 8``, 29 bytes: the first byte 0x2b sorts them apart from
  STUN, QUIC, DHT and rendezvous messages, the magic from punch probes).
- The *throughput sample* runs on one QUIC stream as frames
  ``kind u8 | length u32 | payload`` (GO, DATA, END); `SampleReader` counts
  what arrives without keeping it.

Every decoder takes hostile input: it returns None (or raises `ValueError`
in `SampleReader`) and never anything else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError

__all__ = [
    "new_test_id", "format_test_id", "parse_test_id", "TestKeys", "derive",
    "HOST", "JOIN", "MAX_CONTROL", "encode_control", "decode_control", "is_control",
    "ECHO_SIZE", "is_echo", "ping", "pong_for", "pong_nonce",
    "GO", "DATA", "END", "frame", "SampleReader", "MAX_FRAME",
    "address", "addresses",
]

ID_BYTES = 10
ID_CHARS = 16


def new_test_id(rand: Callable[[int], bytes] = os.urandom) -> str:
    return base64.b32encode(rand(ID_BYTES)).decode("ascii").lower()


def format_test_id(test_id: str) -> str:
    return "-".join(test_id[i:i + 4] for i in range(0, len(test_id), 4))


def parse_test_id(text: str) -> str:
    """The id as `new_test_id` made it; UsageError for anything else."""
    raw = "".join(ch for ch in str(text).strip().lower() if ch not in "- ")
    try:
        if len(raw) != ID_CHARS:
            raise ValueError
        base64.b32decode(raw.upper())
    except ValueError:
        raise UsageError(f"not a peer test id: {text!r}; copy the id `dattui doctor --peer` printed "
                         "on the other machine (16 letters and digits)") from None
    return raw


@dataclass(frozen=True)
class TestKeys:
    key: bytes        # registered at the rendezvous server
    control: bytes    # HMAC key of the control messages
    session: bytes    # echo probes carry it


def derive(test_id: str) -> TestKeys:
    secret = base64.b32decode(parse_test_id(test_id).upper())

    def h(label: bytes, size: int) -> bytes:
        return hashlib.blake2b(label, key=secret, digest_size=size).digest()

    return TestKeys(h(b"dattui peer test: rendezvous key", 32), h(b"dattui peer test: control", 32),
                    h(b"dattui peer test: echo session", 16))


# -- control messages ------------------------------------------------------------------------

CTL_MAGIC = b"DTC1"
HOST, JOIN = 1, 2
MAX_CONTROL = 1200
_TAG = 16
_CTL_HEAD = struct.Struct("!4s16sBI")


def is_control(data: bytes) -> bool:
    return data[:4] == CTL_MAGIC


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:_TAG]


def encode_control(key: bytes, sender: int, seq: int, obj: dict) -> bytes:
    text = json.dumps(obj, separators=(",", ":")).encode()
    body = struct.pack("!BI", sender, seq) + text
    out = CTL_MAGIC + _tag(key, body) + body
    if len(out) > MAX_CONTROL:
        raise ValueError("control message too long")
    return out


def decode_control(key: bytes, receiver: int, data: bytes) -> tuple[int, dict] | None:
    """(seq, object) of a message the other side (not `receiver`) sent, or None."""
    if len(data) < _CTL_HEAD.size + 2 or len(data) > MAX_CONTROL or not is_control(data):
        return None
    _, tag, sender, seq = _CTL_HEAD.unpack_from(data)
    if sender not in (HOST, JOIN) or sender == receiver:
        return None
    if not hmac.compare_digest(tag, _tag(key, data[4 + _TAG:])):
        return None
    try:
        obj = json.loads(data[_CTL_HEAD.size:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        return None
    return seq, obj


def address(value) -> tuple[str, int] | None:
    """An [ip, port] pair from a control message, checked; None if it is not one."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    ip, port = value
    if not isinstance(ip, str) or len(ip) > 64 or not isinstance(port, int) or isinstance(port, bool):
        return None
    if not 0 < port < 65536:
        return None
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return None
    return ip, port


def addresses(value, limit: int = 8) -> list[tuple[str, int]]:
    if not isinstance(value, list):
        return []
    out = []
    for v in value[:limit]:
        a = address(v)
        if a is not None and a not in out:
            out.append(a)
    return out


# -- echo probes -----------------------------------------------------------------------------

ECHO_MAGIC = b"\x2bDT1"
PING, PONG = 1, 2
ECHO_SIZE = 29


def is_echo(data: bytes) -> bool:
    return len(data) == ECHO_SIZE and data[:4] == ECHO_MAGIC


def ping(session: bytes, nonce: bytes) -> bytes:
    return ECHO_MAGIC + bytes([PING]) + session + nonce


def pong_for(data: bytes, session: bytes) -> bytes | None:
    """The answer to a ping of our session (same size: never an amplifier), else None."""
    if is_echo(data) and data[4] == PING and data[5:21] == session:
        return ECHO_MAGIC + bytes([PONG]) + data[5:]
    return None


def pong_nonce(data: bytes, session: bytes) -> bytes | None:
    if is_echo(data) and data[4] == PONG and data[5:21] == session:
        return data[21:29]
    return None


# -- the throughput sample on a QUIC stream -------------------------------------------------

GO, DATA, END = 1, 2, 3
MAX_FRAME = 1 << 16
_FRAME = struct.Struct("!BI")


def frame(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError("frame too long")
    return _FRAME.pack(kind, len(payload)) + payload


class SampleReader:
    """Counts the frames of a sample stream as bytes arrive in any pieces.
    `feed` returns the control frames completed (GO, END) in order;
    `data_bytes` grows with DATA payloads. ValueError on a malformed stream."""

    def __init__(self) -> None:
        self._head = b""
        self._left = 0          # payload bytes still to skip in the current frame
        self._kind = 0
        self.data_bytes = 0

    def feed(self, data: bytes) -> list[int]:
        out: list[int] = []
        view = memoryview(data)
        while view:
            if self._left:
                n = min(self._left, len(view))
                if self._kind == DATA:
                    self.data_bytes += n
                self._left -= n
                view = view[n:]
                if not self._left:
                    self._finish(out)
                continue
            need = _FRAME.size - len(self._head)
            self._head += bytes(view[:need])
            view = view[need:]
            if len(self._head) < _FRAME.size:
                break
            self._kind, self._left = _FRAME.unpack(self._head)
            self._head = b""
            if self._kind not in (GO, DATA, END) or self._left > MAX_FRAME:
                raise ValueError("not a sample stream")
            if self._kind != DATA and self._left:
                raise ValueError("GO and END frames are empty")
            if not self._left:
                self._finish(out)
        return out

    def _finish(self, out: list[int]) -> None:
        if self._kind != DATA:
            out.append(self._kind)
