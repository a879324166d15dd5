"""A clone's lane as its swarm sees it: one more peer (a seed), whose frames
come through a pipe from a lane process (clone_lane.py) instead of from a QUIC
link of this process, and whose blocks arrive verified already."""

from __future__ import annotations

import time

from .. import wire
from ..events import PathKind
from ..peer import PeerState
from ..ratemeter import RateMeter
from . import pipe
from .process import LaneProcess

# the peer's frames a clone's swarm takes from a lane (anything else is dropped:
# a lane's peer is a share serving one version, not a peer to exchange peers with)
FORWARDED = (wire.HaveAll, wire.Bitfield, wire.Have, wire.HaveBlocks, wire.NoData,
             wire.ManifestPart, wire.ManifestSignature, wire.NewVersion, wire.Ping, wire.Pong,
             wire.Close)


class LanePath:
    relayed = False

    def __init__(self, addr, kind: PathKind) -> None:
        self.addr = addr
        self.kind = kind


class LaneLink:
    """What a swarm reads of a peer's link, reported by the lane a few times a second."""

    initiator = True

    def __init__(self, addr, kind: PathKind) -> None:
        self.addr = addr
        self.path = LanePath(addr, kind)
        self.closed = False
        self.rtt = 0.0
        self.datagram_size = 0


class LanePeer:
    def __init__(self, swarm, index: int, addr, kind: PathKind, parent) -> None:
        self.swarm = swarm
        self.index = index
        self.parent = parent  # the connection to the share whose lane this is
        self.link = LaneLink(addr, kind)
        self.source = "lane"
        self.remote_id = b""  # never offered to peer exchange
        self.state = PeerState.HANDSHAKE
        self.app: dict = {}
        self.down = RateMeter()
        self.up = RateMeter()
        self.blocks_down = 0
        self.blocks_up = 0
        self.began = time.monotonic()
        self.connected_at: float | None = None
        self.connect_seconds = 0.0
        self.closed_reason = ""
        self.process = LaneProcess(self._message, self._exited)

    async def start(self, config: dict, manifest_frames: list) -> None:
        await self.process.start(config)
        for f in manifest_frames:
            self.process.send(f)

    @property
    def peer_id(self) -> str:
        return f"lane{self.index}"

    @property
    def path(self) -> PathKind:
        return self.link.path.kind

    @property
    def address(self) -> str:
        host, port = self.link.addr[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def backlog(self) -> int:
        return 0

    # ---- to the lane's peer ----------------------------------------------------------
    def send(self, frame) -> None:
        self.send_raw(wire.encode(frame))

    def send_raw(self, data: bytes) -> None:
        if not self.link.closed:
            self.up.add(len(data), time.monotonic())
            self.process.send_raw(data)

    def close(self, code: int, reason: str) -> None:
        self.closed_reason = self.closed_reason or reason
        self.link.closed = True
        self.process.kill()  # its pipe closes: _exited follows

    # ---- from the lane ------------------------------------------------------------
    def _message(self, msg) -> None:
        if self.link.closed:
            return
        t = type(msg)
        if t is pipe.Verified:
            self.down.add(len(msg.data), time.monotonic())
            self.swarm.on_verified(self, msg)
        elif t is pipe.LaneStats:
            self.link.rtt = float(msg.body.get("rtt", 0.0))
            self.link.datagram_size = int(msg.body.get("datagram_size", 0))
        elif t is pipe.LaneReady:
            self.state = PeerState.READY
            self.connected_at = time.monotonic()
            self.connect_seconds = self.connected_at - self.began
            self.swarm.lane_ready(self)
        elif t is pipe.BadBlock:
            self.swarm.lane_bad_block(self, msg.file, msg.block)
        elif t is pipe.LaneClosed:
            self.close(0, msg.reason)
        elif isinstance(msg, FORWARDED) and self.state is PeerState.READY:
            self.swarm.on_frame(self, msg)

    def _exited(self) -> None:
        self.link.closed = True
        was_ready = self.state is PeerState.READY
        self.state = PeerState.CLOSED
        self.closed_reason = self.closed_reason or "lane exited"
        self.swarm.lane_closed(self, was_ready)
