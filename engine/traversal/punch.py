"""UDP hole punching, sans-IO: probes, acknowledgements and their schedule.

Probe datagrams (29 bytes; the first byte 0x2b never collides with STUN
(0x00-0x03), QUIC (fixed bit 0x40) or a bencoded DHT message ('d')):
    b"\\x2bDP1" | u8 type (1 probe, 2 ack) | 16-byte session | 8-byte nonce
Both sides learn the session from the rendezvous that coordinates the punch;
a datagram with another session is ignored.

Schedule: at `start` every (socket, candidate) pair gets one probe with a low
TTL (it opens our own NAT mapping and dies before the far NAT, so the far NAT
never records an unsolicited flow that would collide with its own outbound
one), then full probes at +0.05, +0.15, +0.3, +0.5, +0.75 s and every second
until the deadline. A probe is answered with an ack. A probe or an ack for our
session means the path works: the probe came in through the very mapping our
ack leaves by.

Birthday mode, for a peer behind a NAT that maps per destination: the side
behind the consistent NAT sprays probes at random ports of the hard side's
IP (`spray`), the hard side probes from many sockets at once (`sockets`).
"""

from __future__ import annotations

import enum
import random
import struct
from dataclasses import dataclass

Address = tuple[str, int]
MAGIC = b"\x2bDP1"
PROBE, ACK = 1, 2
SIZE = 29
LOW_TTL = 3  # opens our NAT (and a carrier-grade NAT behind it), dies before the far NAT
SCHEDULE = (0.05, 0.15, 0.3, 0.5, 0.75, 1.0)
SPRAY_BATCH = 16
SPRAY_TICK = 0.02


def is_probe(data: bytes) -> bool:
    return len(data) == SIZE and data[:4] == MAGIC


def encode(kind: int, session: bytes, nonce: bytes) -> bytes:
    return MAGIC + struct.pack(">B", kind) + session + nonce


@dataclass(frozen=True)
class Send:
    data: bytes
    addr: Address
    socket: int = 0          # 0: the node's socket; 1..n: helper sockets
    ttl: int | None = None   # None: the socket's default


@dataclass(frozen=True)
class Punched:
    addr: Address            # where the peer answers
    socket: int              # which of our sockets reaches it
    seconds: float


class PunchState(enum.Enum):
    WAITING = "waiting"
    PUNCHING = "punching"
    DONE = "done"
    FAILED = "failed"


class Puncher:
    def __init__(self, session: bytes, candidates: list[Address], *, start: float,
                 deadline: float = 10.0, rng: random.Random, sockets: tuple[int, ...] = (0,),
                 spray: tuple[str, int] | None = None) -> None:
        if len(session) != 16:
            raise ValueError("session must be 16 bytes")
        self.session = session
        self.candidates = list(dict.fromkeys(candidates))
        self.start = start
        self.deadline = start + deadline
        self.rng = rng
        self.sockets = sockets
        self.spray_ip, self.spray_left = spray if spray else (None, 0)
        self.state = PunchState.WAITING
        self.result: Punched | None = None
        self.rounds_sent = 0
        self.probes_sent = 0
        self._next_round = start
        self._next_spray = start
        self.heard: set[Address] = set()

    def add_candidates(self, addrs: list[Address]) -> None:
        for a in addrs:
            if a not in self.candidates:
                self.candidates.append(a)

    def _probe(self) -> bytes:
        return encode(PROBE, self.session, self.rng.randbytes(8))

    def poll(self, now: float) -> list[Send]:
        if self.state in (PunchState.DONE, PunchState.FAILED):
            return []
        if now >= self.deadline:
            self.state = PunchState.FAILED
            return []
        out: list[Send] = []
        if now >= self._next_round:
            self.state = PunchState.PUNCHING
            # the hard side of a birthday punch only ever opens its own mappings: a
            # probe reaching the far NAT first would make it move the mapping the
            # far side's spray is about to use (and the spray finds us anyway)
            ttl = LOW_TTL if self.rounds_sent == 0 or len(self.sockets) > 1 else None
            for sock in self.sockets:
                for addr in self.candidates:
                    out.append(Send(self._probe(), addr, sock, ttl))
            self.rounds_sent += 1
            if self.rounds_sent <= len(SCHEDULE):
                self._next_round = self.start + SCHEDULE[self.rounds_sent - 1]
            else:
                self._next_round = now + 1.0
        if self.spray_ip and self.spray_left > 0 and now >= self._next_spray and self.rounds_sent > 0:
            for _ in range(min(SPRAY_BATCH, self.spray_left)):
                out.append(Send(self._probe(), (self.spray_ip, self.rng.randint(1024, 65535))))
            self.spray_left -= SPRAY_BATCH
            self._next_spray = now + SPRAY_TICK
        self.probes_sent += len(out)
        return out

    def next_timer(self) -> float | None:
        if self.state in (PunchState.DONE, PunchState.FAILED):
            return None
        t = min(self._next_round, self.deadline)
        if self.spray_ip and self.spray_left > 0:
            t = min(t, max(self._next_spray, self.start))
        return t

    def receive(self, data: bytes, addr: Address, now: float, socket: int = 0) -> list:
        """A datagram that `is_probe`: maybe an ack to send, maybe success."""
        if not is_probe(data) or data[5:21] != self.session:
            return []
        kind = data[4]
        out: list = []
        if kind == PROBE:
            self.heard.add(addr)
            out.append(Send(encode(ACK, self.session, data[21:29]), addr, socket))
            # a probe that reached us proves this (socket, address) pair passes both
            # NATs: our ack leaves through the mapping the probe came in by
            if self.state is not PunchState.DONE:
                self.state = PunchState.DONE
                self.result = Punched(addr, socket, now - self.start)
                out.append(self.result)
        elif kind == ACK and self.state is not PunchState.DONE:
            self.state = PunchState.DONE
            self.result = Punched(addr, socket, now - self.start)
            out.append(self.result)
        return out
