"""One peer connection: the application handshake, then frames to its swarm.

A `PeerConnection` is the handler of one `QuicLink`. Before the proof of the
share key checks out it accepts only HELLO and AUTH; any other frame, a bad
proof, an unknown discovery key or a handshake slower than HANDSHAKE_TIMEOUT
closes the connection with nothing sent.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING

from . import handshake, wire
from .errors import ProtocolError
from .events import PathKind
from .ratemeter import RateMeter
from .transport.quic import QuicLink, random_nonce

if TYPE_CHECKING:
    from .node import Node

HANDSHAKE_TIMEOUT = 10.0
ERR_AUTH = 0x101
ERR_PROTOCOL = 0x102
ERR_BAD_BLOCK = 0x103
ERR_GONE = 0x104


class PeerState(enum.Enum):
    HANDSHAKE = "handshake"
    READY = "ready"
    CLOSED = "closed"


class PeerConnection:
    def __init__(self, node: "Node", link: QuicLink, *,
                 dkey: bytes | None = None, source: str = "") -> None:
        self.node = node
        self.link = link
        self.source = source
        self.dkey = dkey
        self.swarm = None
        self.state = PeerState.HANDSHAKE
        self.remote_id = b""
        self._nonce = random_nonce()
        self._peer_nonce = b""
        self._decoder = wire.FrameDecoder()
        self.down = RateMeter()
        self.up = RateMeter()
        self.blocks_down = 0
        self.blocks_up = 0
        self.connected_at: float | None = None
        self.connect_seconds = 0.0
        self.began = link.started  # when we started reaching this peer (a punch may come first)
        self.closed_reason = ""
        self.close_code: int | None = None  # the code we closed it with, if we did
        self.last_heard = time.monotonic()  # when any byte last arrived
        self.duplicate = False  # closed as the second connection to a peer we have
        self.app: dict = {}  # per-swarm state (requests in flight, queues)
        link.handler = self
        node.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_deadline)

    # ---- identity ------------------------------------------------------------
    @property
    def path(self) -> PathKind:
        """How this connection travels now (it can move from a relay to a punched path)."""
        return self.link.path.kind

    @property
    def peer_id(self) -> str:
        return self.remote_id.hex()[:8] if self.remote_id else "?"

    @property
    def address(self) -> str:
        host, port = self.link.addr[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # ---- sending ---------------------------------------------------------------
    def send(self, frame) -> None:
        data = wire.encode(frame)
        self.up.add(len(data), time.monotonic())
        self.link.send(data)

    def send_raw(self, data: bytes) -> None:
        self.up.add(len(data), time.monotonic())
        self.link.send(data)

    @property
    def backlog(self) -> int:
        return self.link.backlog

    def close(self, code: int, reason: str) -> None:
        self.closed_reason = self.closed_reason or reason
        if self.close_code is None and not self.link.closed:
            self.close_code = code
        self.link.close(code, reason)

    # ---- LinkHandler -----------------------------------------------------------
    def link_established(self, link: QuicLink) -> None:
        self.node.answered.add(link.addr)
        if not link.initiator:
            return
        swarm = self.node.swarms.get(self.dkey)
        if swarm is None:
            self.close(ERR_GONE, "no longer interested")
            return
        ident = self.node.identity
        msg = handshake.client_message(self.dkey, self._nonce, ident.public, link.peer_cert_key)
        mac, sig = handshake.prove(swarm.public_key, msg, ident.sign)
        self.send(wire.Hello(wire.PROTOCOL_VERSION, self.dkey, self._nonce, ident.public))
        self.send(wire.Auth(mac, sig))

    def link_data(self, link: QuicLink, data: bytes) -> None:
        if self.state is PeerState.CLOSED:
            return
        self.last_heard = time.monotonic()
        if self.state is PeerState.READY:
            self.down.add(len(data), time.monotonic())
        try:
            for frame in self._decoder.feed(data):
                if self.state is PeerState.READY:
                    self.swarm.on_frame(self, frame)
                else:
                    self._handshake_frame(frame)
                if self.state is PeerState.CLOSED or link.closed:
                    return
        except ProtocolError as exc:
            self.close(ERR_PROTOCOL, f"protocol error: {exc}")

    def link_writable(self, link: QuicLink) -> None:
        if self.state is PeerState.READY and self.swarm is not None:
            self.swarm.on_writable(self)

    def link_closed(self, link: QuicLink, reason: str) -> None:
        was_ready = self.state is PeerState.READY
        self.state = PeerState.CLOSED
        self.closed_reason = self.closed_reason or reason
        if was_ready and self.swarm is not None:
            self.swarm.detach(self, self.closed_reason)
        self.node.peer_closed(self, was_ready)

    # ---- handshake -------------------------------------------------------------
    def _handshake_deadline(self) -> None:
        if self.state is PeerState.HANDSHAKE:
            self.close(ERR_AUTH, "handshake timed out")
            self.node.endpoint.flush()

    def _handshake_frame(self, frame) -> None:
        initiator = self.link.initiator
        if isinstance(frame, wire.Hello):
            if self._peer_nonce:
                raise ProtocolError("second HELLO")
            if frame.version != wire.PROTOCOL_VERSION:
                self.close(ERR_PROTOCOL, f"peer speaks protocol {frame.version}, we speak "
                                         f"{wire.PROTOCOL_VERSION}: both sides need the same dattui")
                return
            if initiator and frame.discovery_key != self.dkey:
                raise ProtocolError("HELLO for another share")
            if not initiator:
                if self.node.swarms.get(frame.discovery_key) is None:
                    self.close(ERR_AUTH, "")  # unknown share: nothing but a close
                    return
                self.dkey = frame.discovery_key
            self._peer_nonce = frame.nonce
            self.remote_id = frame.node_id
        elif isinstance(frame, wire.Auth):
            if not self._peer_nonce:
                raise ProtocolError("AUTH before HELLO")
            self._check_auth(frame)
        else:
            raise ProtocolError(f"{type(frame).__name__} before the handshake finished")

    def _check_auth(self, frame: wire.Auth) -> None:
        swarm = self.node.swarms.get(self.dkey)
        if swarm is None:
            self.close(ERR_GONE, "")
            return
        ident = self.node.identity
        if self.link.initiator:
            if self.remote_id != self.link.peer_cert_key:
                self.close(ERR_AUTH, "peer's node id does not match its TLS certificate")
                return
            msg = handshake.server_message(self.dkey, self._nonce, self._peer_nonce,
                                           ident.public, self.remote_id)
        else:
            msg = handshake.client_message(self.dkey, self._peer_nonce, self.remote_id, ident.public)
        if not handshake.check(swarm.public_key, msg, frame.mac, frame.signature, self.remote_id):
            self.close(ERR_AUTH, "")  # cannot prove it knows the link: nothing but a close
            return
        if not self.link.initiator:
            reply = handshake.server_message(self.dkey, self._peer_nonce, self._nonce,
                                             self.remote_id, ident.public)
            mac, sig = handshake.prove(swarm.public_key, reply, ident.sign)
            self.send(wire.Hello(wire.PROTOCOL_VERSION, self.dkey, self._nonce, ident.public))
            self.send(wire.Auth(mac, sig))
        if self.remote_id == ident.public:
            self.close(ERR_GONE, "connected to itself")
            return
        self.state = PeerState.READY
        self.connected_at = time.monotonic()
        self.connect_seconds = self.connected_at - self.began
        self.swarm = swarm
        self.node.peer_ready(self)
        swarm.attach(self)
