"""QUIC over the node's socket: aioquic's sans-IO `QuicConnection` driven in
both roles, connections found by connection id, one bidirectional stream per
connection carrying the peer protocol.

`QuicLink` is what the layers above see: `send(bytes)`, `backlog` (bytes
queued but not yet put on the wire: aioquic has no send-side backpressure,
so the application checks this before queueing more), `close()`, and
callbacks on its `handler`.
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
from .identity import NodeIdentity, certificate_public_key
from .paths import DirectPath
from .udp import Address

ALPN = "dattui/1"
CID_LENGTH = 8
SMALLEST_INITIAL = 1200
LOW_WATER = 512 * 1024  # refill the stream when less than this waits to be sent
HIGH_WATER = 2 * 1024 * 1024  # senders stop queueing above this


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

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self._stream_id is None:
            self._stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_stream_data(self._stream_id, data)
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
        self.conn.receive_datagram(data, self.vaddr, now)
        self._process_events()

    def transmit(self, now: float) -> None:
        for _ in range(8):
            sent_any = False
            send = self.path.send
            for data, _ in self.conn.datagrams_to_send(now=now):
                send(data)
                sent_any = True
            if not sent_any or self.closed or self.handler is None:
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
        self._process_events()
        self.transmit(now)

    def _process_events(self) -> None:
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, qe.StreamDataReceived):
                if self._stream_id is None:
                    self._stream_id = ev.stream_id
                if ev.stream_id == self._stream_id and ev.data and self.handler:
                    self.handler.link_data(self, ev.data)
                self.endpoint.mark_dirty(self)
            elif isinstance(ev, qe.HandshakeCompleted):
                self.established_at = time.monotonic()
                if self.handler:
                    self.handler.link_established(self)
            elif isinstance(ev, qe.ConnectionIdIssued):
                self.endpoint.register_cid(ev.connection_id, self)
            elif isinstance(ev, qe.ConnectionIdRetired):
                self.endpoint.unregister_cid(ev.connection_id)
            elif isinstance(ev, qe.ConnectionTerminated):
                self._terminated(ev.reason_phrase or f"closed (code {ev.error_code})")
                return

    def _terminated(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = self.close_reason or reason
        if self._timer is not None:
            self._timer.cancel()
        self.endpoint.forget(self)
        if self.handler:
            self.handler.link_closed(self, self.close_reason)

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
        self._cert = identity.certificate()
        self._key = identity.private_key()
        self._params = dict(max_datagram_size=max_datagram_size, max_data=window,
                            max_stream_data=window, idle_timeout=idle_timeout)
        self.accept_incoming = True
        self._flush_scheduled = False
        self.classify: Callable[[Address], PathKind] = lambda addr: PathKind.DIRECT

    def _configuration(self, is_client: bool) -> QuicConfiguration:
        cfg = QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN],
                                connection_id_length=CID_LENGTH,
                                congestion_control_algorithm="cubic", **self._params)
        cfg.certificate = self._cert
        cfg.private_key = self._key
        cfg.verify_mode = ssl.CERT_NONE  # the application handshake authenticates
        return cfg

    @property
    def links(self) -> list[QuicLink]:
        return list(set(self._links.values()))

    def connect(self, path) -> QuicLink:
        conn = QuicConnection(configuration=self._configuration(True))
        link = QuicLink(self, conn, path.addr, True, path)
        self._links[conn.host_cid] = link
        conn.connect(link.vaddr, now=self.loop.time())
        self.mark_dirty(link)
        self.flush()
        return link

    def datagram(self, data: bytes, addr: Address, via=None) -> None:
        """A QUIC datagram from `addr`: straight from the node's socket when `via`
        is None, else through the path `via` (a relay or a helper socket)."""
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            return
        link = self._links.get(header.destination_cid)
        now = self.loop.time()
        if link is None:
            if not (self.accept_incoming and header.packet_type == QuicPacketType.INITIAL
                    and len(data) >= SMALLEST_INITIAL and header.version is not None):
                return
            conn = QuicConnection(configuration=self._configuration(False),
                                  original_destination_connection_id=header.destination_cid)
            path = via or DirectPath(self._sendto, addr, self.classify(addr))
            link = QuicLink(self, conn, addr, False, path)
            self._links[header.destination_cid] = link
            self._links[conn.host_cid] = link
            self._on_incoming(link)
        elif via is None and link.path.relayed:
            # a relayed connection that now hears from the peer directly (a punch
            # succeeded on its side): move to the direct path once it proves authentic
            before = link.largest_received()
            link.datagram(data, now)
            if link.largest_received() > before:
                link.path = DirectPath(self._sendto, addr, PathKind.PUNCHED)
            self.mark_dirty(link)
            return
        elif via is None and link.path.addr != addr and link.path.same_socket(self._sendto):
            # The peer's address changed (NAT rebinding, a laptop on a new network):
            # answer where its packets now come from, once one of them has proved
            # authentic and new (a replayed or forged packet moves nothing).
            before = link.largest_received()
            link.datagram(data, now)
            if link.largest_received() > before:
                link.path.addr = addr
            self.mark_dirty(link)
            return
        link.datagram(data, now)
        self.mark_dirty(link)  # flushed once this loop turn's datagrams are in

    def mark_dirty(self, link: QuicLink) -> None:
        self._dirty.add(link)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._dirty:
            return
        now = self.loop.time()
        dirty, self._dirty = self._dirty, set()
        for link in dirty:
            link.transmit(now)
            if link.conn._state == QuicConnectionState.TERMINATED:
                link._terminated(link.close_reason or "closed")

    def register_cid(self, cid: bytes, link: QuicLink) -> None:
        self._links[cid] = link

    def unregister_cid(self, cid: bytes) -> None:
        self._links.pop(cid, None)

    def forget(self, link: QuicLink) -> None:
        for cid in [c for c, l in self._links.items() if l is link]:
            del self._links[cid]
        self._dirty.discard(link)

    def close_all(self, reason: str = "node stopping") -> None:
        for link in self.links:
            link.close(0, reason)
        self.flush()


def random_nonce() -> bytes:
    return os.urandom(32)
