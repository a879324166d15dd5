"""A sans-IO Mainline DHT node (BEP 5): the KRPC state machine, with the
clock and randomness injected and no sockets.

Feed it what arrives with `receive(data, addr, now)`, call `handle_timer(now)`
when `next_timer()` is due, and send what `datagrams_to_send(now)` returns.
Both `receive` and `handle_timer` return the events that happened
(`PeersFound`, `LookupDone`). API calls: `bootstrap`, `lookup`, `announce`,
`cancel`, `export`, `import_`.

What it does:

* iterative lookups (get_peers or find_node): alpha = 3 queries in flight,
  done when the k = 8 closest nodes that did not fail have all answered;
  each query times out after 2 s; a lookup stops after 128 queries or 30 s;
* `announce` = a get_peers lookup, then announce_peer with each token to the
  k closest nodes that gave one (implied_port=1 by default, so the stored
  address is the NAT mapping of the very socket the DHT uses);
* serving ping, find_node, get_peers (values and/or nodes, always a token) and
  announce_peer (token checked). Tokens are 8 bytes of
  BLAKE2b(secret + IPv4 address); the secret rotates every 5 minutes and the
  previous one is still accepted;
* a peer store: at most 128 peers per info-hash, 1,000 info-hashes and 8,192
  peers in all; entries expire 30 minutes after their last announce;
* polite rate limits: outgoing queries wait for a global token bucket
  (20/s, bursts of 40); incoming requests beyond 10/s per IP (bursts of 40)
  or 500/s in all are dropped unanswered;
* a node that queries us is pinged before it may enter the routing table;
  addresses learned from other nodes (nodes, values) must be at least as
  wide in scope as the node that sent them (`krpc.may_learn`).

Hostile input never raises: malformed datagrams are counted in `stats` and
dropped; every table is bounded.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import random
from dataclasses import dataclass

from . import krpc
from .krpc import ID_LEN, Address, KrpcError, info_hash_for
from .routing import K, RoutingTable

__all__ = [
    "DhtNode", "PeersFound", "LookupDone", "TooManyLookups", "info_hash_for",
    "ALPHA", "K", "QUERY_TIMEOUT", "TOKEN_ROTATE", "PEER_TTL",
]

log = logging.getLogger(__name__)

ALPHA = 3
QUERY_TIMEOUT = 2.0
LOOKUP_MAX_QUERIES = 128
LOOKUP_MAX_TIME = 30.0
MAX_CANDIDATES = 100         # per lookup: the farthest unqueried ones are dropped
NODES_PER_RESPONSE = 16      # compact nodes read from one answer
VALUES_PER_RESPONSE = 200    # peers read from one answer
MAX_PEERS_PER_LOOKUP = 1000
MAX_LOOKUPS = 64             # user lookups at once
MAX_TXNS = 512               # queries queued or in flight
MAX_VERIFY = 64              # pings in flight to nodes that queried us
MAX_OUT = 1024               # answers waiting to be sent
MAX_TOKEN = 64

TOKEN_ROTATE = 300.0
TOKEN_LEN = 8
PEER_TTL = 30 * 60.0
MAX_PEERS_PER_HASH = 128
MAX_HASHES = 1000
MAX_PEERS_TOTAL = 8192
MAX_VALUES = 50              # peers in one get_peers answer
SWEEP_EVERY = 60.0

REFRESH_CHECK = 60.0
REFRESH_AGE = 15 * 60.0
BOOTSTRAP_RETRY = 60.0       # with fewer than k nodes: retry after 5, 10, 20, 40, 60, 60... s
BOOTSTRAP_FIRST_RETRY = 5.0
MAX_ROUTERS = 32
MAX_VOTES = 32

QUERY_RATE, QUERY_BURST = 20.0, 40.0
REQUEST_RATE, REQUEST_BURST = 10.0, 40.0
TOTAL_REQUEST_RATE, TOTAL_REQUEST_BURST = 500.0, 1000.0
MAX_RATE_IPS = 1024

_NEW, _INFLIGHT, _RESPONDED, _FAILED = 0, 1, 2, 3
_SEARCH, _ANNOUNCE, _DONE = 0, 1, 2
_FAR = 1 << 161


class TooManyLookups(Exception):
    """`lookup`/`announce` while MAX_LOOKUPS lookups are already running."""


@dataclass(frozen=True)
class PeersFound:
    """Peers for `info_hash` that one node returned during lookup `lookup_id`
    (only ones this lookup had not reported yet)."""

    info_hash: bytes
    peers: tuple[Address, ...]
    lookup_id: int


@dataclass(frozen=True)
class LookupDone:
    """Lookup `lookup_id` ended: `peers` distinct peers found, `responded`
    nodes answered, `announced` nodes accepted our announce_peer (always 0
    for a plain lookup)."""

    info_hash: bytes
    lookup_id: int
    peers: int
    responded: int
    announced: int


Event = PeersFound | LookupDone


class _Rate:
    """Token bucket: `rate` per second, at most `burst` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> bool:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0 - 1e-9:  # tolerance: ready_at() must really be ready
            self.tokens -= 1.0
            return True
        return False

    def ready_at(self) -> float:
        return self.stamp if self.tokens >= 1.0 else self.stamp + (1.0 - self.tokens) / self.rate


class _Txn:
    __slots__ = ("tid", "addr", "node_id", "method", "payload", "purpose", "lookup", "deadline")

    def __init__(self, tid, addr, node_id, method, payload, purpose, lookup) -> None:
        self.tid = tid
        self.addr = addr
        self.node_id = node_id        # whom we expect to answer (None: a router)
        self.method = method
        self.payload = payload        # dropped once sent
        self.purpose = purpose        # "lookup", "announce", "verify", "evict"
        self.lookup = lookup          # lookup id or None
        self.deadline: float | None = None  # None while waiting for the rate limit


class _Cand:
    __slots__ = ("id", "addr", "dist", "state", "token")

    def __init__(self, node_id: bytes | None, addr: Address, target: int) -> None:
        self.id = node_id
        self.addr = addr
        self.dist = _FAR if node_id is None else int.from_bytes(node_id, "big") ^ target
        self.state = _NEW
        self.token: bytes | None = None


class _Lookup:
    __slots__ = ("id", "target", "tint", "method", "announce", "port", "implied", "user",
                 "cands", "ids", "peers", "inflight", "queries", "responded", "deadline",
                 "phase", "pending", "announced")

    def __init__(self, lid: int, target: bytes, method: bytes, *, announce: bool, port: int,
                 implied: bool, user: bool, deadline: float) -> None:
        self.id = lid
        self.target = target
        self.tint = int.from_bytes(target, "big")
        self.method = method
        self.announce = announce
        self.port = port
        self.implied = implied
        self.user = user
        self.cands: dict[Address, _Cand] = {}
        self.ids: set[bytes] = set()
        self.peers: set[Address] = set()
        self.inflight = 0
        self.queries = 0
        self.responded = 0
        self.deadline = deadline
        self.phase = _SEARCH
        self.pending = 0
        self.announced = 0

    def add(self, node_id: bytes | None, addr: Address) -> None:
        if addr in self.cands or (node_id is not None and node_id in self.ids):
            return
        self.cands[addr] = _Cand(node_id, addr, self.tint)
        if node_id is not None:
            self.ids.add(node_id)


def _norm_addr(addr) -> Address | None:
    """(dotted-quad, port) for an IPv4 (or v4-mapped) source address, else None."""
    try:
        ip, port = addr[0], addr[1]
        if not isinstance(ip, str) or not isinstance(port, int) or not 0 < port < 65536:
            return None
        if ip.startswith("::ffff:"):
            ip = ip[7:]
        if krpc.pack_address(ip) is None:
            return None
        return ip, port
    except (TypeError, IndexError):
        return None


class DhtNode:
    """One DHT node with id `node_id` (20 bytes). `rng` provides transaction
    ids, token secrets and random refresh targets (use `random.SystemRandom()`
    outside tests); `now` is the current time in seconds."""

    def __init__(
        self,
        node_id: bytes,
        *,
        rng: random.Random,
        now: float,
        query_rate: float = QUERY_RATE,
        query_burst: float = QUERY_BURST,
        request_rate: float = REQUEST_RATE,
        request_burst: float = REQUEST_BURST,
        total_request_rate: float = TOTAL_REQUEST_RATE,
        total_request_burst: float = TOTAL_REQUEST_BURST,
    ) -> None:
        if not isinstance(node_id, (bytes, bytearray)) or len(node_id) != ID_LEN:
            raise ValueError("a node id is 20 bytes")
        self.node_id = bytes(node_id)
        self._rng = rng
        self._now = now
        self.routing = RoutingTable(self.node_id, now)
        self._secret = rng.randbytes(16)
        self._prev_secret = rng.randbytes(16)
        self._next_rotate = now + TOKEN_ROTATE
        self._peers: dict[bytes, dict[Address, float]] = {}
        self._peer_total = 0
        self._next_sweep = now + SWEEP_EVERY
        self._txns: dict[bytes, _Txn] = {}
        self._queue: collections.deque[_Txn] = collections.deque()
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[Event] = []
        self._lookups: dict[int, _Lookup] = {}
        self._next_lookup_id = 1
        self._routers: list[Address] = []
        self._next_bootstrap: float | None = None
        self._bootstrap_delay = BOOTSTRAP_FIRST_RETRY
        self._next_refresh = now + REFRESH_CHECK
        self._verifying: set[bytes] = set()
        self._query_rate = _Rate(query_rate, query_burst, now)
        self._request_rate = (request_rate, request_burst)
        self._total_rate = _Rate(total_request_rate, total_request_burst, now)
        self._ip_rates: collections.OrderedDict[str, _Rate] = collections.OrderedDict()
        self._votes: collections.OrderedDict[str, Address] = collections.OrderedDict()
        self.stats: collections.Counter[str] = collections.Counter()

    # -- API -----------------------------------------------------------------------

    def bootstrap(self, addrs: list[Address], *, now: float | None = None) -> None:
        """Use `addrs` (routers or known nodes, ids unknown) to join: a
        find_node lookup for our own id starts now, and again every minute
        while the routing table holds fewer than k nodes."""
        now = self._now if now is None else now
        for a in addrs:
            a = _norm_addr(a)
            if a is not None and a not in self._routers and len(self._routers) < MAX_ROUTERS:
                self._routers.append(a)
        self._start_bootstrap(now)

    def lookup(self, info_hash: bytes, *, now: float | None = None) -> int:
        """Start a get_peers lookup; returns its id. Reports `PeersFound`
        events as peers arrive and one `LookupDone` at the end."""
        return self._user_lookup(info_hash, now, announce=False, port=0, implied=True)

    def announce(self, info_hash: bytes, port: int = 0, implied_port: bool = True,
                 *, now: float | None = None) -> int:
        """A get_peers lookup, then announce_peer to the k closest nodes. With
        `implied_port` the nodes store the source port they see (our NAT
        mapping) and `port` is only informative; without it `port` (1..65535)
        is stored. Returns the lookup id; events as for `lookup`, with
        `LookupDone.announced` counting the nodes that accepted."""
        if not isinstance(port, int) or not 0 <= port <= 65535 or (port == 0 and not implied_port):
            raise ValueError("port must be 1..65535 (0 only with implied_port)")
        return self._user_lookup(info_hash, now, announce=True, port=port, implied=implied_port)

    def cancel(self, lookup_id: int) -> None:
        """Forget a lookup: no more events for it."""
        self._lookups.pop(lookup_id, None)

    def export(self) -> list[tuple[bytes, str, int]]:
        """(node_id, ip, port) of the good nodes in the routing table."""
        return self.routing.export(self._now)

    def import_(self, rows, *, now: float | None = None) -> None:
        """Nodes saved by `export` in an earlier run: they are asked for
        nodes near our id (as in `bootstrap`) and enter the routing table
        when they answer."""
        now = self._now if now is None else now
        cands = self.routing.import_candidates(rows)[:200]
        if not cands:
            return
        lk = self._new_lookup(self.node_id, b"find_node", announce=False, port=0,
                              implied=True, user=False, now=now)
        for node_id, addr in cands:
            lk.add(node_id, addr)
        self._lookup_step(lk, now)

    def external_address(self) -> Address | None:
        """Our address as most responders saw it (BEP 42 'ip'), or None."""
        if not self._votes:
            return None
        return collections.Counter(self._votes.values()).most_common(1)[0][0]

    def peer_count(self) -> int:
        return self._peer_total

    def table_sizes(self) -> dict[str, int]:
        """Sizes of every internal table (for tests: all of them are bounded)."""
        return {
            "routing": len(self.routing),
            "buckets": len(self.routing.buckets),
            "replacements": sum(len(b.replacements) for b in self.routing.buckets),
            "peers": self._peer_total,
            "hashes": len(self._peers),
            "txns": len(self._txns),
            "queue": len(self._queue),
            "out": len(self._out),
            "lookups": len(self._lookups),
            "verifying": len(self._verifying),
            "ip_rates": len(self._ip_rates),
            "votes": len(self._votes),
        }

    # -- driving -------------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float) -> list[Event]:
        """One datagram from `addr`. Never raises."""
        self._now = now
        src = _norm_addr(addr)
        try:
            msg = krpc.parse(data) if src is not None else None
        except KrpcError:
            self.stats["malformed"] += 1
            msg = None
        except Exception:  # pragma: no cover - parse raises only KrpcError
            self.stats["internal_errors"] += 1
            msg = None
        if msg is not None:
            try:
                if isinstance(msg, krpc.Query):
                    self._on_query(msg, src, now)
                elif isinstance(msg, krpc.Response):
                    self._on_response(msg, src, now)
                else:
                    self._on_error(msg, src, now)
            except Exception:  # a bug here must not let one datagram kill the node
                self.stats["internal_errors"] += 1
                log.exception("DHT datagram from %s failed", src)
        return self._take_events()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Answers, then queries as far as the outgoing rate limit allows."""
        self._now = now
        out, self._out = self._out, []
        while self._queue and self._query_rate.take(now):
            txn = self._queue.popleft()
            if self._txns.get(txn.tid) is not txn:
                continue
            txn.deadline = now + QUERY_TIMEOUT
            out.append((txn.payload, txn.addr))
            txn.payload = b""
            self.stats["queries_sent"] += 1
        return out

    def next_timer(self) -> float | None:
        """When `handle_timer` (or `datagrams_to_send`) next has work."""
        if self._events or self._out:
            return self._now
        times = [self._next_rotate, self._next_sweep, self._next_refresh]
        if self._next_bootstrap is not None:
            times.append(self._next_bootstrap)
        if self._queue:
            times.append(self._query_rate.ready_at())
        for txn in self._txns.values():
            if txn.deadline is not None:
                times.append(txn.deadline)
        for lk in self._lookups.values():
            times.append(lk.deadline)
        return min(times)

    def handle_timer(self, now: float) -> list[Event]:
        self._now = now
        try:
            self._timers(now)
        except Exception:
            self.stats["internal_errors"] += 1
            log.exception("DHT timer failed")
        return self._take_events()

    # -- timers --------------------------------------------------------------------

    def _timers(self, now: float) -> None:
        expired = [t for t in self._txns.values() if t.deadline is not None and t.deadline <= now]
        for txn in expired:
            del self._txns[txn.tid]
            self.stats["timeouts"] += 1
            if txn.node_id is not None:
                for nd in self.routing.failed(txn.node_id, txn.addr, now):
                    self._query(nd.addr, nd.id, b"ping", {}, "evict")
            self._complete(txn, None, now)
        for _ in range(2):  # two rotations invalidate every token; more change nothing
            if now < self._next_rotate:
                break
            self._prev_secret, self._secret = self._secret, self._rng.randbytes(16)
            self._next_rotate += TOKEN_ROTATE
        if now >= self._next_rotate:
            self._next_rotate = now + TOKEN_ROTATE
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            self._sweep(now)
        for lk in [lk for lk in self._lookups.values() if lk.deadline <= now]:
            if lk.phase == _SEARCH:
                self._finish_search(lk, now)
            else:
                self._done(lk)
        if self._next_bootstrap is not None and now >= self._next_bootstrap:
            if self.routing.live_count() < K:
                self._start_bootstrap(now)
            else:
                self._bootstrap_delay = BOOTSTRAP_FIRST_RETRY
                self._next_bootstrap = now + BOOTSTRAP_RETRY
        if now >= self._next_refresh:
            self._next_refresh = now + REFRESH_CHECK
            self._refresh(now)

    def _refresh(self, now: float) -> None:
        if not len(self.routing) or any(not lk.user for lk in self._lookups.values()):
            return
        stale = self.routing.stale_buckets(now, REFRESH_AGE)
        if stale:
            b = min(stale, key=lambda b: b.last_changed)
            b.last_changed = now
            target = self.routing.random_id_in(b, self._rng)
            lk = self._new_lookup(target, b"find_node", announce=False, port=0, implied=True,
                                  user=False, now=now)
            self._seed(lk, now)
            self._lookup_step(lk, now)

    def _start_bootstrap(self, now: float) -> None:
        self._next_bootstrap = now + self._bootstrap_delay
        self._bootstrap_delay = min(BOOTSTRAP_RETRY, 2 * self._bootstrap_delay)
        if any(not lk.user and lk.target == self.node_id for lk in self._lookups.values()):
            return
        lk = self._new_lookup(self.node_id, b"find_node", announce=False, port=0, implied=True,
                              user=False, now=now)
        self._seed(lk, now)
        self._lookup_step(lk, now)

    # -- lookups -------------------------------------------------------------------

    def _user_lookup(self, info_hash: bytes, now: float | None, *, announce: bool, port: int,
                     implied: bool) -> int:
        if not isinstance(info_hash, (bytes, bytearray)) or len(info_hash) != ID_LEN:
            raise ValueError("an info-hash is 20 bytes")
        if sum(1 for lk in self._lookups.values() if lk.user) >= MAX_LOOKUPS:
            raise TooManyLookups(f"{MAX_LOOKUPS} DHT lookups are already running")
        now = self._now if now is None else now
        lk = self._new_lookup(bytes(info_hash), b"get_peers", announce=announce, port=port,
                              implied=implied, user=True, now=now)
        self._seed(lk, now)
        self._lookup_step(lk, now)
        return lk.id

    def _new_lookup(self, target: bytes, method: bytes, *, announce: bool, port: int,
                    implied: bool, user: bool, now: float) -> _Lookup:
        lid = self._next_lookup_id
        self._next_lookup_id += 1
        lk = _Lookup(lid, target, method, announce=announce, port=port, implied=implied,
                     user=user, deadline=now + LOOKUP_MAX_TIME)
        self._lookups[lid] = lk
        return lk

    def _seed(self, lk: _Lookup, now: float) -> None:
        for nd in self.routing.closest(lk.target, 2 * K, now):
            lk.add(nd.id, nd.addr)
        if self.routing.live_count() < K:
            for addr in self._routers:
                lk.add(None, addr)

    def _lookup_step(self, lk: _Lookup, now: float) -> None:
        if lk.phase != _SEARCH:
            return
        live = sorted((c for c in lk.cands.values() if c.state != _FAILED), key=lambda c: c.dist)
        top = live[:K]
        if lk.queries < LOOKUP_MAX_QUERIES:
            for c in top:
                if lk.inflight >= ALPHA:
                    break
                if c.state == _NEW:
                    args = {b"info_hash" if lk.method == b"get_peers" else b"target": lk.target}
                    if self._query(c.addr, c.id, lk.method, args, "lookup", lk.id):
                        c.state = _INFLIGHT
                        lk.inflight += 1
                        lk.queries += 1
                    else:
                        c.state = _FAILED
        if lk.inflight == 0 or all(c.state == _RESPONDED for c in top):
            self._finish_search(lk, now)

    def _finish_search(self, lk: _Lookup, now: float) -> None:
        if lk.phase != _SEARCH:
            return
        lk.phase = _ANNOUNCE
        if lk.announce:
            done = sorted((c for c in lk.cands.values() if c.state == _RESPONDED and c.token),
                          key=lambda c: c.dist)[:K]
            for c in done:
                args = {b"info_hash": lk.target, b"port": lk.port, b"token": c.token}
                if lk.implied:
                    args[b"implied_port"] = 1
                if self._query(c.addr, c.id, b"announce_peer", args, "announce", lk.id):
                    lk.pending += 1
            lk.deadline = now + 2 * QUERY_TIMEOUT + 1.0  # announce answers are awaited briefly
        if lk.pending == 0:
            self._done(lk)

    def _done(self, lk: _Lookup) -> None:
        if self._lookups.pop(lk.id, None) is None:
            return
        lk.phase = _DONE
        if lk.user:
            self._events.append(LookupDone(lk.target, lk.id, len(lk.peers), lk.responded, lk.announced))

    def _lookup_answer(self, lk: _Lookup, txn: _Txn, resp: krpc.Response | None, now: float) -> None:
        c = lk.cands.get(txn.addr)
        if c is None or c.state != _INFLIGHT:
            return
        lk.inflight -= 1
        if resp is None:
            c.state = _FAILED
            self._lookup_step(lk, now)
            return
        c.state = _RESPONDED
        lk.responded += 1
        if c.id != resp.sender_id:
            c.id = resp.sender_id
            c.dist = int.from_bytes(c.id, "big") ^ lk.tint
            lk.ids.add(c.id)
        r = resp.values
        token = r.get(b"token")
        if isinstance(token, bytes) and 0 < len(token) <= MAX_TOKEN:
            c.token = token
        src_ip = txn.addr[0]
        values = r.get(b"values")
        if lk.method == b"get_peers" and isinstance(values, list):
            fresh = []
            for v in values[:VALUES_PER_RESPONSE]:
                if isinstance(v, bytes) and len(v) == krpc.PEER_LEN:
                    peer = krpc.unpack_peer(v)
                    if (peer not in lk.peers and len(lk.peers) < MAX_PEERS_PER_LOOKUP
                            and krpc.may_learn(peer, src_ip)):
                        lk.peers.add(peer)
                        fresh.append(peer)
            if fresh and lk.user:
                self._events.append(PeersFound(lk.target, tuple(fresh), lk.id))
        for node_id, addr in krpc.unpack_nodes(r.get(b"nodes"), NODES_PER_RESPONSE):
            if node_id != self.node_id and krpc.may_learn(addr, src_ip):
                lk.add(node_id, addr)
        if len(lk.cands) > MAX_CANDIDATES:
            spare = sorted((c for c in lk.cands.values() if c.state == _NEW), key=lambda c: -c.dist)
            for c in spare[:len(lk.cands) - MAX_CANDIDATES]:
                del lk.cands[c.addr]
                lk.ids.discard(c.id)
        self._lookup_step(lk, now)

    # -- queries out -----------------------------------------------------------------

    def _query(self, addr: Address, node_id: bytes | None, method: bytes, args: dict,
               purpose: str, lookup: int | None = None) -> bool:
        if len(self._txns) >= MAX_TXNS:
            self.stats["queries_dropped"] += 1
            return False
        for _ in range(8):
            tid = self._rng.randbytes(4)
            if tid not in self._txns:
                break
        else:  # pragma: no cover - 512 of 2**32 ids in use
            return False
        args = dict(args)
        args[b"id"] = self.node_id
        txn = _Txn(tid, addr, node_id, method, krpc.query(tid, method, args), purpose, lookup)
        self._txns[tid] = txn
        self._queue.append(txn)
        return True

    def _complete(self, txn: _Txn, resp: krpc.Response | None, now: float) -> None:
        """A query ended: answered (`resp`), or timed out / answered with an
        error (None)."""
        if txn.purpose == "verify":
            self._verifying.discard(txn.node_id)
            return
        if txn.lookup is None:
            return
        lk = self._lookups.get(txn.lookup)
        if lk is None:
            return
        if txn.purpose == "lookup":
            self._lookup_answer(lk, txn, resp, now)
        elif txn.purpose == "announce" and lk.phase == _ANNOUNCE:
            lk.pending -= 1
            if resp is not None:
                lk.announced += 1
            if lk.pending <= 0:
                self._done(lk)

    # -- messages in ------------------------------------------------------------------

    def _on_response(self, resp: krpc.Response, src: Address, now: float) -> None:
        txn = self._txns.get(resp.tid)
        if txn is None or txn.deadline is None or txn.addr != src:
            self.stats["unexpected"] += 1
            return
        del self._txns[resp.tid]
        self.stats["responses"] += 1
        if resp.sender_id == self.node_id:
            self._complete(txn, None, now)  # ourselves, through some loop
            return
        for nd in self.routing.heard_response(resp.sender_id, src, now):
            self._query(nd.addr, nd.id, b"ping", {}, "evict")
        if resp.ip is not None:
            self._votes[src[0]] = resp.ip
            self._votes.move_to_end(src[0])
            while len(self._votes) > MAX_VOTES:
                self._votes.popitem(last=False)
        self._complete(txn, resp, now)

    def _on_error(self, err: krpc.Error, src: Address, now: float) -> None:
        txn = self._txns.get(err.tid)
        if txn is None or txn.deadline is None or txn.addr != src:
            self.stats["unexpected"] += 1
            return
        del self._txns[err.tid]
        self.stats["errors_received"] += 1
        self._complete(txn, None, now)

    def _on_query(self, q: krpc.Query, src: Address, now: float) -> None:
        if q.sender_id == self.node_id:
            return
        if not self._allow_request(src[0], now):
            self.stats["rate_limited"] += 1
            return
        self.stats["requests"] += 1
        a = q.args
        if q.method == b"ping":
            self._answer(q, src, {})
        elif q.method == b"find_node":
            target = a.get(b"target")
            if not isinstance(target, bytes) or len(target) != ID_LEN:
                return self._error(q, src, krpc.ERR_PROTOCOL, b"bad target")
            self._answer(q, src, {b"nodes": self._nodes_near(target, now)})
        elif q.method == b"get_peers":
            ih = a.get(b"info_hash")
            if not isinstance(ih, bytes) or len(ih) != ID_LEN:
                return self._error(q, src, krpc.ERR_PROTOCOL, b"bad info_hash")
            r = {b"token": self._token(src[0], self._secret), b"nodes": self._nodes_near(ih, now)}
            values = self._values(ih, now)
            if values:
                r[b"values"] = values
            self._answer(q, src, r)
        elif q.method == b"announce_peer":
            ih, token, port = a.get(b"info_hash"), a.get(b"token"), a.get(b"port")
            implied = a.get(b"implied_port")
            if not isinstance(ih, bytes) or len(ih) != ID_LEN or not isinstance(token, bytes):
                return self._error(q, src, krpc.ERR_PROTOCOL, b"bad announce_peer")
            if isinstance(implied, int) and implied != 0:
                port = src[1]
            if not isinstance(port, int) or not 0 < port < 65536:
                return self._error(q, src, krpc.ERR_PROTOCOL, b"bad port")
            if not self._token_ok(token, src[0]):
                self.stats["bad_tokens"] += 1
                return self._error(q, src, krpc.ERR_PROTOCOL, b"bad token")
            self._store_peer(ih, (src[0], port), now)
            self._answer(q, src, {})
        else:
            return self._error(q, src, krpc.ERR_METHOD, b"method unknown")
        if not q.read_only and not self.routing.heard_query(q.sender_id, src, now):
            self._maybe_verify(q.sender_id, src, now)

    def _maybe_verify(self, node_id: bytes, addr: Address, now: float) -> None:
        if (node_id in self._verifying or len(self._verifying) >= MAX_VERIFY
                or not self.routing.wants(node_id, addr, now)):
            return
        if self._query(addr, node_id, b"ping", {}, "verify"):
            self._verifying.add(node_id)

    def _allow_request(self, ip: str, now: float) -> bool:
        r = self._ip_rates.get(ip)
        if r is None:
            r = self._ip_rates[ip] = _Rate(*self._request_rate, now)
            while len(self._ip_rates) > MAX_RATE_IPS:
                self._ip_rates.popitem(last=False)
        else:
            self._ip_rates.move_to_end(ip)
        return r.take(now) and self._total_rate.take(now)

    def _answer(self, q: krpc.Query, src: Address, values: dict) -> None:
        values[b"id"] = self.node_id
        self._push(krpc.response(q.tid, values, ip=src), src)

    def _error(self, q: krpc.Query, src: Address, code: int, text: bytes) -> None:
        self._push(krpc.error(q.tid, code, text), src)

    def _push(self, payload: bytes, dst: Address) -> None:
        if len(self._out) < MAX_OUT:
            self._out.append((payload, dst))
        else:
            self.stats["answers_dropped"] += 1

    def _nodes_near(self, target: bytes, now: float) -> bytes:
        return krpc.pack_nodes((nd.id, nd.addr) for nd in self.routing.closest(target, K, now))

    # -- tokens and the peer store ------------------------------------------------------

    @staticmethod
    def _token(ip: str, secret: bytes) -> bytes:
        packed = krpc.pack_address(ip) or b""
        return hashlib.blake2b(secret + packed, digest_size=32).digest()[:TOKEN_LEN]

    def _token_ok(self, token: bytes, ip: str) -> bool:
        return token in (self._token(ip, self._secret), self._token(ip, self._prev_secret))

    def _store_peer(self, info_hash: bytes, peer: Address, now: float) -> None:
        peers = self._peers.get(info_hash)
        if peers is None:
            if len(self._peers) >= MAX_HASHES or self._peer_total >= MAX_PEERS_TOTAL:
                self._sweep(now)
                if len(self._peers) >= MAX_HASHES or self._peer_total >= MAX_PEERS_TOTAL:
                    self.stats["store_full"] += 1
                    return
            peers = self._peers[info_hash] = {}
        if peer in peers:
            del peers[peer]          # re-inserted below: newest last
        elif len(peers) >= MAX_PEERS_PER_HASH:
            del peers[next(iter(peers))]
        elif self._peer_total >= MAX_PEERS_TOTAL:
            self.stats["store_full"] += 1
            if not peers:
                del self._peers[info_hash]
            return
        else:
            self._peer_total += 1
        peers[peer] = now + PEER_TTL

    def _values(self, info_hash: bytes, now: float) -> list[bytes]:
        peers = self._peers.get(info_hash)
        if not peers:
            return []
        live = [p for p, expires in peers.items() if expires > now]
        if len(live) > MAX_VALUES:
            live = self._rng.sample(live, MAX_VALUES)
        return [v for v in (krpc.pack_peer(p) for p in live) if v is not None]

    def _sweep(self, now: float) -> None:
        for ih in list(self._peers):
            peers = self._peers[ih]
            for p in [p for p, expires in peers.items() if expires <= now]:
                del peers[p]
                self._peer_total -= 1
            if not peers:
                del self._peers[ih]

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events
