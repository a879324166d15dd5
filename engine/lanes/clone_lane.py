"""A clone's lane process: one QUIC connection to one of a share's lane ports.
It passes the peer's frames to the main process and the main process's frames
(requests, cancels) to the peer, except DATA: every block is checked against
the signed tree here and goes up as VERIFIED (with its leaf hash), or the
connection ends (BAD_BLOCK). It writes nothing to disk: the main process does,
so one process alone owns the clone's files and state."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .. import manifest as mf
from .. import wire
from ..events import PathKind, Role
from ..peer import ERR_BAD_BLOCK, PeerConnection
from ..swarmbase import SwarmBase
from . import pipe
from .worker import lane_node, report

CONNECT_TIMEOUT = 10.0
MAX_BUFFERED = 64 * 1024 * 1024  # verified bytes waiting for the main process to read them


class LaneClone(SwarmBase):
    role = Role.CLONE

    def __init__(self, public_key: bytes, end) -> None:
        super().__init__(public_key, Path("."), lambda e: None)
        self.end = end
        self.manifest: mf.Manifest | None = None
        self.version = 0
        self.peer: PeerConnection | None = None
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self.dropped = 0  # DATA of another version
        self._parts = pipe.ManifestParts()

    def told(self, msg) -> None:
        """From the main process: first the version to verify against, then
        frames for the peer."""
        if self.manifest is None:
            got = self._parts.feed(msg)
            if got is not None:
                self.version, encoded, _ = got
                self.manifest = mf.decode(encoded)
        elif self.peer is not None and not self.peer.link.closed:
            self.peer.send(msg)

    # ---- the swarm's part of the peer connection ------------------------------------
    def attach(self, peer: PeerConnection) -> None:
        super().attach(peer)
        self.peer = peer
        self.ready.set()
        self.end.send(pipe.LaneReady())

    def detach(self, peer: PeerConnection, reason: str) -> None:
        super().detach(peer, reason)
        self.end.send(pipe.LaneClosed(reason))
        self.ended.set()

    def on_writable(self, peer: PeerConnection) -> None:
        pass

    def on_frame(self, peer: PeerConnection, frame) -> None:
        if type(frame) is not wire.Data:
            self.end.send(frame)
            return
        if frame.version != self.version:
            self.dropped += 1
            return
        leaf = mf.block_leaf(self.manifest, frame.file, frame.block, frame.data, frame.proof)
        if leaf is None:
            self.end.send(pipe.BadBlock(frame.file, frame.block))
            peer.close(ERR_BAD_BLOCK, "sent a block that does not match the signed tree")
            return
        self.end.send_many(pipe.encode_verified_header(
            frame.version, frame.file, frame.block, leaf, frame.proof, len(frame.data)), frame.data)
        if self.end.buffered > MAX_BUFFERED:
            peer.close(ERR_BAD_BLOCK, "more blocks than were asked for")

    def stats(self) -> dict:
        link = self.peer.link if self.peer else None
        return {"rtt": link.rtt if link else 0.0,
                "datagram_size": link.datagram_size if link else 0}


async def run(config: dict, end, inbox) -> None:
    swarm = LaneClone(bytes.fromhex(config["public_key"]), end)
    inbox.take(swarm.told)
    host, port = config["peer_host"], int(config["peer_port"])
    node = lane_node(config, "::" if ":" in host else "0.0.0.0")
    await node.start()
    try:
        node.add_swarm(swarm)
        node.dial(swarm.dkey, (host, port), PathKind(config.get("path", "direct")), "lane")
        try:
            await asyncio.wait_for(swarm.ready.wait(), CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            end.send(pipe.LaneClosed(f"no answer from lane port {port}"))
            return
        await report(end, swarm.stats, swarm.ended, inbox.gone)
    finally:
        if swarm.peer is not None:
            swarm.peer.close(0, "lane stopped")
        await node.close()
