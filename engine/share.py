"""The sharing side: scan a folder, sign its manifest, serve verified blocks."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import manifest as mf
from . import scan, wire
from .blocksource import FileBlockSource
from .collaborators import Collaborators
from .events import (FileProgress, Logged, PeerStatus, Role, ScanProgressed, State, SymlinkSkipped,
                     TransferStatus, VersionPublished)
from .lanes.share_lanes import ShareLanes
from .keys import ShareKey
from .peer import PeerConnection
from .serve import BlockServer, send_manifest
from .store import ShareDB
from .swarmbase import SwarmBase



class ShareServer(SwarmBase):
    """Serving one signed version of a shared folder to authenticated peers:
    the share itself, and each of its lane processes (engine/lanes/)."""

    role = Role.SHARE

    def __init__(self, public_key: bytes, folder: Path, db: ShareDB, emit: Callable,
                 changed: Callable[[], None] = lambda: None) -> None:
        super().__init__(public_key, folder, emit)
        self.db = db
        self.version = 0
        self.manifest: mf.Manifest | None = None
        self.encoded = b""
        self.signature = b""
        self.blocks = FileBlockSource(self._open, lambda i, e: self.db.leaves(e.path), changed)
        self.server = BlockServer(self)
        self.collaborators = Collaborators(self.tid, lambda: self.manifest, emit)

    def _set_manifest(self, m: mf.Manifest, encoded: bytes, sig: bytes) -> None:
        self.manifest, self.encoded, self.signature, self.version = m, encoded, sig, m.version
        self.blocks.reset()

    def _open(self, path: str) -> int:
        return os.open(self.folder / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def read_block(self, version: int, file: int, block: int) -> tuple[bytes, list[bytes]] | None:
        if self.manifest is None or version != self.version:
            return None
        return self.blocks.read(self.manifest, file, block)

    def on_frame(self, peer: PeerConnection, frame) -> None:
        if isinstance(frame, wire.Request):
            if type(frame) is wire.Cancel:
                self.server.cancel(peer, frame)
            elif type(frame) is wire.Request:
                self.server.request(peer, frame)
        elif isinstance(frame, wire.GetManifest):
            self.send_manifest(peer, frame.have_version)
        elif isinstance(frame, wire.Progress):
            self.collaborators.progress(peer, frame)
        else:
            self.common_frame(peer, frame)

    def on_writable(self, peer: PeerConnection) -> None:
        self.server.pump(peer)

    def peer_extra(self, peer: PeerConnection, now: float) -> dict:
        return self.collaborators.status_of(peer, now)

    def leave_reason(self, peer: PeerConnection, reason: str) -> str:
        return self.collaborators.leave_reason(peer, reason)

    def send_manifest(self, peer: PeerConnection, have_version: int) -> None:
        if self.manifest is not None:  # still scanning: peers hear NewVersion when published
            send_manifest(peer, self.version, self.encoded, self.signature, have_version)

    async def close(self) -> None:
        self.blocks.close()
        await super().close()
        self.db.close()


class ShareSwarm(ShareServer):
    def __init__(self, folder: Path, key: ShareKey, db: ShareDB, emit: Callable, *,
                 block_size: int = mf.DEFAULT_BLOCK_SIZE, include_hidden: bool = False,
                 rescan_interval: float = 10.0, lanes: int = 0, lane_options: dict | None = None) -> None:
        self._rescan_soon = asyncio.Event()
        super().__init__(key.public, folder, db, emit, self._rescan_soon.set)
        self.key = key
        self.block_size = block_size
        self.include_hidden = include_hidden
        self.rescan_interval = rescan_interval
        self.state = State.SCANNING
        self._scan_lock = asyncio.Lock()
        self._cancel = threading.Event()
        self._rescan_task: asyncio.Task | None = None
        self.scan_progress = (0, 0)
        self.symlinks: list[str] = []
        self._published = False
        self.lanes = ShareLanes(self, lanes, lane_options or {}) if lanes > 0 else None

    # ---- scanning and publishing ---------------------------------------------------
    async def publish(self) -> bool:
        """Scan the folder; sign and store a new version if anything changed."""
        async with self._scan_lock:
            previous = {p: scan.ScannedFile(p, r[0], r[1], r[2], r[4], r[3])
                        for p, r in self.db.scanned().items()}
            last_emit = [0.0]

            def progress(files: int, nbytes: int) -> None:
                self.scan_progress = (files, nbytes)
                now = time.monotonic()
                if now - last_emit[0] > 0.2:
                    last_emit[0] = now
                    self.loop.call_soon_threadsafe(self.emit, ScanProgressed(self.tid, files, nbytes))

            result = await asyncio.to_thread(
                scan.scan, self.folder, self.block_size, include_hidden=self.include_hidden,
                previous=previous, progress=progress, cancel=self._cancel)
            for link in result.symlinks:
                if link not in self.symlinks:
                    self.emit(SymlinkSkipped(self.tid, link))
            self.symlinks = list(result.symlinks)
            for path, reason in result.skipped:
                self.emit(Logged(self.tid, "warning", f"skipped {path}: {reason}"))
            latest = self.db.latest_manifest()
            name = self.folder.name
            candidate = scan.to_manifest(result, 0, self.block_size, name)
            changed = True
            if latest is not None:
                old = mf.decode(latest[1])
                changed = old.entries != candidate.entries or old.block_size != self.block_size
            if changed:
                version = (latest[0] if latest else 0) + 1
                m = scan.to_manifest(result, version, self.block_size, name)
                encoded, sig = mf.sign(m, self.key)
                self.db.replace_scanned([(f.path, f.size, f.mode, f.mtime_ns, f.root, f.leaves)
                                         for f in result.files])
                self.db.save_manifest(version, encoded, sig)
            else:
                version, encoded, sig = latest
                m = mf.decode(encoded)
                self.db.replace_scanned([(f.path, f.size, f.mode, f.mtime_ns, f.root, f.leaves)
                                         for f in result.files])
            self._set_manifest(m, encoded, sig)
            if self.lanes is not None and changed:
                self.lanes.publish()
            self.state = State.SEEDING
            first = not self._published
            self._published = True
            if changed or first:
                self.emit(VersionPublished(self.tid, m.version, len(m.files), m.total_bytes))
                for peer in self.peers:
                    peer.send(wire.NewVersion(m.version))
            return changed

    def start_rescans(self) -> None:
        if self._rescan_task is None and self.rescan_interval > 0:
            self._rescan_task = asyncio.ensure_future(self._rescan_loop())

    async def _rescan_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._rescan_soon.wait(), self.rescan_interval)
            except asyncio.TimeoutError:
                pass
            self._rescan_soon.clear()
            try:
                await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving the last good version
                self.emit(Logged(self.tid, "error", f"rescan failed: {exc}"))

    # ---- lanes ---------------------------------------------------------------------
    def attach(self, peer: PeerConnection) -> None:
        super().attach(peer)
        if self.lanes is not None and self.manifest is not None:
            self.lanes.offer(peer)

    def file_progress(self) -> list[FileProgress]:
        m = self.manifest
        return [FileProgress(e.path, e.size, e.size) for e in m.files] if m else []

    def status(self) -> TransferStatus:
        m = self.manifest
        files, nbytes = (len(m.files), m.total_bytes) if m else self.scan_progress
        return self._status(
            state=self.state, version=self.version, files_total=files, files_done=files,
            bytes_total=nbytes, bytes_have=nbytes,
            bytes_sent=self.server.bytes_sent + (self.lanes.bytes_sent if self.lanes else 0))

    def paused(self) -> None:
        """Its lanes stop serving too; a peer after the resume starts new ones."""
        if self.lanes is not None:
            old, self.lanes = self.lanes, ShareLanes(self, self.lanes.count, self.lanes.options)
            self.lanes._gone_bytes = old.bytes_sent  # still counted as sent
            asyncio.ensure_future(old.close())

    def peer_statuses(self) -> tuple[PeerStatus, ...]:
        mine = super().peer_statuses()
        return mine + self.lanes.peer_statuses() if self.lanes else mine

    async def close(self) -> None:
        self._cancel.set()
        if self._rescan_task:
            self._rescan_task.cancel()
        if self.lanes is not None:
            await self.lanes.close()
        await super().close()
