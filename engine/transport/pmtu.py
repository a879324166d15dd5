"""Datagram packetization layer path MTU discovery (DPLPMTUD, RFC 8899), sans-IO.

A connection starts at the base size every path carries (1452 bytes of UDP
payload). Once its handshake is done, the sender probes larger sizes with
padded probe datagrams sent with the don't-fragment bit on the very path the
connection uses; the peer answers each probe with a small acknowledgement
that echoes the probe's random nonce and the size it received. A confirmed
size becomes the connection's datagram size (the QUIC packets themselves are
never used as probes, so a lost probe costs no data).

Candidates are tried largest first - aioquic's ceiling (16,000: its packet
length field breaks above 16,383), jumbo frames (8,952 fits an MTU of 9,000
with IPv6 headers), 4,052 - each up to MAX_PROBES times; the first confirmed
one ends the search. A probe the local stack refuses (EMSGSIZE: larger than
the interface) fails at once. A larger size is tried again after
RAISE_INTERVAL; but when no probe of a search was answered at all (the peer
may only have been busy: a clone setting up its files, an event loop held
for a moment) the next search comes after RETRY_FIRST seconds, doubling up to
RAISE_INTERVAL, so a transfer does not spend a minute at the base size for
a moment's silence. When the connection stops getting acknowledgements (a
black hole: the path shrank), it drops back to the base size and searches
again after RAISE_INTERVAL.

Probe and acknowledgement on the wire (`MAGIC` keeps them apart from QUIC,
STUN, DHT and rendezvous datagrams on the node's one socket):

    MAGIC(4) kind(1) nonce(16) size(2, big-endian) [zero padding up to size]

An acknowledgement is 23 bytes, never larger than the probe it answers.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

MAGIC = b"\x2bDP1"
PROBE = 1
ACK = 2
_HDR = struct.Struct("!4sB16sH")
HEADER_SIZE = _HDR.size  # 23

BASE_SIZE = 1452
CANDIDATES = (16000, 8952, 4052)
MAX_PROBES = 3
MIN_PROBE_TIMEOUT = 0.1
MAX_PROBE_TIMEOUT = 1.0
RAISE_INTERVAL = 60.0
RETRY_FIRST = 1.0  # after a search with no probe answered; doubles up to RAISE_INTERVAL


def is_pmtu(data: bytes) -> bool:
    return data[:4] == MAGIC


def encode_probe(nonce: bytes, size: int) -> bytes:
    return _HDR.pack(MAGIC, PROBE, nonce, size) + bytes(size - HEADER_SIZE)


def encode_ack(nonce: bytes, size: int) -> bytes:
    return _HDR.pack(MAGIC, ACK, nonce, size)


@dataclass(frozen=True)
class Message:
    kind: int
    nonce: bytes
    size: int


def parse(data: bytes) -> Message | None:
    """A probe (whose stated size must be its real size) or an acknowledgement;
    None for anything else."""
    if len(data) < HEADER_SIZE:
        return None
    magic, kind, nonce, size = _HDR.unpack_from(data)
    if magic != MAGIC:
        return None
    if kind == PROBE and size == len(data):
        return Message(PROBE, nonce, size)
    if kind == ACK and len(data) == HEADER_SIZE and size > HEADER_SIZE:
        return Message(ACK, nonce, size)
    return None


class SearchState(enum.Enum):
    SEARCHING = "searching"
    COMPLETE = "complete"  # nothing larger to try, until RAISE_INTERVAL passes


class PmtuSearch:
    """One sending direction of one path: which datagram size it carries."""

    def __init__(self, base: int = BASE_SIZE, *, ceiling: int = CANDIDATES[0],
                 candidates: tuple[int, ...] = CANDIDATES,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.base = base
        self.size = base
        self._all = tuple(sorted((c for c in candidates if base < c <= ceiling), reverse=True))
        self._todo = list(self._all)
        self._random = random
        self._nonce = b""
        self._probe_size = 0
        self._tries = 0
        self._deadline: float | None = None
        self._raise_at: float | None = None
        self.state = SearchState.SEARCHING if self._todo else SearchState.COMPLETE
        self.black_holes = 0
        self._unanswered = 0  # searches in a row in which probes went unanswered
        self._silent = False  # a probe of this search timed out

    # ---- what the owner asks ----------------------------------------------------
    def next_timer(self) -> float | None:
        return self._deadline if self._deadline is not None else self._raise_at

    def start(self, now: float, rtt: float) -> bytes | None:
        """The first probe to send (None when there is nothing to try)."""
        return self._next_probe(now, rtt)

    def on_timer(self, now: float, rtt: float) -> bytes | None:
        """Called at `next_timer()`: a probe to send again, the next candidate's,
        or None."""
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            self._silent = True
            if self._tries >= MAX_PROBES:
                self._give_up_on_candidate()
            return self._next_probe(now, rtt)
        if self._raise_at is not None and now >= self._raise_at:
            self._raise_at = None
            self._silent = False
            self._todo = [c for c in self._all if c > self.size]
            self.state = SearchState.SEARCHING if self._todo else SearchState.COMPLETE
            return self._next_probe(now, rtt)
        return None

    def on_send_error(self, now: float, rtt: float) -> bytes | None:
        """The local stack refused the probe (larger than the interface MTU)."""
        self._deadline = None
        self._give_up_on_candidate()
        return self._next_probe(now, rtt)

    def on_ack(self, nonce: bytes, size: int, now: float) -> bool:
        """An acknowledgement arrived; True when it raised `size`."""
        if not self._nonce or nonce != self._nonce or size != self._probe_size:
            return False
        self._nonce = b""
        self._deadline = None
        raised = size > self.size
        if raised:
            self.size = size
        self._todo = []  # largest first: the first confirmed candidate is the answer
        self._unanswered = 0
        self._silent = False
        self._finish(now)
        return raised

    def black_hole(self, now: float) -> bool:
        """The connection lost everything sent at `size`: back to the base size.
        True when that changed the size."""
        if self.size == self.base:
            return False
        self.black_holes += 1
        self.size = self.base
        self._nonce = b""
        self._deadline = None
        self._todo = []
        self._silent = False  # the path shrank: no quick retry
        self._finish(now)
        return True

    # ---- internals ----------------------------------------------------------------
    def _give_up_on_candidate(self) -> None:
        if self._todo and self._todo[0] == self._probe_size:
            self._todo.pop(0)
        self._nonce = b""
        self._tries = 0

    def _finish(self, now: float) -> None:
        self.state = SearchState.COMPLETE
        if not any(c > self.size for c in self._all):
            self._raise_at = None
            return
        interval = RAISE_INTERVAL
        if self._silent:  # nothing answered: try again soon, then less and less often
            interval = min(RAISE_INTERVAL, RETRY_FIRST * 2 ** self._unanswered)
            self._unanswered += 1
        self._raise_at = now + interval

    def _next_probe(self, now: float, rtt: float) -> bytes | None:
        while self._todo and self._todo[0] <= self.size:
            self._todo.pop(0)
        if not self._todo:
            if self.state is SearchState.SEARCHING:
                self._finish(now)
            return None
        size = self._todo[0]
        if size != self._probe_size or not self._nonce:
            self._tries = 0
        self._probe_size = size
        self._nonce = self._random(16)
        self._tries += 1
        timeout = min(max(3 * rtt, MIN_PROBE_TIMEOUT), MAX_PROBE_TIMEOUT)
        self._deadline = now + timeout
        return encode_probe(self._nonce, size)

    @property
    def probe_nonce(self) -> bytes:
        return self._nonce
