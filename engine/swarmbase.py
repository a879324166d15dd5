"""What shares and clones have in common: their peers, identity and status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from . import wire
from .events import PeerStatus, Role, State, TransferStatus
from .keys import discovery_key, format_link
from .peer import PeerConnection


class SwarmBase:
    role: Role

    def __init__(self, public_key: bytes, folder: Path, emit: Callable) -> None:
        self.public_key = public_key
        self.dkey = discovery_key(public_key)
        self.tid = self.dkey.hex()[:16]
        self.folder = folder
        self.emit = emit
        self.loop = asyncio.get_running_loop()
        self.peers: list[PeerConnection] = []
        self.started = time.monotonic()
        self.state = State.SEARCHING
        self.message = ""
        self.wants_peers = True
        self.pex = None  # the node's peer exchange (engine/traversal/pex.py), if on

    @property
    def link(self) -> str:
        return format_link(self.public_key)

    def attach(self, peer: PeerConnection) -> None:
        self.peers.append(peer)
        if self.pex is not None:
            self.pex.attached(self, peer)

    def detach(self, peer: PeerConnection, reason: str) -> None:
        if peer in self.peers:
            self.peers.remove(peer)

    def paused(self) -> None:
        """Its peers are closed and it is no longer announced (engine pause)."""

    def common_frame(self, peer: PeerConnection, frame) -> None:
        if isinstance(frame, wire.Ping) and type(frame) is wire.Ping:
            peer.send(wire.Pong(frame.token))
        elif isinstance(frame, wire.Close):
            peer.close(0, frame.reason or "peer closed")
        elif isinstance(frame, (wire.Pex, wire.PunchRequest, wire.PunchIntro)):
            if self.pex is not None:
                self.pex.frame(self, peer, frame)

    def peer_statuses(self) -> tuple[PeerStatus, ...]:
        now = time.monotonic()
        out = []
        for p in self.peers:
            out.append(PeerStatus(
                peer_id=p.peer_id, address=p.address, path=p.path, rtt_ms=p.link.rtt * 1000,
                rate_down=p.down.rate(now), rate_up=p.up.rate(now),
                bytes_down=p.down.total, bytes_up=p.up.total,
                blocks_down=p.blocks_down, blocks_up=p.blocks_up,
                connected_seconds=now - (p.connected_at or now),
                datagram_size=p.link.datagram_size, **self.peer_extra(p, now)))
        return tuple(out)

    def peer_extra(self, peer: PeerConnection, now: float) -> dict:
        """More PeerStatus fields for one peer (the share: what the peer holds)."""
        return {}

    def leave_reason(self, peer: PeerConnection, reason: str) -> str:
        """Why a peer left, as front ends should say it."""
        return reason

    def _status(self, **kw) -> TransferStatus:
        peers = self.peer_statuses()
        return TransferStatus(
            tid=self.tid, role=self.role, path=str(self.folder), link=self.link,
            peers=peers, rate_down=sum(p.rate_down for p in peers),
            rate_up=sum(p.rate_up for p in peers), message=self.message,
            elapsed=time.monotonic() - self.started, **kw)

    async def close(self) -> None:
        for p in list(self.peers):
            p.close(0, "stopped")
