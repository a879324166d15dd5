"""The asyncio layer over `DhtNode`: it shares the node's UDP socket (through
the `Demux`), drives the core's timer, resolves bootstrap host names in a
thread, and repeats announces and lookups per discovery key.

Wiring (the DHT route must come before QUIC: a bencoded dictionary starts
with 'd' = 0x64, which has QUIC's fixed bit set)::

    dht = DhtService(udp.sendto, node_id, bootstrap=[("router.example", 6881)], loop=loop,
                     on_peers=lambda dkey, peers: ...)
    demux.add(dht.accepts, dht.datagram, first=True)
    dht.start()
    dht.announce(dkey, udp.port)   # a share (and a clone that wants to be found)
    dht.lookup(dkey)               # a clone
    ...
    dht.close()

Per key: announce runs at once and then every `announce_interval` (60 s);
lookup at once, then every `lookup_interval` (15 s) while it is wanted; a
lookup that found no other peer is tried again sooner, after `retry_first`
(1 s) doubling up to `lookup_interval` (so a clone started just before its
share finds it within seconds, and an empty key costs the DHT little); a key
that is both announced and looked up announces when an announce is due and
looks up in between. Only one operation per key runs at a time. `on_peers(dkey, peers)`
is called for every batch of new peers (our own address, as other nodes
report it, is left out).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import deque
from collections.abc import Callable, Iterable

from .bencode import looks_like_krpc
from .krpc import Address, info_hash_for
from .node import DhtNode, LookupDone, PeersFound, TooManyLookups

__all__ = ["DhtService"]

log = logging.getLogger(__name__)

RESOLVE_RETRY = 60.0


def _resolve(hosts: list[tuple[str, int]]) -> list[Address]:
    out: list[Address] = []
    for host, port in hosts:
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            log.info("DHT bootstrap %s:%s does not resolve: %s", host, port, exc)
            continue
        for info in infos:
            addr = (info[4][0], info[4][1])
            if addr not in out:
                out.append(addr)
    return out


class DhtService:
    def __init__(
        self,
        socket_sendto: Callable[[bytes, Address], None],
        node_id: bytes,
        *,
        bootstrap: Iterable[tuple[str, int]] = (),
        loop: asyncio.AbstractEventLoop | None = None,
        on_peers: Callable[[bytes, list[Address]], None] | None = None,
        rng: random.Random | None = None,
        announce_interval: float = 60.0,
        lookup_interval: float = 15.0,
        retry_first: float = 1.0,
        node_options: dict | None = None,
    ) -> None:
        self._sendto = socket_sendto
        self._loop = loop or asyncio.get_running_loop()
        self._clock = self._loop.time
        self.core = DhtNode(node_id, rng=rng or random.SystemRandom(), now=self._clock(),
                            **(node_options or {}))
        self._hosts = [(str(h), int(p)) for h, p in bootstrap]
        self.on_peers = on_peers
        self.announce_interval = announce_interval
        self.lookup_interval = lookup_interval
        self.retry_first = retry_first
        self._retry: dict[bytes, float] = {}          # dkey -> delay after the next empty lookup
        self._found: set[bytes] = set()               # keys whose running operation found a peer
        self.delays: dict[bytes, deque] = {}          # dkey -> the last delays chosen (status)
        self._announce: dict[bytes, int] = {}        # dkey -> port
        self._lookup: set[bytes] = set()
        self._by_hash: dict[bytes, bytes] = {}        # info-hash -> dkey
        self._running: dict[bytes, int] = {}          # dkey -> lookup id in the core
        self._last_announce: dict[bytes, float] = {}
        self._scheduled: dict[bytes, asyncio.TimerHandle] = {}
        self.last_done: dict[bytes, LookupDone] = {}  # dkey -> how its last operation ended
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._resolver: asyncio.Task | None = None
        self._started = False
        self._closed = False

    # -- routing from the socket ---------------------------------------------------

    @staticmethod
    def accepts(data: bytes) -> bool:
        """The Demux classifier: a bencoded dictionary (at most 4 KiB) with
        't' and 'y' keys."""
        return looks_like_krpc(data)

    def datagram(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        self._handle(self.core.receive(data, addr, self._clock()))
        self._pump()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start: bootstrap names are resolved in a thread (the loop never
        waits); every key added so far is announced or looked up at once."""
        if self._started or self._closed:
            return
        self._started = True
        if self._hosts:
            self._resolver = self._loop.create_task(self._bootstrap())
        for dkey in list(self._by_hash.values()):
            self._run(dkey)
        self._pump()

    def close(self) -> None:
        self._closed = True
        if self._resolver is not None:
            self._resolver.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for h in self._scheduled.values():
            h.cancel()
        self._scheduled.clear()

    async def _bootstrap(self) -> None:
        while not self._closed:
            addrs = await self._loop.run_in_executor(None, _resolve, self._hosts)
            if self._closed:
                return
            if addrs:
                self.core.bootstrap(addrs, now=self._clock())
                for dkey in list(self._by_hash.values()):  # the first round ran without routers
                    if dkey not in self._running:
                        self._run(dkey)
                self._pump()
                return
            await asyncio.sleep(RESOLVE_RETRY)

    # -- keys ------------------------------------------------------------------------

    def announce(self, discovery_key: bytes, port: int) -> None:
        """Announce that we serve `discovery_key` on this socket (implied_port:
        the DHT stores the address it sees, i.e. our NAT mapping; `port` is
        the local port, sent for nodes that ignore implied_port)."""
        dkey = self._add(discovery_key)
        self._announce[dkey] = port
        self._last_announce.pop(dkey, None)
        self._kick(dkey)

    def lookup(self, discovery_key: bytes) -> None:
        """Look for peers of `discovery_key` every `lookup_interval` until
        `stop_lookup`."""
        dkey = self._add(discovery_key)
        self._lookup.add(dkey)
        self._kick(dkey)

    def stop_announce(self, discovery_key: bytes) -> None:
        self._announce.pop(bytes(discovery_key), None)
        self._forget(bytes(discovery_key))

    def stop_lookup(self, discovery_key: bytes) -> None:
        self._lookup.discard(bytes(discovery_key))
        self._forget(bytes(discovery_key))

    def remove(self, discovery_key: bytes) -> None:
        """Stop announcing and looking up `discovery_key`."""
        self._announce.pop(bytes(discovery_key), None)
        self._lookup.discard(bytes(discovery_key))
        self._forget(bytes(discovery_key))

    # -- persistence and status -----------------------------------------------------

    def export(self) -> list[tuple[bytes, str, int]]:
        return self.core.export()

    def import_(self, rows) -> None:
        self.core.import_(rows, now=self._clock())
        self._pump()

    def external_address(self) -> Address | None:
        return self.core.external_address()

    @property
    def node_id(self) -> bytes:
        return self.core.node_id

    # -- internals -------------------------------------------------------------------

    def _add(self, discovery_key: bytes) -> bytes:
        dkey = bytes(discovery_key)
        self._by_hash[info_hash_for(dkey)] = dkey
        return dkey

    def _forget(self, dkey: bytes) -> None:
        if dkey in self._announce or dkey in self._lookup:
            return
        self._retry.pop(dkey, None)
        self._found.discard(dkey)
        self.delays.pop(dkey, None)
        self._by_hash.pop(info_hash_for(dkey), None)
        self._last_announce.pop(dkey, None)
        lid = self._running.pop(dkey, None)
        if lid is not None:
            self.core.cancel(lid)
        h = self._scheduled.pop(dkey, None)
        if h is not None:
            h.cancel()

    def _kick(self, dkey: bytes) -> None:
        if self._started and not self._closed and dkey not in self._running:
            h = self._scheduled.pop(dkey, None)
            if h is not None:
                h.cancel()
            self._run(dkey)
            self._pump()

    def _run(self, dkey: bytes) -> None:
        self._scheduled.pop(dkey, None)
        if self._closed or dkey in self._running:
            return
        now = self._clock()
        ih = info_hash_for(dkey)
        try:
            port = self._announce.get(dkey)
            last = self._last_announce.get(dkey)
            if port is not None and (last is None or now - last >= self.announce_interval - 1.0
                                     or dkey not in self._lookup):
                self._last_announce[dkey] = now
                lid = self.core.announce(ih, port, implied_port=True, now=now)
            elif dkey in self._lookup or port is not None:
                lid = self.core.lookup(ih, now=now)
            else:
                return
        except TooManyLookups:
            self._schedule(dkey, self.lookup_interval)
            return
        self._running[dkey] = lid
        self._found.discard(dkey)

    def _schedule(self, dkey: bytes, delay: float) -> None:
        old = self._scheduled.pop(dkey, None)
        if old is not None:
            old.cancel()
        self._scheduled[dkey] = self._loop.call_later(delay, self._run_and_pump, dkey)

    def _run_and_pump(self, dkey: bytes) -> None:
        self._run(dkey)
        self._pump()

    def _handle(self, events) -> None:
        for ev in events:
            dkey = self._by_hash.get(ev.info_hash)
            if dkey is None:
                continue
            if isinstance(ev, PeersFound):
                me = self.core.external_address()
                peers = [p for p in ev.peers if p != me]
                if peers:
                    self._found.add(dkey)
                if peers and self.on_peers is not None:
                    try:
                        self.on_peers(dkey, peers)
                    except Exception:
                        log.exception("on_peers failed")
            elif isinstance(ev, LookupDone) and self._running.get(dkey) == ev.lookup_id:
                del self._running[dkey]
                self.last_done[dkey] = ev
                if dkey in self._lookup:
                    if dkey in self._found:
                        delay = self.lookup_interval
                        self._retry.pop(dkey, None)
                    else:  # nobody yet: again soon, then less and less often
                        delay = self._retry.get(dkey, self.retry_first)
                        self._retry[dkey] = min(delay * 2, self.lookup_interval)
                    self.delays.setdefault(dkey, deque(maxlen=16)).append(delay)
                    self._schedule(dkey, delay)
                elif dkey in self._announce:
                    self._schedule(dkey, self.announce_interval)

    def _pump(self) -> None:
        if self._closed:
            return
        now = self._clock()
        for data, addr in self.core.datagrams_to_send(now):
            self._sendto(data, addr)
        when = self.core.next_timer()
        if when is None:
            return
        if self._timer is not None:
            if self._timer_at is not None and self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(max(when, now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        self._handle(self.core.handle_timer(self._clock()))
        self._pump()
