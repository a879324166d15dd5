"""A node: one UDP socket, the QUIC endpoint on it, the discovery sources, and
every share and clone (swarm) this process serves, keyed by discovery key.

Discovery sources only report addresses (`peer_found`); the node decides whether
to dial. More sources (rendezvous, DHT, peer exchange) and more connection
paths (punched, relayed) plug in here without the swarms knowing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable

from .events import Event, Listening, PathKind, PeerConnected, PeerDisconnected, PeerFound
from .peer import ERR_GONE, PeerConnection, PeerState
from .transport.identity import NodeIdentity
from .transport.paths import DirectPath
from .transport.pmtu import is_pmtu
from .transport.quic import QuicEndpoint, QuicLink, is_quic
from .transport.udp import Address, Demux, UdpSocket, bind_udp
from . import wire

log = logging.getLogger("dattui.node")

KEEPALIVE = 10.0
BUFFER_CHECK = 1.0  # how often the socket buffers are sized to the fastest path
DUPLICATE = "duplicate connection"
RECONNECTING = "reconnecting"  # closed by a peer that connects again at once (engine.stop)
RECONNECT_GRACE = 5.0  # a peer that said so and did not come back by then has left
SOURCE_PATH = {"lan": PathKind.LAN, "peer-arg": PathKind.DIRECT, "dht": PathKind.DIRECT}


_LAN_NETS = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
    "fc00::/7", "fe80::/10", "::1/128")]


def classify_incoming(addr: Address) -> PathKind:
    """LAN for private, loopback and link-local sources; DIRECT otherwise."""
    try:
        ip = ipaddress.ip_address(addr[0])
    except ValueError:
        return PathKind.DIRECT
    return PathKind.LAN if any(ip in n for n in _LAN_NETS) else PathKind.DIRECT


class Node:
    def __init__(self, identity: NodeIdentity, *, host: str = "0.0.0.0", port: int = 3282,
                 emit: Callable[[Event], None] = lambda e: None,
                 max_datagram_size: int = 1452, path_mtu_discovery: bool = True,
                 udp_offload: bool = True) -> None:
        self.identity = identity
        self.host = host
        self.want_port = port
        self.emit = emit
        self.max_datagram_size = max_datagram_size
        self.path_mtu_discovery = path_mtu_discovery
        self.udp_offload = udp_offload
        self.swarms: dict[bytes, object] = {}
        self.sources: list = []
        self.demux = Demux()
        self.socket: UdpSocket | None = None
        self.endpoint: QuicEndpoint | None = None
        self._attempts: dict[tuple[bytes, Address], PeerConnection] = {}
        self._seen: set[tuple[bytes, Address]] = set()
        self.answered: set[Address] = set()  # addresses whose QUIC handshake completed
        self._announced: set[tuple[bytes, bytes]] = set()  # (dkey, node id) told as connected
        self._keepalive: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        sock = bind_udp(self.host, self.want_port)
        self.socket = UdpSocket(sock, self.demux, self.loop, offload=self.udp_offload)
        self.endpoint = QuicEndpoint(self.identity, self.socket.sendto, on_incoming=self._incoming,
                                     max_datagram_size=self.max_datagram_size, loop=self.loop)
        self.endpoint.classify = classify_incoming
        if self.path_mtu_discovery:
            self.endpoint.probe_sendto = self.socket.send_df
        self.endpoint.sendto_many = self.socket.sendto_many
        self.demux.add(is_quic, self.endpoint.datagram, many=self.endpoint.datagrams)
        self.demux.add(is_pmtu, self.endpoint.pmtu_datagram)
        self.demux.on_batch_end(self.endpoint.flush)
        self._keepalive = asyncio.ensure_future(self._keepalive_loop())

    @property
    def port(self) -> int:
        return self.socket.port if self.socket else 0

    def add_source(self, source) -> None:
        self.sources.append(source)
        if hasattr(source, "announce"):
            for dkey in self.swarms:
                source.announce(dkey)

    # ---- swarms --------------------------------------------------------------
    def add_swarm(self, swarm) -> None:
        self.swarms[swarm.dkey] = swarm
        self.emit(Listening(swarm.tid, (f"{self.host}:{self.port}",)))
        for s in self.sources:
            if hasattr(s, "announce"):
                s.announce(swarm.dkey)

    def remove_swarm(self, swarm, reason: str = "") -> None:
        self.swarms.pop(swarm.dkey, None)
        role = getattr(getattr(swarm, "role", None), "value", "share")
        reason = reason or f"{role} stopped"
        for s in self.sources:
            if hasattr(s, "remove"):
                s.remove(swarm.dkey)
        self._announced = {k for k in self._announced if k[0] != swarm.dkey}
        for key, peer in list(self._attempts.items()):
            if key[0] == swarm.dkey:
                peer.close(ERR_GONE, reason)
                del self._attempts[key]  # closing: a swarm of this key may dial it again at once

    # ---- dialling ------------------------------------------------------------
    def peer_found(self, dkey: bytes, addr: Address, source: str) -> None:
        swarm = self.swarms.get(dkey)
        if swarm is None or not getattr(swarm, "wants_peers", True):
            return
        may_dial = getattr(swarm, "may_dial", None)
        if may_dial is not None and not may_dial(addr):
            return  # banned for this transfer, or backing off after a close
        if (dkey, addr) not in self._seen:
            self._seen.add((dkey, addr))
            self.emit(PeerFound(swarm.tid, f"{addr[0]}:{addr[1]}", source))
        self.dial(dkey, addr, SOURCE_PATH.get(source, PathKind.DIRECT), source)

    def dial(self, dkey: bytes, addr: Address, path: PathKind, source: str = "") -> PeerConnection | None:
        if (dkey, addr) in self._attempts or self.endpoint is None:
            return None
        swarm = self.swarms.get(dkey)
        if any(p.link.addr[:2] == tuple(addr[:2]) and not p.link.closed
               for p in getattr(swarm, "peers", ())):
            return None  # connected already (it dialled us): LAN announces repeat every 5 s
        if addr[1] == self.port and addr[0] in ("127.0.0.1", self.host):
            return None  # ourselves
        link = self.endpoint.connect(DirectPath(self.socket.sendto, addr, path))
        peer = PeerConnection(self, link, dkey=dkey, source=source)
        self._attempts[(dkey, addr)] = peer
        return peer

    def dial_path(self, dkey: bytes, path, source: str) -> PeerConnection | None:
        """Connect over a path a traversal found (punched, relayed)."""
        key = (dkey, path.addr if not path.relayed else ("relay", id(path)))
        if key in self._attempts or self.endpoint is None or dkey not in self.swarms:
            return None
        link = self.endpoint.connect(path)
        peer = PeerConnection(self, link, dkey=dkey, source=source)
        self._attempts[key] = peer
        return peer

    def _incoming(self, link: QuicLink) -> None:
        PeerConnection(self, link, source="incoming")

    # ---- called by PeerConnection ---------------------------------------------
    def peer_ready(self, peer: PeerConnection) -> None:
        swarm = peer.swarm or self.swarms.get(peer.dkey)
        # two connections between the same pair of nodes: keep the one dialled
        # by the smaller node id, on both sides alike
        # (both found each other on the LAN and dialled at once). Neither
        # connection's end is news to the front ends: the peer stays connected.
        for other in list(getattr(swarm, "peers", [])):
            if other.remote_id == peer.remote_id and other is not peer:
                mine = self.identity.public
                def dialler(p: PeerConnection) -> bytes:
                    return mine if p.link.initiator else p.remote_id
                loser = peer if dialler(other) < dialler(peer) else other
                loser.duplicate = True
                loser.close(ERR_GONE, DUPLICATE)
                if loser is peer:
                    return
        key = (peer.dkey, peer.remote_id)
        if key in self._announced:
            return  # it replaces a duplicate already announced as connected
        self._announced.add(key)
        self.emit(PeerConnected(swarm.tid, peer.peer_id, peer.address, peer.path,
                                round(peer.connect_seconds, 3), peer.link.initiator,
                                round(time.monotonic() - swarm.started, 3),
                                peer.link.fast_paths))

    def peer_closed(self, peer: PeerConnection, was_ready: bool) -> None:
        for key, p in list(self._attempts.items()):
            if p is peer:
                del self._attempts[key]
        key = (peer.dkey, peer.remote_id)
        if peer.swarm is not None and self.swarms.get(peer.dkey) is not peer.swarm:
            return  # its share or clone was stopped or paused here (remove_swarm): that is the news
        if peer.duplicate or peer.closed_reason in (DUPLICATE, RECONNECTING):
            # the other connection to this peer stays, or the peer is coming back:
            # nothing to say now, unless it is gone after all when the grace ends
            if self.loop is not None and key in self._announced:
                self.loop.call_later(RECONNECT_GRACE, self._left_unless_back, peer)
            return
        swarm = self.swarms.get(peer.dkey) or peer.swarm
        if any(p.remote_id == peer.remote_id and p is not peer and not p.link.closed
               for p in getattr(swarm, "peers", ())):
            return
        if not was_ready and key in self._announced:
            was_ready = True  # what replaced a dropped duplicate never came: it is gone
        self._announced.discard(key)
        if was_ready:
            tid = swarm.tid if swarm else peer.dkey.hex()[:16]
            reason = peer.closed_reason or "closed"
            if swarm is not None and hasattr(swarm, "leave_reason"):
                reason = swarm.leave_reason(peer, reason)
            self.emit(PeerDisconnected(tid, peer.peer_id, peer.address, reason))

    def _left_unless_back(self, peer: PeerConnection) -> None:
        """A connection closed as a duplicate or as reconnecting: if no other
        connection of that node is up by now, the peer has left; say so once."""
        key = (peer.dkey, peer.remote_id)
        swarm = self.swarms.get(peer.dkey)
        if key not in self._announced or swarm is None or any(
                p.remote_id == peer.remote_id and not p.link.closed for p in getattr(swarm, "peers", ())):
            return
        self._announced.discard(key)
        reason = "left"
        if hasattr(swarm, "leave_reason"):
            reason = swarm.leave_reason(peer, "closed")
        self.emit(PeerDisconnected(swarm.tid, peer.peer_id, peer.address, reason))

    async def _keepalive_loop(self) -> None:
        token = 0
        ticks = int(KEEPALIVE / BUFFER_CHECK)
        while True:
            for _ in range(ticks):
                await asyncio.sleep(BUFFER_CHECK)
                self.size_buffers()
            token += 1
            for swarm in list(self.swarms.values()):
                for peer in list(swarm.peers):
                    if peer.state is PeerState.READY:
                        peer.send(wire.Ping(token))

    def size_buffers(self) -> None:
        """The socket's buffers sized to the fastest path it carries now."""
        if self.socket is None:
            return
        now = time.monotonic()
        rate = max((max(p.down.rate(now), p.up.rate(now)) for s in self.swarms.values()
                    for p in s.peers if isinstance(p, PeerConnection)), default=0.0)
        self.socket.size_buffers(rate)

    async def close(self) -> None:
        if self._keepalive:
            self._keepalive.cancel()
        for s in self.sources:
            s.close()
        if self.endpoint:
            self.endpoint.close_all()
            await asyncio.sleep(0.05)  # let the CONNECTION_CLOSE frames go out
            self.endpoint.flush()
        if self.socket:
            sk = self.socket
            log.debug("udp: %d bytes in, %d out, %d GSO sends, %d GRO reads, %d send errors",
                      sk.bytes_in, sk.bytes_out, sk.gso_sends, sk.gro_reads, sk.send_errors)
            sk.close()
