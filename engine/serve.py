"""Serving blocks to peers: bounded request queues, bounded send backlog.

A peer may have at most MAX_QUEUED requests waiting; more is a protocol
violation. Blocks are read only when the connection's unsent backlog is below
what the connection sends in BACKLOG_SECONDS at its current rate (at least
MIN_BACKLOG, at most the high-water mark), so memory stays bounded however
fast peers ask, and requests wait here, where a CANCEL still reaches them,
rather than in QUIC's send buffer. A CANCEL drops a request that is still
queued (a clone in its endgame asked several peers for the same block and has
it now, or another clone announced the block and the request moved there).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Protocol

from . import wire
from .bandwidth import Throttle
from .peer import ERR_PROTOCOL, PeerConnection
from .transport.quic import HIGH_WATER

MAX_QUEUED = 2048
MIN_BACKLOG = 64 * 1024
BACKLOG_SECONDS = 0.25


def backlog_limit(rate: float) -> int:
    """Unsent bytes to keep queued in QUIC for a connection sending `rate` bytes/s."""
    return int(min(HIGH_WATER, max(MIN_BACKLOG, rate * BACKLOG_SECONDS)))


class BlockSource(Protocol):
    def read_block(self, version: int, file: int, block: int) -> tuple[bytes, list[bytes]] | None: ...


class BlockServer:
    def __init__(self, source: BlockSource, throttle: Throttle | None = None) -> None:
        self.source = source
        self.blocks_sent = 0
        self.bytes_sent = 0
        #: the upload limit shared by every transfer of the engine (None: none)
        self.throttle = throttle
        self._wakeups: dict[PeerConnection, asyncio.TimerHandle] = {}

    @staticmethod
    def _queue(peer: PeerConnection) -> deque:
        q = peer.app.get("serve_queue")
        if q is None:
            q = peer.app["serve_queue"] = deque()
        return q

    def request(self, peer: PeerConnection, req: wire.Request) -> None:
        q = self._queue(peer)
        if len(q) >= MAX_QUEUED:
            peer.close(ERR_PROTOCOL, "too many requests queued")
            return
        q.append((req.version, req.file, req.block))
        self.pump(peer)

    def cancel(self, peer: PeerConnection, req: wire.Cancel) -> None:
        q = self._queue(peer)
        try:
            q.remove((req.version, req.file, req.block))
        except ValueError:
            pass

    def pump(self, peer: PeerConnection) -> None:
        q = peer.app.get("serve_queue")
        if not q:
            return
        now = time.monotonic()
        limit = backlog_limit(peer.up.rate(now))
        while q and peer.backlog < limit and not peer.link.closed and self.may_send(peer, now):
            version, file, block = q.popleft()
            got = self.source.read_block(version, file, block)
            if got is None:
                peer.send(wire.NoData(version, file, block))
                continue
            data, proof = got
            peer.send_raw(wire.encode_data_header(version, file, block, proof, len(data)) + data)
            peer.blocks_up += 1
            self.blocks_sent += 1
            self.bytes_sent += len(data)
            self.sent(peer, len(data), now)
        peer.up.add(0, now)

    # the upload limit: may a block go now, and what it spent
    def may_send(self, peer: PeerConnection, now: float) -> bool:
        t = self.throttle
        if t is None or t.allow(now):
            return True
        if peer not in self._wakeups:  # serve the rest when the limit allows
            def again() -> None:
                self._wakeups.pop(peer, None)
                if not peer.link.closed:
                    self.pump(peer)
            self._wakeups[peer] = asyncio.get_running_loop().call_later(t.wait(now), again)
        return False

    def sent(self, peer: PeerConnection, nbytes: int, now: float) -> None:
        if self.throttle is not None:
            self.throttle.spend(nbytes, now)


MANIFEST_CHUNK = 256 * 1024


def manifest_parts(version: int, encoded: bytes):
    """The parts of a version's encoding, cut one at a time (a share reads each
    from its database: a million-file manifest is never whole in memory here)."""
    for off in range(0, max(len(encoded), 1), MANIFEST_CHUNK):
        yield wire.ManifestPart(version, len(encoded), off, encoded[off:off + MANIFEST_CHUNK])


def manifest_frames(version: int, encoded: bytes, signature: bytes) -> list:
    """A signed version as frames: its parts, then its signature."""
    return [*manifest_parts(version, encoded), wire.ManifestSignature(version, signature)]


def send_manifest(peer: PeerConnection, version: int, encoded: bytes, signature: bytes,
                  have_version: int, summary: list | None = None) -> None:
    """The signed manifest in parts (only when the peer has another version),
    its signature, then what the sender serves of that version: the frames of
    `summary` (HAVE_ALL or BITFIELD, then HAVE_BLOCKS), or HAVE_ALL when it is
    None (a share serves every file)."""
    if have_version != version:
        for f in manifest_parts(version, encoded):
            peer.send(f)
    peer.send(wire.ManifestSignature(version, signature))
    if summary is None:
        peer.send(wire.HaveAll(version))
    else:
        peer.send_raw(b"".join(wire.encode(f) for f in summary))
