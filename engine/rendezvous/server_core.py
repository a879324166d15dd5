"""The rendezvous server's state machine, sans-IO.

`RendezvousServerCore.receive(data, addr, now, transport, via)` takes one UDP
datagram (that arrived on the server socket `via`) or one TCP frame and
returns what to send (`Send(data, addr, transport, via)`); `handle_timer(now)` (about once a second) expires
registrations and relay allocations; `connection_lost(addr, now)` forgets a
closed TCP connection. The clock (`now`, seconds) and randomness (`rng`) come
from outside, so tests drive it with a fake clock.

One socket answers two protocols: STUN Binding requests (RFC 5389, also
classic RFC 3489 ones, see `engine.stun.answer`) and the rendezvous messages
of `protocol`. Anything else is dropped without a word.

NAT behaviour discovery (RFC 5780): the server may have up to three more UDP
sockets, keyed like the primary one, (0, 0), by (IP index, port index): an
alternate port (0, 1) on the same IP, and with a second IP address (1, 0) and
(1, 1). They answer STUN only. A Binding request with CHANGE-REQUEST is
answered from the socket that differs in IP and/or port from the one it came
in on (`Send.via`); OTHER-ADDRESS (the socket differing in both) is reported
only when the server has a second IP address, as RFC 5780 asks. A
CHANGE-REQUEST the server cannot honour gets a 420 error.

Abuse resistance, all bounded by `ServerLimits`:

- Request rate per source IP (IPv6: per /64): a token bucket charged for
  every datagram, STUN and garbage included, before any parsing. Relayed
  data that matches an allocation is charged to that allocation's own
  bytes-per-second bucket instead.
- Registrations: per IP, per discovery key and in all; nodes in all.
  When a cap is reached new requests are refused (ERROR LIMIT); nothing that
  is already registered is evicted, so a flood cannot push others out.
- Relay allocations: per IP and in all, each with an idle timeout and a
  deadline for the peer to bind. Bandwidth is the operator's choice
  (`relay_rate` in all, `relay_rate_per_allocation`; 0: no limit), shared
  fairly among the allocations that move data (see `_reshare`); an
  allocation may also be given a maximum duration (`relay_max_duration`,
  0: none, it lives as long as data flows).
- Punch pushes to one node are rate-limited (CONNECT cannot make a node spray).
- Anti-amplification: no reply to an unverified UDP source is larger than
  the request (see `protocol`): state-changing requests need a cookie, the
  stateless `_cookie` (timestamp + truncated HMAC-SHA256 of the source
  address and timestamp under a per-process secret). As a last guard every
  reply to an unverified source is checked against the request's length.
  The one exception is STUN, whose standard clients send 20-byte requests
  that no valid answer fits: they get the mandatory mapped address only
  (32 bytes for IPv4, 44 for IPv6, at most 24 bytes over the request) unless
  `stun_strict` is set; dattui's own STUN requests are padded
  (`stun.RESPONSE_PAD`) so they are never answered with more. OTHER-ADDRESS,
  without which RFC 5780 clients cannot test filtering, may take the room up
  to those 44 bytes (an IPv4 answer to a 20-byte request: 32 + 12). An
  answer to a CHANGE-REQUEST follows the very same rules as a plain one (it
  goes to the same source, only from another socket): never larger.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import random
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from .. import stun
from . import protocol as p
from ..ratelimit import TokenBucket

__all__ = ["Send", "ServerLimits", "RendezvousServerCore", "Endpoint", "SocketKey", "PRIMARY"]

Address = tuple[str, int]
Endpoint = tuple[str, Address]  # (transport, address): ("udp", (ip, port)) or ("tcp", peername)


SocketKey = tuple[int, int]   # (IP index, port index) of a server UDP socket
PRIMARY: SocketKey = (0, 0)


class Send(NamedTuple):
    """One message to send: over UDP to `addr` (from the server socket `via`,
    None: the primary one), or as a frame on the TCP connection whose peer
    address is `addr`."""

    data: bytes
    addr: Address
    transport: str = "udp"
    via: SocketKey | None = None


@dataclass(frozen=True)
class ServerLimits:
    registration_ttl: float = 120.0       # s; REGISTER and KEEPALIVE refresh it
    max_nodes: int = 50_000
    max_registrations: int = 100_000      # (discovery key, node) pairs in all
    max_registrations_per_ip: int = 64
    max_registrations_per_key: int = 1024
    max_peers_per_reply: int = 16
    max_reply_size: int = 1200            # bytes of one PEERS datagram
    request_rate: float = 20.0            # datagrams/s per source IP (/64 for IPv6)
    request_burst: float = 60.0
    max_tracked_ips: int = 65_536         # rate buckets kept (least recently used go)
    punch_delay_ms: int = 200
    punch_rate: float = 10.0              # PUNCH pushes/s to one node (a share with many clones)
    punch_burst: float = 40.0
    cookie_lifetime: float = 300.0        # s
    # Relay bandwidth, bytes/s, both directions counted; 0: no limit. `relay_rate`
    # is the whole server's, shared fairly among the allocations that move data
    # (max-min: what one does not use, the others get); `relay_rate_per_allocation`
    # caps each one. A server an institution runs for its researchers carries
    # datasets: no limit but the link's by default.
    relay_rate: int = 0
    relay_rate_per_allocation: int = 0
    relay_burst: int = 256 * 1024         # bytes an allocation may send at once above its rate
    relay_max_duration: float = 0.0       # s from allocation; 0: none (it ends when idle)
    relay_idle: float = 60.0              # s without relayed data
    relay_bind_timeout: float = 30.0      # s for the peer to RELAY_BIND
    max_allocations: int = 1024
    max_allocations_per_ip: int = 64  # one share relaying to a lab of clones
    stun_software: str | None = "dattui rendezvous"
    stun_strict: bool = False             # True: answer STUN only within the request's size


RELAY_FLOOR = 8 * 1024          # bytes/s: the least demand assumed of a bound allocation
_UNBOUNDED = float("inf")


class _Node:
    __slots__ = ("nonce", "token", "ep", "ip", "candidates", "keys", "punch")

    def __init__(self, nonce, token, ep, ip, candidates, punch) -> None:
        self.nonce: bytes = nonce
        self.token: bytes = token
        self.ep: Endpoint = ep
        self.ip: str = ip
        self.candidates: tuple[Address, ...] = candidates
        self.keys: dict[bytes, None] = {}
        self.punch: TokenBucket = punch

    def peer(self) -> p.Peer:
        return p.Peer(self.token, self.ep[1], self.candidates, self.ep[0] == "tcp")


@dataclass
class _Allocation:
    channel: bytes
    key: bytes
    a: Endpoint
    txid: int
    ip: str
    created: float
    last: float
    bucket: TokenBucket | None            # None: no rate limit
    b: Endpoint | None = None
    bytes: int = 0
    share: float = 0.0                    # bytes/s granted by the last `_fill` (0: unlimited)
    demand: float = 0.0                   # bytes/s it wants, by the last `_measure`
    window_bytes: int = 0                 # forwarded since the last `_reshare`
    window_dropped: int = 0               # dropped over the rate since then


@dataclass
class Stats:
    datagrams: int = 0
    rate_limited: int = 0
    malformed: int = 0
    stun: int = 0
    stun_changed: int = 0                 # CHANGE-REQUESTs answered from another socket
    stun_over_request_bytes: int = 0
    alternate_dropped: int = 0            # non-STUN datagrams on an alternate socket
    cookies: int = 0
    amplification_blocked: int = 0
    relayed_bytes: int = 0
    relay_dropped: int = 0
    relay_dropped_bytes: int = 0
    allocations_made: int = 0
    allocations_expired: int = 0          # closed at relay_max_duration
    max_allocation_bytes: int = 0         # the most one closed allocation relayed
    refused: dict = field(default_factory=collections.Counter)


def ip_key(host: str) -> str:
    """The unit of per-client limits: an IPv4 address or an IPv6 /64."""
    if ":" not in host:
        return host
    try:
        ip = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


class RendezvousServerCore:
    """Registrations, lookups, punch coordination and relaying; see module doc.

    `local_address` (optional) is the UDP address the server is reachable at,
    reported to STUN clients as RESPONSE-ORIGIN. `alternates` are the other
    UDP sockets for RFC 5780 (see the module doc): key -> address (None when
    bound to a wildcard address, so not known).
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        limits: ServerLimits = ServerLimits(),
        local_address: Address | None = None,
        alternates: dict[SocketKey, Address | None] | None = None,
    ) -> None:
        self.limits = limits
        self.local_address = local_address
        self.sockets: dict[SocketKey, Address | None] = {PRIMARY: local_address}
        for key, addr in (alternates or {}).items():
            if key == PRIMARY or key[0] not in (0, 1) or key[1] not in (0, 1):
                raise ValueError(f"bad alternate socket key {key!r}")
            self.sockets[key] = addr
        self._rng = rng
        self._secret = rng.randbytes(32)
        self.stats = Stats()
        self._buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()
        self._nodes: dict[bytes, _Node] = {}          # nonce -> node
        self._tokens: dict[bytes, bytes] = {}         # token -> nonce
        self._by_key: dict[bytes, dict[bytes, None]] = {}   # key -> nonces
        self._by_ep: dict[Endpoint, dict[bytes, None]] = {}  # endpoint -> nonces
        self._regs: collections.OrderedDict[tuple[bytes, bytes], float] = collections.OrderedDict()
        self._reg_count: dict[str, int] = {}          # ip -> registrations
        self._allocs: dict[bytes, _Allocation] = {}   # channel -> allocation
        self._alloc_by_ep: dict[Endpoint, dict[bytes, None]] = {}
        self._alloc_count: dict[str, int] = {}        # ip -> allocations made
        self._measured = float("-inf")                # when demands were last measured

    # -- inspection ---------------------------------------------------------------

    @property
    def registrations(self) -> int:
        return len(self._regs)

    @property
    def nodes(self) -> int:
        return len(self._nodes)

    @property
    def allocations(self) -> int:
        return len(self._allocs)

    @property
    def tracked_ips(self) -> int:
        """Source IPs with a rate bucket (bounded by `max_tracked_ips`)."""
        return len(self._buckets)

    def peers_of(self, key: bytes) -> list[p.Peer]:
        return [self._nodes[n].peer() for n in self._by_key.get(key, {})]

    # -- input ---------------------------------------------------------------------

    @property
    def other_address(self) -> Address | None:
        """OTHER-ADDRESS as seen from the primary socket (None without a second IP)."""
        return self._other(PRIMARY)

    def _other(self, via: SocketKey) -> Address | None:
        key = (1 - via[0], 1 - via[1])
        addr = self.sockets.get(key)
        if addr is None or (1, 0) not in self.sockets or (0, 1) not in self.sockets:
            return None
        if self.sockets.get(via) is None:
            return None  # the socket itself has no known address: a wildcard bind
        return addr

    def receive(self, data: bytes, addr: Address, now: float, transport: str = "udp",
                via: SocketKey | None = None) -> list[Send]:
        """Handle one datagram (or TCP frame) from `addr`, that arrived on the
        server UDP socket `via` (None: the primary one); returns what to send."""
        if transport not in ("udp", "tcp"):
            raise ValueError("transport must be 'udp' or 'tcp'")
        if via == PRIMARY or transport == "tcp":
            via = None
        if via is not None and via not in self.sockets:
            raise ValueError(f"no server socket {via!r}")
        self.stats.datagrams += 1
        ep: Endpoint = (transport, (addr[0], addr[1]))
        data = bytes(data)
        if data[:5] == p.MAGIC + b"\x09" and via is None:
            out = self._relay(data, ep, now)
            if out is not None:
                return out
            # not a live allocation of this sender: treated like any request
        ip = ip_key(addr[0])
        bucket = self._buckets.get(ip)
        if bucket is None:
            bucket = self._buckets[ip] = TokenBucket(self.limits.request_rate, self.limits.request_burst, now)
            if len(self._buckets) > self.limits.max_tracked_ips:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(ip)
        if not bucket.take(now):
            self.stats.rate_limited += 1
            return []
        if via is not None:  # an alternate socket answers STUN only
            if stun.is_stun(data, classic=True):
                return self._stun(data, ep, via)
            self.stats.alternate_dropped += 1
            return []
        if data[:4] == p.MAGIC:
            return self._rendezvous(data, ep, ip, now)
        if stun.is_stun(data, classic=True):
            return self._stun(data, ep, PRIMARY)
        self.stats.malformed += 1
        return []

    def connection_lost(self, addr: Address, now: float) -> list[Send]:
        """A TCP connection closed: drop its registrations and relay sides."""
        ep: Endpoint = ("tcp", (addr[0], addr[1]))
        for nonce in list(self._by_ep.get(ep, {})):
            node = self._nodes[nonce]
            for key in list(node.keys):
                self._unregister(key, nonce)
        out: list[Send] = []
        for channel in list(self._alloc_by_ep.get(ep, {})):
            out += self._close(self._allocs[channel], p.CloseReason.BY_PEER, notify_not=ep)
        return out

    def handle_timer(self, now: float) -> list[Send]:
        """Expire registrations, allocations and idle rate buckets."""
        regs = self._regs
        while regs:
            (key, nonce), expires = next(iter(regs.items()))
            if expires > now:
                break
            self._unregister(key, nonce)
        lim = self.limits
        out: list[Send] = []
        for alloc in list(self._allocs.values()):
            if lim.relay_max_duration and now >= alloc.created + lim.relay_max_duration:
                self.stats.allocations_expired += 1
                out += self._close(alloc, p.CloseReason.EXPIRED)
            elif alloc.b is None and now >= alloc.created + lim.relay_bind_timeout:
                out += self._close(alloc, p.CloseReason.IDLE)
            elif alloc.b is not None and now >= alloc.last + lim.relay_idle:
                out += self._close(alloc, p.CloseReason.IDLE)
        self._reshare(now)
        buckets = self._buckets
        while buckets:
            ip, bucket = next(iter(buckets.items()))
            if not bucket.full(now):
                break
            del buckets[ip]
        return out

    def close(self, now: float) -> list[Send]:
        """Server shutdown: tell every relay side its allocation ended."""
        out: list[Send] = []
        for alloc in list(self._allocs.values()):
            out += self._close(alloc, p.CloseReason.SHUTDOWN)
        return out

    # -- STUN ----------------------------------------------------------------------

    def _stun(self, data: bytes, ep: Endpoint, via: SocketKey) -> list[Send]:
        self.stats.stun += 1
        verified = ep[0] == "tcp"
        def alternate(change_ip: bool, change_port: bool):
            key = (1 - via[0] if change_ip else via[0], 1 - via[1] if change_port else via[1])
            if key not in self.sockets:
                return None
            return key, self.sockets[key]

        a = stun.answer(data, ep[1], local=self.sockets.get(via) if not verified else None,
                        other=None if verified else self._other(via),
                        alternate=None if verified else alternate, software=self.limits.stun_software,
                        budget=None if verified else len(data), floor=stun.MIN_ANSWER)
        if a is None:
            return []
        reply = a.data
        if not verified and len(reply) > len(data):
            if self.limits.stun_strict:
                self.stats.amplification_blocked += 1
                return []
            self.stats.stun_over_request_bytes += len(reply) - len(data)
        out_via = via if a.via is None else a.via
        if a.via is not None:
            self.stats.stun_changed += 1
        return [Send(reply, ep[1], ep[0], None if out_via == PRIMARY or verified else out_via)]

    # -- cookies -------------------------------------------------------------------

    def _cookie(self, addr: Address, now: float) -> bytes:
        ts = struct.pack("!I", int(now) & 0xFFFFFFFF)
        mac = hmac.new(self._secret, ts + p.encode_address(addr), hashlib.sha256).digest()
        return ts + mac[:12]

    def _cookie_age(self, cookie: bytes, addr: Address, now: float) -> float | None:
        """Seconds since the cookie was issued to `addr`, or None if invalid."""
        if cookie == p.NO_COOKIE:
            return None
        ts = int.from_bytes(cookie[:4], "big")
        age = (int(now) & 0xFFFFFFFF) - ts
        if not 0 <= age <= self.limits.cookie_lifetime:
            return None
        mac = hmac.new(self._secret, cookie[:4] + p.encode_address(addr), hashlib.sha256).digest()
        return age if hmac.compare_digest(mac[:12], cookie[4:]) else None

    # -- rendezvous ------------------------------------------------------------------

    def _rendezvous(self, data: bytes, ep: Endpoint, ip: str, now: float) -> list[Send]:
        try:
            msg = p.decode(data)
        except p.RendezvousError:
            self.stats.malformed += 1
            return []
        if not isinstance(msg, p.REQUEST_TYPES):
            self.stats.malformed += 1  # replies, or relay data for no allocation
            return []
        transport, addr = ep
        if transport == "tcp":
            verified, age = True, 0.0
        else:
            age = self._cookie_age(msg.cookie, addr, now)
            verified = age is not None
        if not verified:
            replies: list[p.Message] = []
            if isinstance(msg, p.Lookup):
                replies = [self._lookup(msg, ep)]
            if not replies or len(replies[0].encode()) > len(data):
                self.stats.cookies += 1
                replies = [p.Cookie(msg.txid, self._cookie(addr, now))]
            out = []
            for reply in replies:
                raw = reply.encode()
                if len(raw) <= len(data):
                    out.append(Send(raw, addr, transport))
                else:  # cannot happen (a Cookie is 25 bytes); the last guard
                    self.stats.amplification_blocked += 1
            return out
        handler = self._handlers[type(msg)]
        out = handler(self, msg, ep, ip, now)
        if transport == "udp" and age is not None and age > self.limits.cookie_lifetime / 2:
            out.append(Send(p.Cookie(0, self._cookie(addr, now)).encode(), addr, transport))
        return out

    def _refuse(self, msg, ep: Endpoint, code: int, why: str) -> list[Send]:
        self.stats.refused[why] += 1
        return [Send(p.Error(msg.txid, code).encode(), ep[1], ep[0])]

    def _reply(self, msg: p.Message, ep: Endpoint) -> Send:
        return Send(msg.encode(), ep[1], ep[0])

    # registrations

    def _on_register(self, msg: p.Register, ep: Endpoint, ip: str, now: float) -> list[Send]:
        lim = self.limits
        node = self._nodes.get(msg.nonce)
        new_reg = node is None or msg.key not in node.keys
        if new_reg:
            if len(self._regs) >= lim.max_registrations:
                return self._refuse(msg, ep, p.ErrorCode.LIMIT, "registrations")
            if len(self._by_key.get(msg.key, ())) >= lim.max_registrations_per_key:
                return self._refuse(msg, ep, p.ErrorCode.LIMIT, "registrations_per_key")
        if node is None:
            if len(self._nodes) >= lim.max_nodes:
                return self._refuse(msg, ep, p.ErrorCode.LIMIT, "nodes")
            if self._reg_count.get(ip, 0) + 1 > lim.max_registrations_per_ip:
                return self._refuse(msg, ep, p.ErrorCode.LIMIT, "registrations_per_ip")
            token = self._new_id(self._tokens, p.TOKEN_SIZE)
            node = _Node(msg.nonce, token, ep, ip, msg.candidates,
                         TokenBucket(lim.punch_rate, lim.punch_burst, now))
            self._nodes[msg.nonce] = node
            self._tokens[token] = msg.nonce
            self._by_ep.setdefault(ep, {})[msg.nonce] = None
        else:
            extra = 1 if new_reg else 0
            if not self._move(node, ep, ip, extra):
                return self._refuse(msg, ep, p.ErrorCode.LIMIT, "registrations_per_ip")
            node.candidates = msg.candidates
        if new_reg:
            node.keys[msg.key] = None
            self._by_key.setdefault(msg.key, {})[msg.nonce] = None
            self._reg_count[ip] = self._reg_count.get(ip, 0) + 1
        self._refresh(msg.key, msg.nonce, now)
        return [self._reply(p.Registered(msg.txid, int(lim.registration_ttl), node.token, ep[1]), ep)]

    def _on_keepalive(self, msg: p.Keepalive, ep: Endpoint, ip: str, now: float) -> list[Send]:
        node = self._nodes.get(msg.nonce)
        if node is None:
            return self._refuse(msg, ep, p.ErrorCode.NOT_FOUND, "keepalive_unknown")
        if not self._move(node, ep, ip, 0):
            return self._refuse(msg, ep, p.ErrorCode.LIMIT, "registrations_per_ip")
        for key in node.keys:
            self._refresh(key, msg.nonce, now)
        return [self._reply(p.Alive(msg.txid, int(self.limits.registration_ttl), ep[1]), ep)]

    def _on_unregister(self, msg: p.Unregister, ep: Endpoint, ip: str, now: float) -> list[Send]:
        node = self._nodes.get(msg.nonce)
        token = p.NO_TOKEN
        if node is not None:
            token = node.token
            if msg.key in node.keys:
                self._unregister(msg.key, msg.nonce)
        return [self._reply(p.Registered(msg.txid, 0, token, ep[1]), ep)]

    def _refresh(self, key: bytes, nonce: bytes, now: float) -> None:
        self._regs[(key, nonce)] = now + self.limits.registration_ttl
        self._regs.move_to_end((key, nonce))

    def _move(self, node: _Node, ep: Endpoint, ip: str, extra: int) -> bool:
        """Point `node` at a new endpoint (its address changed); False if the
        new IP has no room for its registrations (+ `extra` new ones)."""
        if node.ip != ip:
            if self._reg_count.get(ip, 0) + len(node.keys) + extra > self.limits.max_registrations_per_ip:
                return False
            self._count(self._reg_count, node.ip, -len(node.keys))
            self._count(self._reg_count, ip, len(node.keys))
            node.ip = ip
        elif extra and self._reg_count.get(ip, 0) + extra > self.limits.max_registrations_per_ip:
            return False
        if node.ep != ep:
            self._discard(self._by_ep, node.ep, node.nonce)
            self._by_ep.setdefault(ep, {})[node.nonce] = None
            node.ep = ep
        return True

    def _unregister(self, key: bytes, nonce: bytes) -> None:
        self._regs.pop((key, nonce), None)
        self._discard(self._by_key, key, nonce)
        node = self._nodes.get(nonce)
        if node is None or key not in node.keys:
            return
        del node.keys[key]
        self._count(self._reg_count, node.ip, -1)
        if not node.keys:
            del self._nodes[nonce]
            del self._tokens[node.token]
            self._discard(self._by_ep, node.ep, nonce)

    # lookups and punching

    def _lookup(self, msg: p.Lookup, ep: Endpoint) -> p.Peers:
        lim = self.limits
        nonces = self._by_key.get(msg.key)
        if not nonces:
            return p.Peers(msg.txid, ())
        mine = self._by_ep.get(ep, {})
        others = [n for n in nonces if n not in mine]
        want = min(msg.max_peers or lim.max_peers_per_reply, lim.max_peers_per_reply)
        chosen = self._rng.sample(others, min(want, len(others)))
        peers = []
        size = p.REPLY_HEADER_SIZE + 1
        for nonce in chosen:
            peer = self._nodes[nonce].peer()
            if size + peer.size > lim.max_reply_size:
                continue
            size += peer.size
            peers.append(peer)
        return p.Peers(msg.txid, tuple(peers))

    def _on_lookup(self, msg: p.Lookup, ep: Endpoint, ip: str, now: float) -> list[Send]:
        return [self._reply(self._lookup(msg, ep), ep)]

    def _target(self, key: bytes, token: bytes) -> _Node | None:
        nonce = self._tokens.get(token)
        node = self._nodes.get(nonce) if nonce is not None else None
        return node if node is not None and key in node.keys else None

    def _token_at(self, ep: Endpoint, key: bytes) -> bytes:
        """The token of the requester's own registration, if it has one."""
        nonces = self._by_ep.get(ep, {})
        for nonce in nonces:
            if key in self._nodes[nonce].keys:
                return self._nodes[nonce].token
        for nonce in nonces:
            return self._nodes[nonce].token
        return p.NO_TOKEN

    def _on_connect(self, msg: p.Connect, ep: Endpoint, ip: str, now: float) -> list[Send]:
        target = self._target(msg.key, msg.token)
        if target is None:
            return self._refuse(msg, ep, p.ErrorCode.NOT_FOUND, "connect_unknown")
        if target.ep == ep:
            return self._refuse(msg, ep, p.ErrorCode.BAD_REQUEST, "connect_self")
        if not target.punch.take(now):
            return self._refuse(msg, ep, p.ErrorCode.RATE_LIMITED, "punch_rate")
        delay = self.limits.punch_delay_ms
        me = p.Peer(self._token_at(ep, msg.key), ep[1], msg.candidates, ep[0] == "tcp")
        return [
            self._reply(p.Punch(msg.txid, msg.key, delay, target.peer()), ep),
            self._reply(p.Punch(0, msg.key, delay, me), target.ep),
        ]

    # relaying

    def _on_relay_allocate(self, msg: p.RelayAllocate, ep: Endpoint, ip: str, now: float) -> list[Send]:
        lim = self.limits
        for channel in self._alloc_by_ep.get(ep, {}):  # a retransmitted request
            alloc = self._allocs[channel]
            if alloc.txid == msg.txid:
                return [self._reply(p.RelayAllocated(msg.txid, channel, self._lifetime(alloc, now),
                                                     self._rate(alloc)), ep)]
        target = self._target(msg.key, msg.token)
        if target is None:
            return self._refuse(msg, ep, p.ErrorCode.NOT_FOUND, "relay_unknown")
        if target.ep == ep:
            return self._refuse(msg, ep, p.ErrorCode.BAD_REQUEST, "relay_self")
        if len(self._allocs) >= lim.max_allocations:
            return self._refuse(msg, ep, p.ErrorCode.LIMIT, "allocations")
        if self._alloc_count.get(ip, 0) >= lim.max_allocations_per_ip:
            return self._refuse(msg, ep, p.ErrorCode.LIMIT, "allocations_per_ip")
        if not target.punch.take(now):
            return self._refuse(msg, ep, p.ErrorCode.RATE_LIMITED, "punch_rate")
        channel = self._new_id(self._allocs, p.CHANNEL_SIZE)
        alloc = _Allocation(channel, msg.key, ep, msg.txid, ip, now, now, None)
        self._allocs[channel] = alloc
        self._alloc_by_ep.setdefault(ep, {})[channel] = None
        self._count(self._alloc_count, ip, 1)
        self.stats.allocations_made += 1
        return [
            self._reply(p.RelayAllocated(msg.txid, channel, self._lifetime(alloc, now), self._rate(alloc)), ep),
            self._reply(p.RelayOffer(0, msg.key, channel, self._token_at(ep, msg.key)), target.ep),
        ]

    def _on_relay_bind(self, msg: p.RelayBind, ep: Endpoint, ip: str, now: float) -> list[Send]:
        alloc = self._allocs.get(msg.channel)
        if alloc is None:
            return self._refuse(msg, ep, p.ErrorCode.NOT_FOUND, "bind_unknown")
        if alloc.b is not None and alloc.b != ep or alloc.a == ep:
            return self._refuse(msg, ep, p.ErrorCode.BAD_REQUEST, "bind_taken")
        if alloc.b != ep:
            alloc.b = ep
            alloc.last = now
            self._alloc_by_ep.setdefault(ep, {})[alloc.channel] = None
            alloc.demand = _UNBOUNDED  # a new flow may use a full share at once
            self._fill(now)
            first = True
        else:  # a retransmitted bind
            first = False
        lifetime = self._lifetime(alloc, now)
        rate = self._rate(alloc)
        bound = p.RelayBound(msg.txid, alloc.channel, lifetime, rate)
        if not first:
            return [self._reply(bound, ep)]
        return [self._reply(bound, ep), self._reply(p.RelayBound(0, alloc.channel, lifetime, rate), alloc.a)]

    def _on_relay_close(self, msg: p.RelayClose, ep: Endpoint, ip: str, now: float) -> list[Send]:
        alloc = self._allocs.get(msg.channel)
        if alloc is None or ep not in (alloc.a, alloc.b):
            return self._refuse(msg, ep, p.ErrorCode.NOT_FOUND, "close_unknown")
        return [self._reply(p.RelayClosed(msg.txid, msg.channel, p.CloseReason.BY_PEER), ep)] + self._close(
            alloc, p.CloseReason.BY_PEER, notify_not=ep)

    def _relay(self, data: bytes, ep: Endpoint, now: float) -> list[Send] | None:
        """Forward relayed data; None if it belongs to no allocation of `ep`."""
        alloc = self._allocs.get(data[5:13])
        if alloc is None or alloc.b is None or len(data) > p.RELAY_DATA_OVERHEAD + p.MAX_RELAY_PAYLOAD:
            return None
        if ep == alloc.a:
            dst = alloc.b
        elif ep == alloc.b:
            dst = alloc.a
        else:
            return None
        n = len(data)
        if alloc.bucket is not None and not alloc.bucket.take(now, n):
            self.stats.relay_dropped += 1
            self.stats.relay_dropped_bytes += n
            alloc.window_dropped += n
            return []
        alloc.last = now
        alloc.bytes += n
        alloc.window_bytes += n
        self.stats.relayed_bytes += n
        return [Send(data, dst[1], dst[0])]

    # fair shares of the relay's bandwidth

    def _measure(self, now: float) -> None:
        """Each bound allocation's demand from what it did since the last
        measure: one that used (nearly) all it was granted, or lost data to
        its rate, wants more than it has (unbounded); one that used less
        wants twice what it used (room to grow; at least RELAY_FLOOR)."""
        dt = now - self._measured
        if dt < 0.5:
            return
        self._measured = now
        for alloc in self._allocs.values():
            if alloc.b is None:
                continue
            used = alloc.window_bytes / dt
            if alloc.window_dropped or alloc.share == 0 or used >= 0.8 * alloc.share:
                alloc.demand = _UNBOUNDED
            else:
                alloc.demand = max(2.0 * used, RELAY_FLOOR)
            alloc.window_bytes = alloc.window_dropped = 0

    def _fill(self, now: float) -> None:
        """Grant each bound allocation its max-min fair share of `relay_rate`
        (water-filling over the demands), never above `relay_rate_per_allocation`."""
        lim = self.limits
        total, per = lim.relay_rate, lim.relay_rate_per_allocation
        bound = [a for a in self._allocs.values() if a.b is not None]
        grants: dict[bytes, float] = {}
        if total:
            bound.sort(key=lambda a: min(a.demand, per) if per else a.demand)
            remaining, left = float(total), len(bound)
            for alloc in bound:
                want = min(alloc.demand, per) if per else alloc.demand
                g = min(want, remaining / left)
                grants[alloc.channel] = g
                remaining -= g
                left -= 1
        elif per:
            grants = {a.channel: float(per) for a in bound}
        for alloc in bound:
            g = grants.get(alloc.channel, 0.0)
            alloc.share = g
            if g <= 0:
                alloc.bucket = None
            elif alloc.bucket is None:
                alloc.bucket = TokenBucket(g, max(lim.relay_burst, 1), now)
            else:
                alloc.bucket.take(now, 0)  # refill at the old rate up to now
                alloc.bucket.rate = g

    def _reshare(self, now: float) -> None:
        self._measure(now)
        self._fill(now)

    def relay_shares(self) -> dict[bytes, float]:
        """Channel -> bytes/s granted now (0: unlimited), bound allocations only."""
        return {a.channel: a.share for a in self._allocs.values() if a.b is not None}

    def relayed_by(self, channel: bytes) -> int:
        alloc = self._allocs.get(channel)
        return alloc.bytes if alloc is not None else 0

    def _rate(self, alloc: _Allocation) -> int:
        """What RELAY_ALLOCATED/BOUND report: the bytes/s granted (0: no limit)."""
        return min(0xFFFFFFFF, int(alloc.share))

    def _lifetime(self, alloc: _Allocation, now: float) -> int:
        """Seconds left; 0xFFFF: no fixed end (it lasts while data flows)."""
        if not self.limits.relay_max_duration:
            return 0xFFFF
        return max(0, min(0xFFFE, int(alloc.created + self.limits.relay_max_duration - now)))

    def _close(self, alloc: _Allocation, reason: int, notify_not: Endpoint | None = None) -> list[Send]:
        self.stats.max_allocation_bytes = max(self.stats.max_allocation_bytes, alloc.bytes)
        self._allocs.pop(alloc.channel, None)  # its share goes to the others at the next tick
        self._count(self._alloc_count, alloc.ip, -1)
        out = []
        for side in (alloc.a, alloc.b):
            if side is None:
                continue
            self._discard(self._alloc_by_ep, side, alloc.channel)
            if side != notify_not:
                out.append(self._reply(p.RelayClosed(0, alloc.channel, reason), side))
        return out

    # helpers

    def _new_id(self, taken, size: int) -> bytes:
        while True:
            new = self._rng.randbytes(size)
            if new not in taken and any(new):
                return new

    @staticmethod
    def _count(table: dict, ip: str, delta: int) -> None:
        n = table.get(ip, 0) + delta
        if n > 0:
            table[ip] = n
        else:
            table.pop(ip, None)

    @staticmethod
    def _discard(table: dict, key, item) -> None:
        inner = table.get(key)
        if inner is not None:
            inner.pop(item, None)
            if not inner:
                del table[key]

    _handlers = {
        p.Register: _on_register,
        p.Lookup: _on_lookup,
        p.Connect: _on_connect,
        p.RelayAllocate: _on_relay_allocate,
        p.RelayBind: _on_relay_bind,
        p.Keepalive: _on_keepalive,
        p.Unregister: _on_unregister,
        p.RelayClose: _on_relay_close,
    }
