"""A node's side of the rendezvous protocol, sans-IO.

One `RendezvousClient` talks to one server over one transport. It builds the
requests, retransmits them over UDP (with backoff) until answered, fetches
and attaches the server's anti-amplification cookie (a request answered with
a COOKIE is sent again with it, at once), keeps the node's registrations
alive with KEEPALIVE (and registers again if the server forgot them, e.g.
after a restart), and turns what the server sends into events.

The I/O layer feeds it with::

    client.receive(data, now)      # a datagram (UDP) or a whole frame (TCP)
    client.handle_timer(now)       # when now >= client.get_timer()
and drains it with::

    client.datagrams_to_send(now)  # messages for the server (TCP: frame them)
    client.next_event()            # events below, or None

Relayed QUIC datagrams bypass the queues: `relay_send(channel, payload)`
returns the message to send now, and a received RELAY_DATA becomes a
`RelayDataReceived` event (or the I/O layer may call
`protocol.parse_relay_data` itself on its hot path).
"""

from __future__ import annotations

import collections
import dataclasses
import random
from dataclasses import dataclass

from . import protocol as p
from .protocol import Address, Peer

__all__ = [
    "RendezvousClient",
    "Event",
    "Registered",
    "Unregistered",
    "ObservedAddressChanged",
    "PeersListed",
    "PunchRequested",
    "RelayAllocated",
    "RelayOffered",
    "RelayBound",
    "RelayDataReceived",
    "RelayClosed",
    "RequestFailed",
    "Peer",
]


# -- events -----------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class Registered(Event):
    """The server holds our registration of `key`; it sees us at `observed`."""

    key: bytes
    observed: Address
    ttl: int
    token: bytes


@dataclass(frozen=True)
class Unregistered(Event):
    key: bytes


@dataclass(frozen=True)
class ObservedAddressChanged(Event):
    """A KEEPALIVE answer shows another server-reflexive address than before
    (the NAT rebound the mapping, or the node moved)."""

    observed: Address


@dataclass(frozen=True)
class PeersListed(Event):
    key: bytes
    peers: tuple[Peer, ...]


@dataclass(frozen=True)
class PunchRequested(Event):
    """Probe `peer` (its observed address and candidates) from the node's
    socket starting at local time `at`. `by_us`: the answer to our connect();
    otherwise `peer` asked to connect to us."""

    key: bytes
    peer: Peer
    at: float
    by_us: bool


@dataclass(frozen=True)
class RelayAllocated(Event):
    """Our relay_allocate() succeeded; the peer has been offered `channel`."""

    channel: bytes
    key: bytes
    token: bytes
    lifetime: int
    rate: int


@dataclass(frozen=True)
class RelayOffered(Event):
    """Peer `token` wants to relay with us over `channel`: relay_bind() it
    (over this client or one on another transport) to accept."""

    channel: bytes
    key: bytes
    token: bytes


@dataclass(frozen=True)
class RelayBound(Event):
    """Both sides of `channel` are bound: relayed data flows."""

    channel: bytes
    lifetime: int
    rate: int


@dataclass(frozen=True)
class RelayDataReceived(Event):
    channel: bytes
    payload: bytes


@dataclass(frozen=True)
class RelayClosed(Event):
    channel: bytes
    reason: int


@dataclass(frozen=True)
class RequestFailed(Event):
    """A request got an ERROR (`code`, see protocol.ErrorCode) or no answer
    (`code` None). `kind` is the request's name ("register", "lookup",
    "connect", "relay_allocate", "relay_bind", "relay_close", "keepalive",
    "unregister"); `key`/`channel` say which one."""

    kind: str
    code: int | None
    key: bytes | None = None
    channel: bytes | None = None


# -- the client --------------------------------------------------------------------

_KINDS = {
    p.Register: "register",
    p.Lookup: "lookup",
    p.Connect: "connect",
    p.RelayAllocate: "relay_allocate",
    p.RelayBind: "relay_bind",
    p.Keepalive: "keepalive",
    p.Unregister: "unregister",
    p.RelayClose: "relay_close",
}


class _Pending:
    __slots__ = ("msg", "tries", "next_send", "interval")

    def __init__(self, msg, now: float, interval: float) -> None:
        self.msg = msg
        self.tries = 0
        self.next_send = now
        self.interval = interval


class RendezvousClient:
    """Sans-IO client of one rendezvous server; see the module doc.

    `nonce` names this node's registrations (16 bytes, kept secret; random if
    None). Over UDP a request is sent up to `max_tries` times, `retry` s
    apart at first, doubling up to `retry_max`; over TCP once, failing
    after `tcp_timeout` s.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        nonce: bytes | None = None,
        transport: str = "udp",
        keepalive_interval: float = 25.0,
        retry: float = 0.5,
        retry_max: float = 4.0,
        max_tries: int = 6,
        tcp_timeout: float = 10.0,
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise ValueError("transport must be 'udp' or 'tcp'")
        if nonce is None:
            nonce = rng.randbytes(p.NONCE_SIZE)
        if len(nonce) != p.NONCE_SIZE:
            raise ValueError("nonce must be 16 bytes")
        self.transport = transport
        self.keepalive_interval = keepalive_interval
        self._rng = rng
        self._nonce = bytes(nonce)
        self._retry = retry
        self._retry_max = retry_max
        self._max_tries = max_tries if transport == "udp" else 1
        self._tcp_timeout = tcp_timeout
        self._cookie = p.NO_COOKIE
        self._pending: dict[int, _Pending] = {}
        self._out: list[bytes] = []
        self._events: collections.deque[Event] = collections.deque()
        self._keys: dict[bytes, tuple[Address, ...]] = {}  # what we keep registered
        self._next_keepalive: float | None = None
        self.token: bytes | None = None          # ours, from REGISTERED
        self.observed: Address | None = None     # our address as the server sees it

    @property
    def nonce(self) -> bytes:
        return self._nonce

    @property
    def cookie(self) -> bytes:
        """The server's current anti-amplification cookie for us (zeros: none yet)."""
        return self._cookie

    @property
    def registered_keys(self) -> list[bytes]:
        return list(self._keys)

    # -- commands; each returns the request's txid ------------------------------------

    def register(self, key: bytes, candidates: tuple[Address, ...] | list[Address], now: float) -> int:
        """Register `key` with our claimed `candidates` and keep it registered
        (KEEPALIVE every `keepalive_interval`) until unregister()."""
        candidates = tuple(candidates)[:p.MAX_CANDIDATES]
        self._keys[bytes(key)] = candidates
        if self._next_keepalive is None:
            self._next_keepalive = now + self.keepalive_interval
        return self._request(lambda t: p.Register(t, key, self._nonce, candidates), now)

    def unregister(self, key: bytes, now: float) -> int:
        self._keys.pop(bytes(key), None)
        if not self._keys:
            self._next_keepalive = None
        return self._request(lambda t: p.Unregister(t, key, self._nonce), now)

    def lookup(self, key: bytes, now: float, max_peers: int = 0) -> int:
        return self._request(lambda t: p.Lookup(t, key, max_peers), now)

    def connect(self, key: bytes, token: bytes, candidates: tuple[Address, ...] | list[Address],
                now: float) -> int:
        """Ask the server to make peer `token` punch towards us (and tell us to punch too)."""
        candidates = tuple(candidates)[:p.MAX_CANDIDATES]
        return self._request(lambda t: p.Connect(t, key, token, candidates), now)

    def relay_allocate(self, key: bytes, token: bytes, now: float) -> int:
        return self._request(lambda t: p.RelayAllocate(t, key, token), now)

    def relay_bind(self, channel: bytes, now: float) -> int:
        return self._request(lambda t: p.RelayBind(t, channel), now)

    def relay_close(self, channel: bytes, now: float) -> int:
        return self._request(lambda t: p.RelayClose(t, channel), now)

    def keepalive(self, now: float) -> int:
        return self._request(lambda t: p.Keepalive(t, self._nonce), now)

    def relay_send(self, channel: bytes, payload: bytes) -> bytes:
        """The RELAY_DATA message carrying `payload`; send it to the server now."""
        return p.relay_data(channel, payload)

    # -- I/O -------------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[bytes]:
        self._flush(now)
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [pend.next_send for pend in self._pending.values()]
        if self._next_keepalive is not None:
            times.append(self._next_keepalive)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if self._next_keepalive is not None and now >= self._next_keepalive:
            self._next_keepalive = now + self.keepalive_interval
            if not any(isinstance(pend.msg, p.Keepalive) for pend in self._pending.values()):
                self.keepalive(now)
        self._flush(now)

    def receive(self, data: bytes, now: float) -> None:
        """A message from the server. Anything malformed is ignored."""
        try:
            msg = p.decode(data)
        except p.RendezvousError:
            return
        if isinstance(msg, p.RelayData):
            self._events.append(RelayDataReceived(msg.channel, msg.payload))
            return
        if isinstance(msg, p.REQUEST_TYPES):
            return
        pend = self._pending.get(msg.txid) if msg.txid else None
        if msg.txid and pend is None:
            return  # a late duplicate, or not ours
        if isinstance(msg, p.Cookie):
            self._cookie = msg.cookie
            if pend is not None:
                # send everything waiting again, now with the cookie
                for other in self._pending.values():
                    other.next_send = now
            return
        if pend is not None:
            del self._pending[msg.txid]
        self._on_reply(msg, pend.msg if pend is not None else None, now)

    # -- internals ---------------------------------------------------------------------

    def _request(self, build, now: float) -> int:
        while True:
            txid = self._rng.getrandbits(32)
            if txid and txid not in self._pending:
                break
        interval = self._retry if self.transport == "udp" else self._tcp_timeout
        self._pending[txid] = _Pending(build(txid), now, interval)
        return txid

    def _flush(self, now: float) -> None:
        for txid, pend in list(self._pending.items()):
            if pend.next_send > now:
                continue
            if pend.tries >= self._max_tries:
                del self._pending[txid]
                self._fail(pend.msg, None)
                continue
            msg = pend.msg
            if self.transport == "udp":
                # the dataclass is frozen: rebuild with the current cookie
                msg = dataclasses.replace(msg, cookie=self._cookie)
            self._out.append(msg.encode())
            pend.tries += 1
            pend.next_send = now + pend.interval
            if self.transport == "udp":
                pend.interval = min(pend.interval * 2, self._retry_max)

    def _fail(self, req, code: int | None) -> None:
        if isinstance(req, p.Keepalive) and code == p.ErrorCode.NOT_FOUND:
            # the server forgot us (restart, or we were silent too long): register again
            for key, cands in self._keys.items():
                self._pending_register(key, cands)
            return
        self._events.append(RequestFailed(_KINDS[type(req)], code, getattr(req, "key", None),
                                          getattr(req, "channel", None)))

    def _pending_register(self, key: bytes, cands: tuple[Address, ...]) -> None:
        # sent at the next flush (datagrams_to_send / handle_timer)
        self._request(lambda t: p.Register(t, key, self._nonce, cands), float("-inf"))

    def _on_reply(self, msg, req, now: float) -> None:
        ev = self._events.append
        if isinstance(msg, p.Error):
            if req is not None:
                self._fail(req, msg.code)
            return
        if isinstance(msg, p.Registered):
            if isinstance(req, p.Unregister):
                ev(Unregistered(req.key))
            elif isinstance(req, p.Register):
                self.token = msg.token
                self.observed = msg.observed
                ev(Registered(req.key, msg.observed, msg.ttl, msg.token))
        elif isinstance(msg, p.Alive):
            if isinstance(req, p.Keepalive) and msg.observed != self.observed:
                changed = self.observed is not None
                self.observed = msg.observed
                if changed:
                    ev(ObservedAddressChanged(msg.observed))
        elif isinstance(msg, p.Peers):
            if isinstance(req, p.Lookup):
                mine = self.token
                ev(PeersListed(req.key, tuple(x for x in msg.peers if x.token != mine)))
        elif isinstance(msg, p.Punch):
            if req is None or isinstance(req, p.Connect):
                ev(PunchRequested(msg.key, msg.peer, now + msg.delay_ms / 1000.0, req is not None))
        elif isinstance(msg, p.RelayAllocated):
            if isinstance(req, p.RelayAllocate):
                ev(RelayAllocated(msg.channel, req.key, req.token, msg.lifetime, msg.rate))
        elif isinstance(msg, p.RelayOffer):
            if req is None:
                ev(RelayOffered(msg.channel, msg.key, msg.token))
        elif isinstance(msg, p.RelayBound):
            if req is None or isinstance(req, p.RelayBind):
                ev(RelayBound(msg.channel, msg.lifetime, msg.rate))
        elif isinstance(msg, p.RelayClosed):
            ev(RelayClosed(msg.channel, msg.reason))
