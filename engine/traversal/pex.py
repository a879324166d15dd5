"""Peer exchange, with hole punching coordinated through the common peer.

Every node tells the peers of a share it is connected to about each other
(PEX: node ids and the address it reaches each at, at most MAX_PEX_PEERS per
frame): a new peer hears of all the others, the others of the new one, and
everyone again every PEX_EVERY seconds (not a clone with --no-upload: it serves
others nothing, introductions included). A clone still downloading asks the
introducer to connect it with a peer it is not connected to (PUNCH_REQUEST);
the introducer sends both sides, at once, a PUNCH_INTRO with a fresh session
and the address it sees the other one at; both probe each other from their
node socket (engine/traversal/punch.py: low-TTL first probe, then the
schedule), and once a probe or an ack gets through, the side with the smaller
node id dials QUIC over that path. So a swarm needs no rendezvous server once
one connection exists, and two clones behind port-restricted NATs that each
know only the share end up connected to each other. A clone asks only for
nodes it is still not connected to REQUEST_AFTER seconds after hearing of them
(it may be dialling them already: an address given with --peer, LAN, DHT).

All of it is hostile input (the peers know the link, nothing more):
- PEX makes a node send nothing to any listed address, only a PUNCH_REQUEST
  back to the peer that sent it (at most one per listed peer every
  REQUEST_AGAIN seconds).
- An introducer answers at most INTRO_BURST requests at once from one peer
  and INTRO_RATE per second after that, once per pair every PAIR_AGAIN
  seconds, only for two peers both connected to it over a direct path.
- A PUNCH_INTRO starts at most one punch per remote node, at most
  ATTEMPTS_PER_PEER at once per introducer (and INTRO_RATE per second), at most
  MAX_ATTEMPTS at once in all; at most MAX_PEX_ADDRS candidates, never a
  multicast, broadcast, unspecified or port-0 address; each punch sends a few
  29-byte probes per candidate for PUNCH_DEADLINE seconds. So a hostile peer
  can make a node send at most a bounded trickle of small probes anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Callable

from .. import wire
from ..events import PathAttempted, PathKind, PeerFound, Role
from ..ratelimit import TokenBucket
from ..transport.paths import DirectPath
from .probes import probe_router
from .punch import Punched, Puncher, PunchState, Send
from .sockets import sendto_ttl

log = logging.getLogger("dattui.pex")

Address = tuple[str, int]
PEX_EVERY = 30.0          # every peer hears the full list again this often
REQUEST_AGAIN = 20.0      # a clone asks to be introduced to one node at most this often
REQUEST_AFTER = 1.0       # ... and only when not connected to it this long after hearing of it
PAIR_AGAIN = 10.0         # an introducer introduces one pair at most this often
INTRO_RATE = 1.0          # introductions asked of / accepted from one peer per second ...
INTRO_BURST = 8           # ... after a burst of this many
ATTEMPTS_PER_PEER = 4     # punches at once on the word of one introducer
MAX_ATTEMPTS = 16         # punches at once in all
MAX_PEERS = 32            # a clone asks for no more introductions with this many peers
PUNCH_DEADLINE = 8.0
KEEP_AFTER = 3.0          # a punch that got through keeps answering probes this long
MEMORY = 4096             # bound of the per-node memories (requests, pairs)


def usable(addr: Address, ipv6: bool) -> bool:
    """An address worth probing: unicast, a real port, our socket's family."""
    try:
        ip = ipaddress.ip_address(addr[0])
    except ValueError:
        return False
    if ip.version == 6 and not ipv6 or ip.version == 4 and ipv6:
        return False
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved \
            or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")):
        return False
    return 0 < addr[1] < 65536


def _direct_addr(peer) -> Address | None:
    """Where we reach this peer without a relay, if we do."""
    path = peer.link.path
    if path.relayed:
        return None
    return tuple(peer.link.addr[:2])


def _remember(d: dict, key, value) -> None:
    d[key] = value
    if len(d) > MEMORY:
        del d[next(iter(d))]


class _Attempt:
    """Punching towards one node on an introducer's word."""

    def __init__(self, svc: "PexService", swarm, introducer, intro: wire.PunchIntro,
                 candidates: list[Address]) -> None:
        self.svc, self.swarm, self.introducer = svc, swarm, introducer
        self.node_id = intro.node_id
        self.session = intro.session
        self.dial = svc.node.identity.public < intro.node_id  # the smaller node id dials
        loop = svc.node.loop
        self.puncher = Puncher(intro.session, candidates, start=loop.time(),
                               deadline=PUNCH_DEADLINE, rng=svc.rng)
        self.started = time.monotonic()
        self.peer = None  # the connection it dialled
        self.punched_at: float | None = None
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        svc.router.sessions[intro.session] = self.probe
        where = ", ".join(f"{h}:{p}" for h, p in candidates)
        self.note("punch", f"introduced by peer {introducer.peer_id}: probing {where}")
        self._tick()

    @property
    def addr(self) -> str:
        h, p = self.puncher.candidates[0]
        return f"{h}:{p}"

    def note(self, step: str, detail: str) -> None:
        self.svc.emit(PathAttempted(self.swarm.tid, self.addr, step, detail))

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        if self.svc.connected(self.swarm, self.node_id) or self.swarm.dkey not in self.svc.node.swarms:
            self.close()
            return
        loop = self.svc.node.loop
        now = loop.time()
        for s in self.puncher.poll(now):
            self._send(s)
        if self.puncher.state is PunchState.FAILED:
            self.note("gave-up", f"no probe answered within {PUNCH_DEADLINE:.0f} s")
            self.close()
            return
        if self.puncher.state is PunchState.DONE:
            # go on answering the other side's probes for a while, then stop
            at = loop.time() + 0.5
            if time.monotonic() - self.started > PUNCH_DEADLINE or \
                    (self.punched_at and time.monotonic() - self.punched_at > KEEP_AFTER):
                self.close()
                return
        else:
            at = self.puncher.next_timer()
        if at is not None:
            self._timer = loop.call_at(at, self._tick)

    def _send(self, s: Send) -> None:
        sock = self.svc.node.socket
        if sock is not None and not sock.closed:
            sendto_ttl(sock.sock, s.data, s.addr, s.ttl)

    def probe(self, data: bytes, addr: Address) -> None:
        if self.closed:
            return
        for r in self.puncher.receive(data, addr, self.svc.node.loop.time()):
            if isinstance(r, Send):
                self._send(r)
            elif isinstance(r, Punched):
                self._punched(r)

    def _punched(self, r: Punched) -> None:
        self.punched_at = time.monotonic()
        self.svc.router.punched(r.addr)
        self.note("punched", f"a probe got through at {r.addr[0]}:{r.addr[1]} after {r.seconds:.2f} s"
                             + ("; connecting" if self.dial else "; the other side connects"))
        if self.dial:
            node = self.svc.node
            path = DirectPath(node.socket.sendto, r.addr, PathKind.PUNCHED)
            peer = node.dial_path(self.swarm.dkey, path, "pex")
            if peer is not None:
                peer.began = self.started
                self.peer = peer

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.svc.router.sessions.get(self.session) == self.probe:
            del self.svc.router.sessions[self.session]
        self.svc.attempts.pop((self.swarm.dkey, self.node_id), None)


class PexService:
    def __init__(self, node, *, rng: random.Random | None = None,
                 emit: Callable = lambda e: None) -> None:
        self.node = node
        self.rng = rng or random.Random()
        self.emit = emit
        self.router = probe_router(node)
        self.attempts: dict[tuple[bytes, bytes], _Attempt] = {}
        self._asked: dict[tuple[bytes, bytes], float] = {}   # (dkey, node id) -> when we asked
        self._paired: dict[tuple[bytes, bytes, bytes], float] = {}  # introductions made
        self._pending: dict[bytes, list] = {}  # dkey -> peers that attached, to announce
        self._task: asyncio.Task | None = None
        self.introductions = 0  # made for others
        self.punches = 0        # started on others' word

    def start(self) -> None:
        endpoint = self.node.endpoint
        before = endpoint.classify
        router = self.router
        endpoint.classify = lambda addr: PathKind.PUNCHED if router.was_punched(addr) else before(addr)
        self._task = asyncio.ensure_future(self._loop())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for a in list(self.attempts.values()):
            a.close()

    # ---- telling peers about each other ----------------------------------------
    @staticmethod
    def _entry(peer) -> wire.PexPeer | None:
        addr = _direct_addr(peer)
        if addr is None or not peer.remote_id:
            return None
        return wire.PexPeer(peer.remote_id, (addr,))

    def _ready(self, swarm) -> list:
        return [p for p in swarm.peers if not p.link.closed and p.remote_id]

    @staticmethod
    def _introduces(swarm) -> bool:
        """A clone with --no-upload serves nothing to others, introductions included."""
        return getattr(swarm, "upload", True)

    def attached(self, swarm, peer) -> None:
        if not self._introduces(swarm):
            return
        pending = self._pending.setdefault(swarm.dkey, [])
        pending.append(peer)
        if len(pending) == 1:  # one round of frames for the peers that attach together
            self.node.loop.call_later(0.05, self._announce, swarm)

    def _announce(self, swarm) -> None:
        new = [p for p in self._pending.pop(swarm.dkey, []) if not p.link.closed]
        if not new or swarm.dkey not in self.node.swarms:
            return
        everyone = self._ready(swarm)
        for p in new:  # a new peer hears of everyone
            self._send_list(p, [q for q in everyone if q is not p])
        entries_new = [e for e in map(self._entry, new) if e is not None]
        for q in everyone:  # everyone else hears of the new ones
            if q not in new:
                for i in range(0, len(entries_new), wire.MAX_PEX_PEERS):
                    q.send(wire.Pex(tuple(entries_new[i:i + wire.MAX_PEX_PEERS])))

    def _send_list(self, to, peers: list) -> None:
        entries = [e for e in map(self._entry, peers) if e is not None]
        if len(entries) > wire.MAX_PEX_PEERS:
            entries = self.rng.sample(entries, wire.MAX_PEX_PEERS)
        if entries:
            to.send(wire.Pex(tuple(entries)))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(PEX_EVERY)
            for swarm in list(self.node.swarms.values()):
                if not self._introduces(swarm):
                    continue
                everyone = self._ready(swarm)
                for p in everyone:
                    self._send_list(p, [q for q in everyone if q is not p])

    # ---- frames from peers -----------------------------------------------------
    def connected(self, swarm, node_id: bytes) -> bool:
        return any(p.remote_id == node_id and not p.link.closed for p in swarm.peers)

    def frame(self, swarm, peer, frame) -> None:
        if isinstance(frame, wire.Pex):
            self._on_pex(swarm, peer, frame)
        elif isinstance(frame, wire.PunchRequest):
            self._on_request(swarm, peer, frame)
        elif isinstance(frame, wire.PunchIntro):
            self._on_intro(swarm, peer, frame)

    def _wants_more(self, swarm) -> bool:
        return swarm.role is Role.CLONE and not getattr(swarm, "completed", True) \
            and getattr(swarm, "wants_peers", True) and len(swarm.peers) < MAX_PEERS

    def _on_pex(self, swarm, peer, frame: wire.Pex) -> None:
        if not self._wants_more(swarm):
            return
        me = self.node.identity.public
        heard = peer.app.get("pex_heard")
        for e in frame.peers:
            if e.node_id not in (me, peer.remote_id) and e.addrs:
                if heard is None:
                    heard = peer.app["pex_heard"] = {}
                    self.node.loop.call_later(REQUEST_AFTER, self._ask, swarm, peer)
                if len(heard) < MEMORY:
                    heard[e.node_id] = None

    def _ask(self, swarm, peer) -> None:
        """Ask `peer` to introduce us to the nodes it told us of that we are
        still not connected to."""
        nodes = peer.app.pop("pex_heard", None) or {}
        if peer.link.closed or not self._wants_more(swarm) or swarm.dkey not in self.node.swarms:
            return
        now = time.monotonic()
        for node_id in nodes:
            key = (swarm.dkey, node_id)
            if self.connected(swarm, node_id) or key in self.attempts \
                    or now - self._asked.get(key, -1e9) < REQUEST_AGAIN:
                continue
            _remember(self._asked, key, now)
            peer.send(wire.PunchRequest(node_id))

    def _on_request(self, swarm, peer, frame: wire.PunchRequest) -> None:
        if not self._introduces(swarm):
            return
        now = time.monotonic()
        bucket = peer.app.get("pex_requests")
        if bucket is None:
            bucket = peer.app["pex_requests"] = TokenBucket(INTRO_RATE, INTRO_BURST, now)
        if not bucket.take(now):
            return
        other = next((p for p in swarm.peers if p.remote_id == frame.node_id
                      and not p.link.closed), None)
        if other is None or other is peer:
            return
        a, b = _direct_addr(peer), _direct_addr(other)
        if a is None or b is None:
            return
        lo, hi = sorted((peer.remote_id, other.remote_id))
        pair = (swarm.dkey, lo, hi)
        if now - self._paired.get(pair, -1e9) < PAIR_AGAIN:
            return
        _remember(self._paired, pair, now)
        session = self.rng.randbytes(16)
        peer.send(wire.PunchIntro(session, other.remote_id, (b,)))
        other.send(wire.PunchIntro(session, peer.remote_id, (a,)))
        self.introductions += 1

    def _on_intro(self, swarm, peer, frame: wire.PunchIntro) -> None:
        now = time.monotonic()
        key = (swarm.dkey, frame.node_id)
        if frame.node_id == self.node.identity.public or frame.node_id == peer.remote_id \
                or key in self.attempts or self.connected(swarm, frame.node_id) \
                or swarm.dkey not in self.node.swarms or self.node.socket is None:
            return
        if len(self.attempts) >= MAX_ATTEMPTS or sum(
                1 for a in self.attempts.values() if a.introducer is peer) >= ATTEMPTS_PER_PEER:
            return
        bucket = peer.app.get("pex_intros")
        if bucket is None:
            bucket = peer.app["pex_intros"] = TokenBucket(INTRO_RATE, ATTEMPTS_PER_PEER, now)
        ipv6 = ":" in self.node.socket.local_address[0]
        candidates = list(dict.fromkeys(a for a in frame.addrs if usable(a, ipv6)))
        if not candidates or not bucket.take(now):
            return
        for h, p in candidates:
            self.emit(PeerFound(swarm.tid, f"{h}:{p}", "pex"))
        self.punches += 1
        self.attempts[key] = _Attempt(self, swarm, peer, frame, candidates)
