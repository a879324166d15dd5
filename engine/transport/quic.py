"""QUIC over the node's socket: aioquic's sans-IO `QuicConnection` driven in
both roles, connections found by connection id, one bidirectional stream per
connection carrying the peer protocol.

`QuicLink` is what the layers above see: `send(bytes)`, `backlog` (bytes
queued but not yet put on the wire: aioquic has no send-side backpressure,
so the application checks this before queueing more), `close()`, and
callbacks on its `handler`.

The fast paths through aioquic (fastconn, fastack, bulkstream, pacing, path
MTU discovery, the peer's ACK delay) are used only where aioquic_compat has
found the aioquic in use to behave as they expect (and DATTUI_FAST_PATH is not
0); elsewhere aioquic's own code runs. `QuicLink.fast_paths` says which a
link runs.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable
from typing import Protocol

from aioquic.buffer import Buffer
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from ..events import PathKind
from ..ratelimit import TokenBucket
from .identity import NodeIdentity, certificate_public_key
from . import aioquic_compat, congestion, pmtu
from .bulkstream import BulkStreamSender
from .fastack import FastAckRecovery
from .pacing import BurstPacer
from .fastconn import DattuiConnection, supported as fast_path_supported
from .paths import DirectPath
from .udp import Address

ALPN = "dattui/1"
CID_LENGTH = 8
SMALLEST_INITIAL = 1200
LOW_WATER = 512 * 1024  # refill the stream when less than this waits to be sent
HIGH_WATER = 2 * 1024 * 1024  # senders stop queueing above this
PEER_ACK_DELAY = 0.010


def is_quic(data: bytes) -> bool:
    """QUIC packets have the fixed bit (0x40) set in their first byte."""
    return len(data) >= 20 and bool(data[0] & 0x40)


class LinkHandler(Protocol):
    def link_established(self, link: "QuicLink") -> None: ...
    def link_data(self, link: "QuicLink", data: bytes) -> None: ...
    def link_writable(self, link: "QuicLink") -> None: ...
    def link_closed(self, link: "QuicLink", reason: str) -> None: ...


class QuicLink:
    def __init__(self, endpoint: "QuicEndpoint", conn: QuicConnection, vaddr: Address,
                 initiator: bool, path) -> None:
        self.endpoint = endpoint
        self.conn = conn
        self.vaddr = vaddr  # what aioquic sees: stable while `path` changes underneath
        self.path = path
        self.initiator = initiator
        self.handler: LinkHandler | None = None
        self.tags: dict = {}
        self.started = time.monotonic()
        self.established_at: float | None = None
        self._stream_id: int | None = None
        self._written = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.closed = False
        self.close_reason = ""
        self.pmtu: pmtu.PmtuSearch | None = None
        self._pmtu_timer: asyncio.TimerHandle | None = None
        self.fast_paths = fast_paths_of(conn)

    # ---- what the layers above use -------------------------------------
    @property
    def addr(self) -> Address:
        """Where the peer is reached now (a relay's address when relayed)."""
        return self.path.addr

    @property
    def peer_cert_key(self) -> bytes:
        """The ed25519 key of the certificate the peer (server) presented."""
        return certificate_public_key(getattr(self.conn.tls, "_peer_certificate", None))

    @property
    def backlog(self) -> int:
        """Bytes handed to `send` that aioquic has not yet put in a packet."""
        if self._stream_id is None:
            return 0
        stream = self.conn._streams.get(self._stream_id)  # aioquic keeps no public accessor
        if stream is None:
            return 0
        return self._written - stream.sender.next_offset

    def largest_received(self) -> int:
        """Highest packet number accepted (authenticated, not a duplicate) so far."""
        return max((sp.largest_received_packet for sp in self.conn._spaces.values()), default=-1)

    @property
    def rtt(self) -> float:
        return float(getattr(self.conn._loss, "_rtt_smoothed", 0.0) or 0.0)

    @property
    def datagram_size(self) -> int:
        """The largest datagram this link sends now (raised by path MTU discovery)."""
        return self.conn._max_datagram_size

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self._stream_id is None:
            self._stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_stream_data(self._stream_id, data)
        if not self._written and "bulkstream" in self.fast_paths:
            stream = self.conn._streams.get(self._stream_id)
            if stream is not None:
                BulkStreamSender.adopt(stream.sender)
        self._written += len(data)
        self.endpoint.mark_dirty(self)

    def close(self, code: int = 0, reason: str = "") -> None:
        if not self.closed and self.conn._state not in (QuicConnectionState.CLOSING,
                                                          QuicConnectionState.DRAINING,
                                                          QuicConnectionState.TERMINATED):
            self.conn.close(error_code=code, reason_phrase=reason[:100])
            self.endpoint.mark_dirty(self)
        self.close_reason = self.close_reason or reason

    # ---- driven by the endpoint ----------------------------------------
    def datagram(self, data: bytes, now: float) -> None:
        """Feed one datagram. Its events wait for `_process_events` at the end of
        the read batch, so the stream bytes of a whole batch reach the handler as
        one piece (one frame-decoder pass, not one per packet)."""
        self.conn.receive_datagram(data, self.vaddr, now)

    def transmit(self, now: float) -> None:
        for _ in range(8):
            datagrams = [data for data, _ in self.conn.datagrams_to_send(now=now)]
            if datagrams:
                path = self.path
                many = self.endpoint.sendto_many
                if many is not None and type(path) is DirectPath and path.same_socket(self.endpoint._sendto):
                    many(datagrams, path.addr)
                else:
                    for data in datagrams:
                        path.send(data)
            if not datagrams or self.closed or self.handler is None:
                break
            if self.backlog < LOW_WATER:
                before = self._written
                self.handler.link_writable(self)
                if self._written == before:
                    break
            else:
                break  # congestion or flow-control limited: wait for ACKs
        self._arm_timer()

    def _arm_timer(self) -> None:
        at = self.conn.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            loop = self.endpoint.loop
            self._timer = loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.endpoint.loop.time()
        self.conn.handle_timer(now)
        if self.pmtu is not None and self.conn._loss._pto_count >= 2 and self.pmtu.black_hole(now):
            # nothing acknowledged for two probe timeouts at the raised size: the
            # path shrank under us; fall back to the size every path carries
            set_datagram_size(self.conn, self.pmtu.size)
            self.endpoint.pmtu_schedule(self)
        self._process_events()
        self.transmit(now)

    def _process_events(self) -> None:
        chunks: list[bytes] = []
        next_event = self.conn.next_event
        while (ev := next_event()) is not None:
            if type(ev) is qe.StreamDataReceived:
                if self._stream_id is None:
                    self._stream_id = ev.stream_id
                if ev.stream_id == self._stream_id and ev.data:
                    chunks.append(ev.data)
                continue
            if chunks:
                self._deliver(chunks)
                chunks = []
                if self.closed:
                    return
            if isinstance(ev, qe.HandshakeCompleted):
                self.established_at = time.monotonic()
                # aioquic announces max_ack_delay 25 ms but acknowledges within 1 ms
                # (plus one read batch): both ends are dattui, so the probe timeout
                # can use the real bound and a lost tail is resent sooner
                if "ack_delay" in self.fast_paths \
                        and getattr(self.conn._loss, "max_ack_delay", None) is not None:
                    self.conn._loss.max_ack_delay = PEER_ACK_DELAY
                self.endpoint.pmtu_start(self)
                if self.handler:
                    self.handler.link_established(self)
            elif isinstance(ev, qe.ConnectionIdIssued):
                self.endpoint.register_cid(ev.connection_id, self)
            elif isinstance(ev, qe.ConnectionIdRetired):
                self.endpoint.unregister_cid(ev.connection_id)
            elif isinstance(ev, qe.ConnectionTerminated):
                self._terminated(ev.reason_phrase or f"closed (code {ev.error_code})")
                return
        if chunks:
            self._deliver(chunks)

    def _deliver(self, chunks: list[bytes]) -> None:
        if self.handler is not None:
            self.handler.link_data(self, chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _terminated(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = self.close_reason or reason
        if self._timer is not None:
            self._timer.cancel()
        if self._pmtu_timer is not None:
            self._pmtu_timer.cancel()
        self.endpoint.forget(self)
        if self.handler:
            self.handler.link_closed(self, self.close_reason)

    def path_changed(self) -> None:
        """The path under this link moved (relay -> punched, a NAT rebinding):
        what the old path carried says nothing of the new one."""
        if self.pmtu is not None:
            set_datagram_size(self.conn, self.pmtu.base)
        self.endpoint.pmtu_stop(self)
        if self.established_at is not None:
            self.endpoint.pmtu_start(self)

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


class QuicEndpoint:
    """All QUIC connections of one node, on its one socket."""

    def __init__(self, identity: NodeIdentity, sendto: Callable[[bytes, Address], None], *,
                 on_incoming: Callable[[QuicLink], None],
                 max_datagram_size: int = 1452, window: int = 16 * 1024 * 1024,
                 idle_timeout: float = 30.0, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.identity = identity
        self._sendto = sendto
        self._on_incoming = on_incoming
        self._links: dict[bytes, QuicLink] = {}
        self._dirty: set[QuicLink] = set()
        self._received: set[QuicLink] = set()  # links with events not yet processed
        self._cert = identity.certificate()
        self._key = identity.private_key()
        self._params = dict(max_datagram_size=max_datagram_size, max_data=window,
                            max_stream_data=window, idle_timeout=idle_timeout)
        self.accept_incoming = True
        self._flush_scheduled = False
        self._batch_now: float | None = None
        # path MTU discovery: set by the node to a sendto(data, addr) -> bool that
        # sends with the don't-fragment bit and says False when the stack refuses
        self.probe_sendto: Callable[[bytes, Address], bool] | None = None
        # set by the node: sends a list of datagrams to one address (GSO where it can)
        self.sendto_many: Callable[[list[bytes], Address], None] | None = None
        self._pmtu_nonces: dict[bytes, QuicLink] = {}
        self._pmtu_acks = TokenBucket(200.0, 50.0, 0.0)
        self.classify: Callable[[Address], PathKind] = lambda addr: PathKind.DIRECT
        # the fast paths' self-tests run now (once per process, ~0.15 s), not
        # when a peer's first packet waits for an answer
        aioquic_compat.status()

    def _configuration(self, is_client: bool) -> QuicConfiguration:
        cfg = QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN],
                                connection_id_length=CID_LENGTH,
                                congestion_control_algorithm=congestion.NAME, **self._params)
        cfg.certificate = self._cert
        cfg.private_key = self._key
        cfg.verify_mode = ssl.CERT_NONE  # the application handshake authenticates
        return cfg

    @property
    def links(self) -> list[QuicLink]:
        return list(set(self._links.values()))

    @staticmethod
    def _connection(configuration: QuicConfiguration, **kw) -> QuicConnection:
        """A connection with the fast paths the aioquic in use supports (decided
        once per process by aioquic_compat), aioquic's own code for the rest."""
        on = aioquic_compat.status().on
        if "fastconn" in on:
            conn = DattuiConnection(configuration=configuration, **kw)
            if not fast_path_supported(conn):
                conn.__class__ = QuicConnection  # fields not where this was written for
        else:
            conn = QuicConnection(configuration=configuration, **kw)
        if "pacing" in on:
            BurstPacer.adopt(getattr(conn._loss, "_pacer", None))
        if "fastack" in on:
            FastAckRecovery.adopt(conn._loss)
        return conn

    def connect(self, path) -> QuicLink:
        conn = self._connection(self._configuration(True))
        link = QuicLink(self, conn, path.addr, True, path)
        self._links[conn.host_cid] = link
        conn.connect(link.vaddr, now=self.loop.time())
        self.mark_dirty(link)
        self.flush()
        return link

    def datagram(self, data: bytes, addr: Address, via=None) -> None:
        """A QUIC datagram from `addr`: straight from the node's socket when `via`
        is None, else through the path `via` (a relay or a helper socket)."""
        now = self._now()
        if via is None:
            link = self._direct_link(data, addr)
            if link is not None:
                link.datagram(data, now)
                self._received.add(link)
                self.mark_dirty(link)
                return
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            return
        link = self._links.get(header.destination_cid)
        if link is None:
            if not (self.accept_incoming and header.packet_type == QuicPacketType.INITIAL
                    and len(data) >= SMALLEST_INITIAL and header.version is not None):
                return
            conn = self._connection(self._configuration(False),
                                    original_destination_connection_id=header.destination_cid)
            path = via or DirectPath(self._sendto, addr, self.classify(addr))
            link = QuicLink(self, conn, addr, False, path)
            self._links[header.destination_cid] = link
            self._links[conn.host_cid] = link
            self._on_incoming(link)
            link.datagram(data, now)
            self._received.add(link)
            self.mark_dirty(link)
            return
        elif via is None and link.path.relayed:
            # a relayed connection that now hears from the peer directly (a punch
            # succeeded on its side): move to the direct path once it proves authentic
            before = link.largest_received()
            link.datagram(data, now)
            self._received.add(link)
            if link.largest_received() > before:
                link.path = DirectPath(self._sendto, addr, PathKind.PUNCHED)
                link.path_changed()
            self.mark_dirty(link)
            return
        elif via is not None and via.relayed and link.path.relayed and not link.path.same_relay(via):
            # a relayed connection heard through another relay allocation (the old
            # one reached its end and the peer allocated a new one, or another
            # server relays now): answer through it once a packet proves authentic
            before = link.largest_received()
            link.datagram(data, now)
            self._received.add(link)
            if link.largest_received() > before:
                link.path = via
                link.path_changed()
            self.mark_dirty(link)
            return
        elif via is None and link.path.addr != addr and link.path.same_socket(self._sendto):
            # The peer's address changed (NAT rebinding, a laptop on a new network):
            # answer where its packets now come from, once one of them has proved
            # authentic and new (a replayed or forged packet moves nothing).
            before = link.largest_received()
            link.datagram(data, now)
            self._received.add(link)
            if link.largest_received() > before:
                link.path.addr = addr
                link.path_changed()
            self.mark_dirty(link)
            return
        link.datagram(data, now)
        self._received.add(link)
        self.mark_dirty(link)  # flushed once this loop turn's datagrams are in

    def datagrams(self, run: list[bytes], addr: Address) -> None:
        """Datagrams of one read from `addr` (a GRO train): those that are 1-RTT
        packets of the link the first belongs to, on its direct path, go straight
        to its connection; anything else takes `datagram`'s way."""
        first = run[0]
        link = self._direct_link(first, addr)
        if link is None:
            for data in run:
                self.datagram(data, addr)
            return
        now = self._now()
        cid = first[1:1 + CID_LENGTH]
        receive, vaddr = link.conn.receive_datagram, link.vaddr
        for data in run:
            if data[0] & 0x80 or data[1:1 + CID_LENGTH] != cid:
                self.datagram(data, addr)
            else:
                receive(data, vaddr, now)
        self._received.add(link)
        self.mark_dirty(link)

    def _now(self) -> float:
        """One clock reading per read batch (`flush` clears it)."""
        if self._batch_now is None:
            self._batch_now = self.loop.time()
        return self._batch_now

    def _direct_link(self, data: bytes, addr: Address) -> QuicLink | None:
        """The link a short-header (1-RTT) packet from `addr` belongs to, when it
        runs on a direct path from that address over the node's socket: the common
        case of a bulk transfer, which skips the full header parse (the
        destination connection id follows the first byte)."""
        if data[0] & 0x80:
            return None
        link = self._links.get(data[1:1 + CID_LENGTH])
        if link is None:
            return None
        path = link.path
        if type(path) is DirectPath and path.addr == addr and path.same_socket(self._sendto):
            return link
        return None

    def mark_dirty(self, link: QuicLink) -> None:
        self._dirty.add(link)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        self._batch_now = None
        if not self._dirty:
            return
        now = self.loop.time()
        if self._received:
            received, self._received = self._received, set()
            for link in received:
                if not link.closed:
                    link._process_events()
        dirty, self._dirty = self._dirty, set()
        for link in dirty:
            link.transmit(now)
            if link.conn._state == QuicConnectionState.TERMINATED:
                link._terminated(link.close_reason or "closed")

    # ---- path MTU discovery ---------------------------------------------------------
    def pmtu_start(self, link: QuicLink) -> None:
        path = link.path
        if ("pmtu" not in link.fast_paths or self.probe_sendto is None or link.closed
                or type(path) is not DirectPath
                or not path.same_socket(self._sendto)):
            return
        base = self._params["max_datagram_size"]
        link.pmtu = pmtu.PmtuSearch(base)
        self._pmtu_send(link, link.pmtu.start(self.loop.time(), link.rtt))

    def pmtu_stop(self, link: QuicLink) -> None:
        if link.pmtu is not None:
            self._pmtu_nonces.pop(link.pmtu.probe_nonce, None)
        link.pmtu = None
        if link._pmtu_timer is not None:
            link._pmtu_timer.cancel()
            link._pmtu_timer = None

    def _pmtu_send(self, link: QuicLink, probe: bytes | None) -> None:
        search = link.pmtu
        while probe is not None and search is not None:
            self._pmtu_nonces[search.probe_nonce] = link
            if self.probe_sendto(probe, link.path.addr):
                break
            self._pmtu_nonces.pop(search.probe_nonce, None)
            probe = search.on_send_error(self.loop.time(), link.rtt)
        self.pmtu_schedule(link)

    def pmtu_schedule(self, link: QuicLink) -> None:
        if link._pmtu_timer is not None:
            link._pmtu_timer.cancel()
            link._pmtu_timer = None
        at = link.pmtu.next_timer() if link.pmtu is not None else None
        if at is not None and not link.closed:
            link._pmtu_timer = self.loop.call_at(at, self._pmtu_timeout, link)

    def _pmtu_timeout(self, link: QuicLink) -> None:
        link._pmtu_timer = None
        if link.pmtu is None or link.closed:
            return
        self._pmtu_nonces.pop(link.pmtu.probe_nonce, None)
        self._pmtu_send(link, link.pmtu.on_timer(self.loop.time(), link.rtt))

    def pmtu_datagram(self, data: bytes, addr: Address) -> None:
        """A probe or an acknowledgement on the node's socket. Probes are answered
        only for addresses we hold a connection with (no reflection to strangers)."""
        msg = pmtu.parse(data)
        if msg is None:
            return
        now = self.loop.time()
        if msg.kind == pmtu.PROBE:
            if any(type(l.path) is DirectPath and l.path.addr == addr for l in self._links.values()) \
                    and self._pmtu_acks.take(now):
                self._sendto(pmtu.encode_ack(msg.nonce, msg.size), addr)
            return
        link = self._pmtu_nonces.pop(msg.nonce, None)
        if link is None or link.pmtu is None or link.path.addr != addr:
            return
        if link.pmtu.on_ack(msg.nonce, msg.size, now):
            set_datagram_size(link.conn, link.pmtu.size)
            self.mark_dirty(link)
        self.pmtu_schedule(link)

    def register_cid(self, cid: bytes, link: QuicLink) -> None:
        self._links[cid] = link

    def unregister_cid(self, cid: bytes) -> None:
        self._links.pop(cid, None)

    def forget(self, link: QuicLink) -> None:
        for cid in [c for c, l in self._links.items() if l is link]:
            del self._links[cid]
        self._dirty.discard(link)
        self._received.discard(link)
        self.pmtu_stop(link)

    def close_all(self, reason: str = "node stopping") -> None:
        for link in self.links:
            link.close(0, reason)
        self.flush()


def set_datagram_size(conn: QuicConnection, size: int) -> bool:
    """Change the datagram size of a live aioquic connection. aioquic has no API
    for it; its size lives in the connection, the pacer and the congestion
    controller. Nothing changes unless all three are where this version keeps
    them (then the link stays at its base size)."""
    loss = getattr(conn, "_loss", None)
    pacer = getattr(loss, "_pacer", None)
    cc = getattr(loss, "_cc", None)
    if not (hasattr(conn, "_max_datagram_size") and hasattr(pacer, "_max_datagram_size")):
        return False
    conn._max_datagram_size = size
    pacer._max_datagram_size = size
    if hasattr(cc, "_max_datagram_size"):
        cc._max_datagram_size = size
    if hasattr(cc, "additive_increase_factor"):
        cc.additive_increase_factor = size
    return True


def fast_paths_of(conn: QuicConnection) -> tuple[str, ...]:
    """The fast paths a connection runs (those adopted per stream or link, where
    the process allows them: bulkstream, pmtu, ack_delay)."""
    on = aioquic_compat.status().on
    names = [n for n in ("bulkstream", "pmtu", "ack_delay") if n in on]
    if type(conn) is DattuiConnection:
        names += ["fastconn", "shortcrypto"]
    loss = getattr(conn, "_loss", None)
    if type(loss) is FastAckRecovery:
        names.append("fastack")
    if type(getattr(loss, "_pacer", None)) is BurstPacer:
        names.append("pacing")
    return tuple(sorted(names))


def random_nonce() -> bytes:
    return os.urandom(32)
