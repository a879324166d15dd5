"""Rendezvous servers as a discovery source and a path maker.

For every active discovery key the node registers with each configured
rendezvous server (from its one UDP socket, so the server sees the NAT mapping
QUIC uses), so a peer that reaches only some of them still finds it, and
looks the key up every few seconds at its meeting server: the first one, in
the configured order, that holds its registration. A server that stops
answering (its registration or keepalive fails) is passed over for the next
one; it is taken back when it answers again (the client core registers anew).
Punches and relay offers are followed whichever server they come through;
a node asks for a punch with a peer it already reaches through another
server's attempt no more (should two connections still form, the node keeps
one, the same on both sides). For each peer listed, one
side (the smaller token) asks the server to coordinate a punch; both sides get
PUNCH at once and probe each other's candidates from the node's socket. The
requesting side dials QUIC over the first path that works:

    punched (or direct/lan)  ->  relay over UDP  ->  relay over TCP

A relay is requested when no probe has been answered after RELAY_AFTER seconds
(at once when both sides' NATs map per destination, or when UDP to the server
does not work at all and the client fell back to TCP). A relayed connection
keeps punching and moves to the direct path when a probe is answered, without
interrupting the transfer. The TCP connection goes through an HTTP proxy's
CONNECT tunnel when HTTPS_PROXY names one (and NO_PROXY does not exempt the
server; see `proxy`), straight to the server if the proxy refuses.

A relay allocation may end (the server's maximum duration, or it went idle)
while its connection still lives: the side that allocated it asks for a new
one (ahead of a known end) and both sides move the connection onto it, as
they move it to a punched path; the transfer goes on, nothing is fetched
again.

NAT mapping: the node asks every configured server address for its mapped
address (STUN); when two server addresses see different ports, our NAT maps
per destination ("hard"). We tell peers with one marker candidate,
0.0.0.0:1 (never a real address); a punch between one hard and one easy side
uses the birthday strategy (256 helper sockets on the hard side, random-port
spray from the easy side).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping

from .. import netinfo, stun
from ..events import PathAttempted, PathKind
from ..rendezvous import protocol as rp
from ..rendezvous.client_core import (ObservedAddressChanged, PeersListed, PunchRequested,
                                      Registered, RelayAllocated, RelayBound, RelayClosed,
                                      RelayDataReceived, RelayOffered, RendezvousClient,
                                      RequestFailed)
from ..transport.paths import DirectPath, RelayPath
from .probes import probe_router
from .proxy import open_tunnel, proxy_for
from .punch import Punched, Puncher, PunchState, Send
from .sockets import HelperSockets, sendto_ttl

log = logging.getLogger("dattui.rendezvous")

Address = tuple[str, int]
HARD_MARK = ("0.0.0.0", 1)
LOOKUP_EVERY = 5.0
RELAY_AFTER = 1.5
RELAY_AFTER_BIRTHDAY = 2.6  # the birthday strategy needs about 1-2 s
UDP_GIVE_UP = 2.5       # no answer over UDP by then: try TCP as well
PUNCH_DEADLINE = 30.0
RELAY_RETRY = 4.0
MEET_WAIT = 2.0         # s: a server that has not answered a registration by then is passed over
RENEW_AHEAD = 5.0       # s before a relay allocation's known end: allocate the next one
NO_END = 0xFFFF         # an allocation's lifetime when the server sets no end
BIRTHDAY_SOCKETS = 256
SPRAY_PROBES = 2048


def own_address_kind(addr: Address, peer: rp.Peer) -> PathKind | None:
    """LAN or DIRECT when `addr` is one of the peer's own addresses (a
    candidate it listed, not what a NAT made of it): nothing was punched on its
    side. None otherwise."""
    if addr == HARD_MARK or addr not in peer.candidates:
        return None
    from ..node import classify_incoming
    return classify_incoming(addr)


def peer_fingerprint(peer: rp.Peer) -> tuple:
    """What one node looks like through any server: its public IP, its port
    (unless its NAT maps per destination, when each server sees another one)
    and the local addresses it claims."""
    hard = HARD_MARK in peer.candidates
    return (peer.observed[0], None if hard else peer.observed[1],
            frozenset(c for c in peer.candidates if c != HARD_MARK))


def session_for(key: bytes, a: bytes, b: bytes) -> bytes:
    lo, hi = sorted((a, b))
    return hashlib.blake2b(b"dattui-punch" + key + lo + hi, digest_size=16).digest()


class Attempt:
    """Connecting to one peer (for one key) through one server."""

    def __init__(self, src: "RendezvousSource", client: "_Client", key: bytes,
                 peer: rp.Peer, at: float, initiator: bool) -> None:
        self.src, self.client, self.key, self.peer = src, client, key, peer
        self.initiator = initiator
        self.started = time.monotonic()
        self.link = None
        self.channel: bytes | None = None
        self._renew: asyncio.TimerHandle | None = None
        self.helpers: HelperSockets | None = None
        self.done = False
        peer_hard = HARD_MARK in peer.candidates
        me_hard = src.hard
        cands = [peer.observed] + [c for c in peer.candidates if c != HARD_MARK]
        cands = [c for c in cands if c[0] != "0.0.0.0"]
        sockets, spray = (0,), None
        if me_hard and not peer_hard:
            self.helpers = HelperSockets(BIRTHDAY_SOCKETS, self._helper_probe, self._helper_quic)
            sockets = tuple(self.helpers.socks)
        elif peer_hard and not me_hard:
            spray = (peer.observed[0], SPRAY_PROBES)
        self.session = session_for(key, client.core.token or b"", peer.token)
        self.puncher = Puncher(self.session, cands, start=src.loop.time() + max(0.0, at - time.monotonic()),
                               deadline=PUNCH_DEADLINE, rng=src.rng, sockets=sockets, spray=spray)
        self.relay_now = (me_hard and peer_hard) or client.tcp or peer.over_tcp
        log.debug("attempt to %s cands=%s me_hard=%s peer_hard=%s sockets=%d spray=%s initiator=%s",
                  peer.observed, cands, me_hard, peer_hard, len(sockets), spray, initiator)
        if client.tcp or peer.over_tcp:
            how = "UDP is blocked on " + ("our side" if client.tcp else "the peer's side") + \
                ": relaying over TCP"
        elif me_hard and peer_hard:
            how = "both NATs map per destination: punching cannot work, relaying over UDP"
        elif spray:
            how = f"the peer's NAT maps per destination: {SPRAY_PROBES} probes at random ports"
        elif len(sockets) > 1:
            how = f"our NAT maps per destination: probing from {len(sockets)} sockets"
        else:
            how = f"probing {len(cands)} candidate address(es): " + ", ".join(f"{h}:{p}" for h, p in cands)
        self.note("punch" if not self.relay_now else "relay", how)
        self._timer: asyncio.TimerHandle | None = None
        birthday = len(sockets) > 1 or spray is not None
        delay = 0 if self.relay_now else (RELAY_AFTER_BIRTHDAY if birthday else RELAY_AFTER)
        self._relay_timer = src.loop.call_later(delay, self._maybe_relay)
        self._tick()

    def note(self, step: str, detail: str) -> None:
        swarm = self.src.node.swarms.get(self.key)
        if swarm is not None:
            addr = f"{self.peer.observed[0]}:{self.peer.observed[1]}"
            self.src.emit(PathAttempted(swarm.tid, addr, step, detail))

    # ---- punching ------------------------------------------------------------------
    def _tick(self) -> None:
        self._timer = None
        if self.done:
            return
        now = self.src.loop.time()
        for s in self.puncher.poll(now):
            self._send(s)
        if self.puncher.state is PunchState.FAILED:
            self._punch_failed()
            return
        t = self.puncher.next_timer()
        if t is not None:
            self._timer = self.src.loop.call_at(t, self._tick)

    def _send(self, s: Send) -> None:
        if s.socket == 0:
            sendto_ttl(self.src.node.socket.sock, s.data, s.addr, s.ttl)
        elif self.helpers is not None:
            self.helpers.sendto(s.socket, s.data, s.addr, s.ttl)

    def probe(self, data: bytes, addr: Address, socket: int = 0) -> None:
        for r in self.puncher.receive(data, addr, self.src.loop.time(), socket):
            if isinstance(r, Send):
                self._send(r)
            elif isinstance(r, Punched):
                self._punched(r)

    def _helper_probe(self, data: bytes, addr: Address, i: int) -> None:
        if data[5:21] == self.session:
            self.probe(data, addr, i)

    def _helper_quic(self, data: bytes, addr: Address, i: int) -> None:
        via = DirectPath(self.helpers.sender(i), addr, own_address_kind(addr, self.peer) or PathKind.PUNCHED)
        self.src.node.endpoint.datagram(data, addr, via=via)

    def _punched(self, r: Punched) -> None:
        log.debug("punched %s socket %s after %.2f s (initiator=%s)", r.addr, r.socket, r.seconds,
                  self.initiator)
        self.note("punched", f"a probe got through at {r.addr[0]}:{r.addr[1]} after {r.seconds:.2f} s")
        sendto = self.src.node.socket.sendto if r.socket == 0 else self.helpers.sender(r.socket)
        if self.helpers is not None:
            self.helpers.keep_only(r.socket)
        self.src.punched_addrs.add(r.addr)
        path = DirectPath(sendto, r.addr, own_address_kind(r.addr, self.peer) or PathKind.PUNCHED)
        if self.link is not None and not self.link.closed:
            if self.link.path.relayed:
                self.link.path = path  # relay -> direct, the transfer goes on
                self.note("moved", "from the relay to the punched path, without interruption")
                self.src.node.endpoint.mark_dirty(self.link)
            return
        if self.initiator:
            self._dial(path)

    def _punch_failed(self) -> None:
        if not self.relay_now:
            self.note("gave-up", f"no probe answered within {PUNCH_DEADLINE:.0f} s")
        if self.helpers is not None and (self.link is None or self.link.path.relayed):
            self.helpers.close()

    # ---- relaying ------------------------------------------------------------------
    def _maybe_relay(self) -> None:
        if self.done or not self.initiator:
            return
        if self.link is not None and not self.link.closed:
            return
        if not self.relay_now:
            self.note("relay", f"no probe answered yet: relaying through {self.client.server[0]}:"
                               f"{self.client.server[1]} (punching goes on)")
        self.client.core.relay_allocate(self.key, self.peer.token, self.src.loop.time())
        self.client.pump()

    def relay_ready(self, channel: bytes, lifetime: int = NO_END) -> None:
        log.debug("relay ready %s initiator=%s link=%s", channel.hex(), self.initiator, self.link)
        self.channel = channel
        if not self.initiator:
            return
        if self._renew is not None:
            self._renew.cancel()
            self._renew = None
        if lifetime < NO_END:  # renew ahead of the end, so no packet waits for it
            ahead = min(RENEW_AHEAD, lifetime / 4)
            self._renew = self.src.loop.call_later(max(0.0, lifetime - ahead), self.relay_renew)
        if self.link is None or self.link.closed:
            self._dial(self.client.relay_path(channel, self.peer.over_tcp))
        elif self.link.path.relayed and getattr(self.link.path, "channel", channel) != channel:
            self.link.path = self.client.relay_path(channel, self.peer.over_tcp)
            self.link.path_changed()
            self.note("moved", f"to a new relay allocation at {self.client.server[0]}:{self.client.server[1]}, "
                               "without interruption")
            self.src.node.endpoint.mark_dirty(self.link)

    def relay_renew(self) -> None:
        """The relay allocation under a live connection ends (or is about to):
        allocate the next one; `relay_ready` moves the connection onto it."""
        self._renew = None
        if self.done or not self.initiator or self.link is None or self.link.closed:
            return
        if not self.link.path.relayed:
            return  # punched meanwhile: no relay needed
        log.debug("relay renew for %s", self.peer.observed)
        self.client.core.relay_allocate(self.key, self.peer.token, self.src.loop.time())
        self.client.pump()

    def _dial(self, path) -> None:
        peer = self.src.node.dial_path(self.key, path, "rendezvous")
        log.debug("dial %s -> %s", path, peer)
        if peer is not None:
            peer.began = self.started
            self.link = peer.link

    def close(self) -> None:
        self.done = True
        for t in (self._timer, self._relay_timer, self._renew):
            if t is not None:
                t.cancel()
        if self.helpers is not None and (self.link is None or self.link.closed):
            self.helpers.close()


class _Client:
    """One rendezvous server reached over UDP (the node's socket) or TCP."""

    def __init__(self, src: "RendezvousSource", server: Address, tcp: bool) -> None:
        self.src, self.server, self.tcp = src, server, tcp
        self.core = RendezvousClient(rng=src.rng, transport="tcp" if tcp else "udp",
                                     nonce=src.nonce)
        self.registered = False
        self.proxy = None        # the HTTP proxy its TCP connection goes through, if any
        self.failed = False      # its registration or keepalive went unanswered
        self.asked: float | None = None   # monotonic time of the first unanswered registration
        self.writer: asyncio.StreamWriter | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reader_task: asyncio.Task | None = None
        self.alive = True

    async def open(self) -> None:
        if self.tcp:
            proxy = proxy_for(self.server[0], self.server[1], self.src.environ)
            reader = None
            if proxy is not None:  # HTTPS_PROXY: through the proxy's CONNECT tunnel first
                try:
                    reader, self.writer = await open_tunnel(self.server[0], self.server[1], proxy, 10)
                    self.proxy = proxy
                except (OSError, asyncio.TimeoutError) as exc:
                    log.info("no TCP relay through the proxy %s (%s): trying without", proxy, exc)
            if reader is None:
                try:
                    reader, self.writer = await asyncio.wait_for(
                        asyncio.open_connection(*self.server), 5)
                except (OSError, asyncio.TimeoutError):
                    self.alive = False
                    return
            self._reader_task = asyncio.ensure_future(self._read_tcp(reader))

    async def _read_tcp(self, reader: asyncio.StreamReader) -> None:
        d = rp.Deframer()
        try:
            while chunk := await reader.read(65536):
                for msg in d.feed(chunk):
                    self.receive(msg)
        except (OSError, ValueError):
            pass
        self.alive = False

    def receive(self, data: bytes) -> None:
        if data[4:5] == b"\x09":  # RELAY_DATA: the hot path skips the event queue
            parsed = rp.parse_relay_data(data)
            if parsed is not None:
                self.src.relay_in(self, *parsed)
            return
        try:
            self.core.receive(data, self.src.loop.time())
        except ValueError:
            return
        self.pump()

    def send_raw(self, data: bytes) -> None:
        if self.tcp:
            if self.writer is not None and not self.writer.is_closing():
                self.writer.write(rp.frame(data))
        else:
            self.src.node.socket.sendto(data, self.server)

    def relay_path(self, channel: bytes, peer_tcp: bool) -> RelayPath:
        kind = PathKind.RELAY_TCP if (self.tcp or peer_tcp) else PathKind.RELAY_UDP
        send = self.send_raw
        relay_data = rp.relay_data
        return RelayPath(lambda d: send(relay_data(channel, d)), self.server, kind, channel)

    def pump(self) -> None:
        now = self.src.loop.time()
        while (ev := self.core.next_event()) is not None:
            self.src.event(self, ev)
        for data in self.core.datagrams_to_send(now):
            self.send_raw(data)
        t = self.core.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if t is not None:
            self._timer = self.src.loop.call_at(max(t, now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self.src.loop.time())
        self.pump()

    def close(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._reader_task:
            self._reader_task.cancel()
        if self.writer:
            self.writer.close()


class RendezvousSource:
    name = "rendezvous"

    def __init__(self, node, servers: list[Address], *, rng: random.Random | None = None,
                 emit: Callable = lambda e: None, environ: Mapping[str, str] | None = None) -> None:
        self.node = node
        self.environ = os.environ if environ is None else environ  # HTTPS_PROXY, NO_PROXY
        self.loop = node.loop
        self.servers = servers
        self.rng = rng or random.Random()
        self.nonce = self.rng.randbytes(16)
        self.emit = emit
        self.clients: list[_Client] = []
        self.keys: set[bytes] = set()
        self.attempts: dict[tuple[bytes, bytes], Attempt] = {}
        self.channels: dict[bytes, tuple[_Client, Attempt | None]] = {}
        self.punched_addrs: set[Address] = set()
        self.mapped: dict[Address, Address] = {}
        self.hard = False
        self._stun_tids: dict[bytes, Address] = {}
        self._lookup_task: asyncio.Task | None = None
        self.distinct = list(dict.fromkeys(servers))  # in the configured order

    # ---- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        d = self.node.demux
        d.add(rp.is_rendezvous, self._udp_in, first=True)
        probe_router(self.node).fallbacks.append(self._probe_in)  # probes no other punch claims
        d.add(stun.is_stun, self._stun_in, first=True)
        self.node.endpoint.classify = self._classify
        # every configured address answers STUN (two addresses of one server tell
        # whether our NAT maps per destination); we register with every one and
        # meet at the first that holds our registration
        for server in self.distinct:
            self.clients.append(_Client(self, server, tcp=False))
        probed = time.monotonic()
        await self._stun_probe()
        for c in self.clients:
            if c.server not in self.mapped:
                c.asked = probed  # silent to STUN: passed over soon unless it answers a registration
                if not self.mapped:
                    c.failed = True  # no STUN answer at all: UDP is likely blocked here
        if not self.mapped:  # try TCP now
            await self._open_tcp()
        self._lookup_task = asyncio.ensure_future(self._lookups())

    async def _stun_probe(self) -> None:
        """Our mapped address as each server address sees it; different ports
        seen by two server IPs mean our NAT maps per destination."""
        for server in self.servers:
            tid = stun.new_transaction_id()
            self._stun_tids[tid] = server
            self.node.socket.sendto(stun.binding_request(tid, pad_to=stun.RESPONSE_PAD), server)
        for _ in range(10):
            await asyncio.sleep(0.1)
            if len(self.mapped) == len(self.servers):
                break
        ips = {}
        for server, mapped in self.mapped.items():
            ips.setdefault(server[0], set()).add(mapped)
        seen = {m for ms in ips.values() for m in ms}
        self.hard = len(ips) >= 2 and len({m[1] for m in seen}) > 1
        log.debug("stun: mapped %s -> hard=%s", self.mapped, self.hard)

    async def _open_tcp(self) -> None:
        if any(c.tcp and c.alive for c in self.clients):
            return
        for dead in [c for c in self.clients if c.tcp]:  # a lost connection: replaced below
            dead.close()
            self.clients.remove(dead)
        for server in self.distinct:  # the first server that takes a TCP connection
            t = _Client(self, server, tcp=True)
            await t.open()
            if not t.alive:
                continue
            self.clients.append(t)
            now = self.loop.time()
            for k in self.keys:
                t.core.register(k, self.candidates(), now)
            t.pump()
            return

    def meeting(self) -> "_Client | None":
        """Where we look peers up: the first client, in the configured order
        (UDP before TCP), that has not failed; None while its registration is
        still on its way (both sides of a punch must meet at the same server,
        so a later server that happens to answer first does not take over)."""
        now = time.monotonic()
        for c in self.clients:
            if not c.alive or c.failed:
                continue
            if c.registered:
                return c
            if c.asked is not None and now - c.asked > MEET_WAIT:
                continue  # no answer yet, long past what a live server takes: the next one
            return None
        return None

    def _stun_in(self, data: bytes, addr: Address) -> None:
        try:
            msg = stun.parse(data)
        except ValueError:
            return
        server = self._stun_tids.pop(msg.transaction_id, None)
        if server is not None:
            mapped = msg.xor_mapped_address or msg.mapped_address
            if mapped:
                self.mapped[server] = tuple(mapped)[:2]

    def close(self) -> None:
        if self._lookup_task:
            self._lookup_task.cancel()
        for a in self.attempts.values():
            a.close()
        for c in self.clients:
            c.close()

    # ---- discovery-source interface ---------------------------------------------------
    def candidates(self) -> list[Address]:
        port = self.node.port
        out = [(ip, port) for i in netinfo.local_addresses() if i.up and not i.is_loopback
               for ip in i.ipv4]
        if self.hard:
            out.append(HARD_MARK)
        return out[:7]

    def announce(self, dkey: bytes) -> None:
        self.keys.add(dkey)
        now = self.loop.time()
        meeting = self.meeting()
        for c in self.clients:
            c.core.register(dkey, self.candidates(), now)
            if not c.registered and c.asked is None:
                c.asked = time.monotonic()
            if c is meeting:  # else the lookup follows the registration (Registered)
                c.core.lookup(dkey, now)
            c.pump()

    def remove(self, dkey: bytes) -> None:
        self.keys.discard(dkey)
        now = self.loop.time()
        for c in self.clients:
            if c.alive:
                c.core.unregister(dkey, now)
                c.pump()
        for k in [k for k in self.attempts if k[0] == dkey]:
            self.attempts.pop(k).close()

    async def _lookups(self) -> None:
        tcp_tried = False
        started = time.monotonic()
        while True:
            await asyncio.sleep(LOOKUP_EVERY if tcp_tried else 0.5)
            if not tcp_tried and time.monotonic() - started > UDP_GIVE_UP:
                tcp_tried = True
                if not any(c.registered for c in self.clients):
                    await self._open_tcp()
            now = self.loop.time()
            c = self.meeting()
            if c is None:
                if tcp_tried and not any(x.tcp and x.alive for x in self.clients):
                    await self._open_tcp()  # every server lost over UDP (and TCP): try TCP again
                continue
            for k in list(self.keys):
                swarm = self.node.swarms.get(k)
                if swarm is not None and getattr(swarm, "wants_peers", True):
                    c.core.lookup(k, now)
            c.pump()

    # ---- events from a server ------------------------------------------------------
    def event(self, c: _Client, ev) -> None:
        now = self.loop.time()
        log.debug("%s %s: %s", "tcp" if c.tcp else "udp", c.server, type(ev).__name__)
        if isinstance(ev, Registered):
            c.registered = True
            c.failed = False
            c.asked = None
            if c is self.meeting():
                for k in self.keys:
                    c.core.lookup(k, now)
        elif isinstance(ev, RequestFailed):
            if ev.kind in ("register", "keepalive") and ev.code is None and not c.failed:
                c.registered = False  # the server stopped answering: meet at the next one
                c.failed = True
                log.info("rendezvous %s:%d does not answer; meeting at the next server", *c.server)
                nxt = self.meeting()
                if nxt is not None:
                    for k in self.keys:
                        nxt.core.lookup(k, now)
                    nxt.pump()
        elif isinstance(ev, ObservedAddressChanged):
            for k in self.keys:
                c.core.register(k, self.candidates(), now)
        elif isinstance(ev, PeersListed):
            for peer in ev.peers:
                if not self._live((ev.key, peer.token)) and not self._met_elsewhere(ev.key, peer, c):
                    c.core.connect(ev.key, peer.token, self.candidates(), now)
        elif isinstance(ev, PunchRequested):
            key = (ev.key, ev.peer.token)
            if self._live(key) or ev.key not in self.keys:
                return  # both sides asked at once: the first punch goes on
            old = self.attempts.pop(key, None)
            if old is not None:
                old.close()
            # the smaller token dials QUIC, whoever asked for the punch
            self.attempts[key] = Attempt(self, c, ev.key, ev.peer, ev.at,
                                         initiator=(c.core.token or b"") < ev.peer.token)
        elif isinstance(ev, RelayOffered):
            self.channels[ev.channel] = (c, self.attempts.get((ev.key, ev.token)))
            c.core.relay_bind(ev.channel, now)
        elif isinstance(ev, RelayAllocated):
            self.channels[ev.channel] = (c, self.attempts.get((ev.key, ev.token)))
        elif isinstance(ev, RelayBound):
            client, attempt = self.channels.get(ev.channel, (c, None))
            if attempt is not None:
                attempt.relay_ready(ev.channel, ev.lifetime)
        elif isinstance(ev, RelayDataReceived):
            self.relay_in(c, ev.channel, ev.payload)
        elif isinstance(ev, RelayClosed):
            _, attempt = self.channels.pop(ev.channel, (c, None))
            if attempt is not None and attempt.channel == ev.channel and attempt.link is not None \
                    and not attempt.link.closed and getattr(attempt.link.path, "channel", None) == ev.channel:
                attempt.relay_renew()  # the connection still runs on it: allocate anew

    def _met_elsewhere(self, key: bytes, peer: rp.Peer, c: "_Client") -> bool:
        """Whether a live attempt through another server already reaches this
        peer (tokens differ per server; a node's address and candidates do not)."""
        fp = peer_fingerprint(peer)
        for (k, token), a in self.attempts.items():
            if k == key and a.client.server != c.server and peer_fingerprint(a.peer) == fp \
                    and self._live((k, token)):
                return True
        return False

    def _live(self, key: tuple[bytes, bytes]) -> bool:
        a = self.attempts.get(key)
        if a is None:
            return False
        if a.link is not None and not a.link.closed:
            return True
        # no connection yet: a punch may still succeed; a relay-only attempt that
        # has not connected within a few seconds is tried again
        window = RELAY_RETRY if a.relay_now else PUNCH_DEADLINE
        return a.link is None and time.monotonic() - a.started < window

    def relay_in(self, c: _Client, channel: bytes, payload: bytes) -> None:
        entry = self.channels.get(channel)
        if entry is None:
            log.debug("relay data on unknown channel %s", channel.hex())
            return
        client, attempt = entry
        peer_tcp = attempt.peer.over_tcp if attempt else False
        vaddr = ("relay-" + channel.hex(), 0)
        self.node.endpoint.datagram(payload, vaddr, via=client.relay_path(channel, peer_tcp))

    # ---- datagrams on the node's socket -------------------------------------------
    def _udp_in(self, data: bytes, addr: Address) -> None:
        for c in self.clients:
            if not c.tcp and c.server == addr:
                c.receive(data)
                return

    def _probe_in(self, data: bytes, addr: Address) -> None:
        session = data[5:21]
        for a in self.attempts.values():
            if a.session == session:
                a.probe(data, addr, 0)
                return

    def _classify(self, addr: Address) -> PathKind:
        for a in self.attempts.values():
            kind = own_address_kind(addr, a.peer)
            if kind is not None:
                return kind
        if addr in self.punched_addrs:
            return PathKind.PUNCHED
        for a in self.attempts.values():
            if addr[0] == a.peer.observed[0] or addr in a.puncher.candidates:
                return PathKind.PUNCHED
        from ..node import classify_incoming
        return classify_incoming(addr)
