"""What a clone waits for, and when it stops waiting: sans-IO, clock injected.

The clone (engine/clone.py) feeds events in and carries out the actions that
come back; nothing here touches a socket, a timer or the wall clock, so the
rules are tested in milliseconds with a fake clock (tests/test_liveness.py).

Rules, per peer (keyed by an opaque, hashable handle):
- A peer with requests out that delivers nothing useful (a verified block, a
  manifest part) for `request_timeout` - scaled to its measured rate and RTT:
  three times what its in-flight bytes should take, between MIN and MAX - is
  SLOW: its requests go to other peers (`Reassign`) and it is sent a PING
  (`Ping`); it gets new requests once it answers (a congested seed may be the
  only one with the blocks).
- A peer with requests out from which not a byte arrives for `ping_after`
  (1 s, or 4 RTT) is sent a PING; one that then answers nothing at all (no
  byte, not even the PONG) within `ping_timeout` (2 s, or 8 RTT) is dropped:
  the connection is dead (the process restarted, a frame stuck half sent),
  and waiting for QUIC's 30 s idle timeout would stall the transfer. A peer
  that answers but, asked again and again, delivers nothing useful for
  `peer_idle_timeout` is dropped too.
- A peer that sent bad data (a block that does not verify, a protocol
  violation) is banned for this transfer: its address is not dialled again and
  its node id is refused. One that merely closed is dialled again after a
  backoff (1, 2, 4 ... 30 s), reset by useful data from that address.

Rules for the transfer: progress is useful data, or a node authenticating for
the first time in this run. Once a node has authenticated (before, finding
one is the front end's `find_timeout`), when there has been no progress for
`stall_timeout` seconds, `Stuck(cause)` names why in one line (no peer left, every peer
banned, peers only offer an older version, peers stopped sending, the peers
hold none of what is missing); `Unstuck` follows when progress resumes. A
foreground clone gives up on `Stuck`; `--sync` and the daemon show it.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field

MIN_REQUEST_TIMEOUT = 2.0   # never reassign sooner: a loaded machine stalls for a second
MAX_REQUEST_TIMEOUT = 30.0  # never wait longer for a peer with requests out
FIRST_REQUEST_TIMEOUT = 8.0  # a peer that has delivered nothing yet (no rate measured)
REQUEST_TIMEOUT_FACTOR = 3.0
MIN_PING_TIMEOUT = 2.0
MIN_PING_AFTER = 1.0
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


@dataclass(frozen=True, slots=True)
class Rules:
    stall_timeout: float = 60.0      # no progress this long: Stuck
    peer_idle_timeout: float = 15.0  # a slow peer that delivers nothing this long is dropped


def request_timeout(inflight_bytes: int, rate: float, rtt: float) -> float:
    """How long requests may wait at a peer without anything useful arriving."""
    if rate <= 0:
        return FIRST_REQUEST_TIMEOUT
    expected = 2 * rtt + inflight_bytes / rate
    return min(MAX_REQUEST_TIMEOUT, max(MIN_REQUEST_TIMEOUT, REQUEST_TIMEOUT_FACTOR * expected))


def ping_timeout(rtt: float) -> float:
    """How long a PING may go unanswered (with nothing else heard) before the
    connection counts as dead."""
    return max(MIN_PING_TIMEOUT, 8 * rtt)


def ping_after(rtt: float) -> float:
    """Requests out and not a byte heard for this long: PING."""
    return max(MIN_PING_AFTER, 4 * rtt)


# ---- events (in) --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PeerAuthenticated:
    peer: Hashable
    addr: tuple
    node_id: bytes


@dataclass(frozen=True, slots=True)
class DataArrived:
    """Something useful from `peer`: a verified block or a manifest part."""
    peer: Hashable
    nbytes: int = 0


@dataclass(frozen=True, slots=True)
class VersionOffered:
    """The peer's manifest answer: the version it serves."""
    peer: Hashable
    version: int


@dataclass(frozen=True, slots=True)
class PeerClosed:
    peer: Hashable
    misbehaved: bool  # we closed it for bad data or a protocol violation
    reason: str


@dataclass(frozen=True, slots=True)
class PeerLoad:
    """A peer as the clone sees it at a tick."""
    peer: Hashable
    inflight_bytes: int
    rate: float          # useful bytes/s it delivers
    rtt: float
    last_heard: float    # when any byte last arrived from it
    serves: bool         # it holds our version and said what it has


@dataclass(frozen=True, slots=True)
class Tick:
    loads: tuple[PeerLoad, ...]
    version: int         # ours (0: no manifest yet)
    missing: bool        # blocks still to fetch


# ---- actions (out) ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reassign:
    peer: Hashable


@dataclass(frozen=True, slots=True)
class Ping:
    peer: Hashable


@dataclass(frozen=True, slots=True)
class Drop:
    peer: Hashable
    reason: str


@dataclass(frozen=True, slots=True)
class Stuck:
    cause: str


@dataclass(frozen=True, slots=True)
class Unstuck:
    pass


# ---- state --------------------------------------------------------------------------
class Phase(enum.Enum):
    OK = "ok"        # delivering, or nothing asked of it
    SLOW = "slow"    # requests reassigned, pinged; no new requests until it answers


@dataclass(slots=True)
class PeerState:
    addr: tuple
    node_id: bytes
    last_useful: float
    phase: Phase = Phase.OK
    waiting_since: float | None = None  # requests out and nothing useful since
    streak_since: float | None = None   # asked (again and again) and nothing useful since
    reassigned: bool = False            # its requests were taken away since its last data
    ping_at: float | None = None  # when we last sent a PING
    offered: int | None = None
    dropped: bool = False
    first_useful: float | None = None
    delivered: int = 0  # useful bytes since first_useful

    def rate(self) -> float:
        """Useful bytes/s from its first delivery to its last: unlike a sliding
        window, this does not fall to nothing when the peer stops."""
        span = self.last_useful - (self.first_useful or self.last_useful)
        return self.delivered / span if span >= 0.25 else 0.0


@dataclass(slots=True)
class AddrState:
    failures: int = 0
    next_dial: float = 0.0
    banned: bool = False


@dataclass(slots=True)
class Liveness:
    rules: Rules
    started: float
    peers: dict = field(default_factory=dict)       # handle -> PeerState
    addrs: dict = field(default_factory=dict)       # addr -> AddrState
    banned_ids: set = field(default_factory=set)
    seen_ids: set = field(default_factory=set)
    last_progress: float = 0.0
    stuck: str | None = None
    last_close: str = ""
    closes: int = 0

    def __post_init__(self) -> None:
        self.last_progress = self.started

    # ---- queries --------------------------------------------------------------------
    def may_dial(self, addr: tuple, now: float) -> bool:
        a = self.addrs.get(addr)
        return a is None or (not a.banned and now >= a.next_dial)

    def refuses(self, node_id: bytes) -> bool:
        return node_id in self.banned_ids

    def is_slow(self, peer: Hashable) -> bool:
        s = self.peers.get(peer)
        return s is not None and s.phase is Phase.SLOW

    # ---- events ---------------------------------------------------------------------
    def handle(self, event, now: float) -> list:
        if isinstance(event, DataArrived):
            return self._useful(event.peer, event.nbytes, now)
        if isinstance(event, Tick):
            return self._tick(event, now)
        if isinstance(event, PeerAuthenticated):
            self.peers[event.peer] = PeerState(event.addr, event.node_id, now)
            if event.node_id not in self.seen_ids:
                self.seen_ids.add(event.node_id)
                return self._progress(now)
            return []
        if isinstance(event, VersionOffered):
            s = self.peers.get(event.peer)
            if s is not None:
                s.offered = event.version
            return []
        if isinstance(event, PeerClosed):
            return self._closed(event, now)
        raise TypeError(f"unknown event {event!r}")

    def _progress(self, now: float) -> list:
        self.last_progress = now
        if self.stuck is not None:
            self.stuck = None
            return [Unstuck()]
        return []

    def _useful(self, peer: Hashable, nbytes: int, now: float) -> list:
        s = self.peers.get(peer)
        if s is not None:
            if s.first_useful is None:
                s.first_useful = now
            else:
                s.delivered += nbytes
            s.last_useful = now
            s.phase, s.reassigned, s.streak_since = Phase.OK, False, None
            a = self.addrs.get(s.addr)
            if a is not None and not a.banned:
                a.failures = 0
        return self._progress(now)

    def _closed(self, ev: PeerClosed, now: float) -> list:
        s = self.peers.pop(ev.peer, None)
        if s is None:
            return []
        self.closes += 1
        self.last_close = ev.reason
        a = self.addrs.setdefault(s.addr, AddrState())
        if ev.misbehaved:
            a.banned = True
            self.banned_ids.add(s.node_id)
        else:
            a.failures += 1
            a.next_dial = now + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (a.failures - 1))
        return []

    def _tick(self, t: Tick, now: float) -> list:
        out: list = []
        for load in t.loads:
            s = self.peers.get(load.peer)
            if s is None or s.dropped:
                continue
            answered = s.ping_at is None or load.last_heard >= s.ping_at
            if s.phase is Phase.SLOW and answered:
                # alive after all (a congested seed, say): it may be asked again, on
                # probation: the streak of asking without data goes on
                s.phase, s.waiting_since = Phase.OK, None
            if load.inflight_bytes <= 0 and s.phase is Phase.OK:
                s.waiting_since = None
                if not s.reassigned:
                    s.streak_since = None  # nothing asked of it: nothing it failed to do
                continue
            if s.waiting_since is None:
                s.waiting_since = now
            if s.streak_since is None:
                s.streak_since = now
            if not answered and now - s.ping_at >= ping_timeout(load.rtt):
                # not even a PONG: the connection is dead (the peer restarted,
                # a frame is stuck half sent); no need to wait for QUIC's idle timeout
                s.dropped = True
                out.append(Drop(load.peer, f"answered nothing for {now - s.ping_at:.0f} s"))
                continue
            if now - s.streak_since >= self.rules.peer_idle_timeout:
                s.dropped = True  # alive, asked, and useless
                out.append(Drop(load.peer, f"sent no data for {now - s.streak_since:.0f} s"))
                continue
            if s.phase is Phase.OK:
                if now - max(s.waiting_since, s.last_useful) >= request_timeout(
                        load.inflight_bytes, max(load.rate, s.rate()), load.rtt):
                    s.phase, s.reassigned = Phase.SLOW, True
                    out.append(Reassign(load.peer))
                    if answered:
                        s.ping_at = now
                        out.append(Ping(load.peer))
                elif answered and now - max(load.last_heard, s.waiting_since) >= ping_after(load.rtt):
                    s.ping_at = now  # quiet while we wait: is it there at all?
                    out.append(Ping(load.peer))
            elif load.inflight_bytes > 0:
                out.append(Reassign(load.peer))  # SLOW, asked meanwhile (a moved request): on
        # before any peer authenticated, finding one is the front end's find_timeout
        if self.stuck is None and self.seen_ids and now - self.last_progress >= self.rules.stall_timeout:
            self.stuck = self._cause(t, now)
            out.append(Stuck(self.stuck))
        return out

    def _cause(self, t: Tick, now: float) -> str:
        idle = f"{now - self.last_progress:.0f} s"
        live = [self.peers[l.peer] for l in t.loads if l.peer in self.peers
                and not self.peers[l.peer].dropped]
        banned = sum(1 for a in self.addrs.values() if a.banned)
        if not live:
            if banned and banned == len(self.addrs):
                return (f"every peer found ({banned}) sent data that does not verify or broke the "
                        f"protocol, and was disconnected; nothing else answered for {idle}")
            if self.closes:
                return (f"no peer left: the last one closed ({self.last_close}) and none "
                        f"came back for {idle}")
            return f"no peer sharing this link answered for {idle}"  # (not reached: see _tick)
        older = [s.offered for s in live if s.offered is not None and s.offered < t.version]
        serving = [l for l in t.loads if l.serves and l.peer in self.peers
                   and not self.peers[l.peer].dropped]
        if older and len(older) == len(live):
            return (f"the only peer{'s' if len(live) > 1 else ''} found offer{'' if len(live) > 1 else 's'} "
                    f"version {max(older)}, older than version {t.version} already here; "
                    f"waited {idle} for one with it")
        if not t.version or not serving:
            return (f"the connected peer{'s' if len(live) > 1 else ''} sent no manifest of this "
                    f"share for {idle} (a clone that serves nothing, or too slow a path)")
        if any(s.phase is Phase.SLOW for s in live) or any(
                l.inflight_bytes > 0 for l in t.loads if l.peer in self.peers):
            return f"the peers stopped sending: asked for blocks, no data for {idle}"
        if t.version and t.missing:
            return f"the connected peers hold none of the blocks still missing; waited {idle}"
        return f"no progress for {idle}"
