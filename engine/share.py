"""The sharing side: scan a folder, sign its manifest, serve verified blocks."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
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
from .serve import MANIFEST_CHUNK, BlockServer, manifest_parts, send_manifest
from .store import ShareDB, StoredManifest
from .swarmbase import SwarmBase



ENTRY_CACHE = 256  # entries kept between requests (their leaves included)
RESCAN_DUTY = 10   # rescans wait at least 9x as long as the last scan took
MANIFEST_BACKLOG = 4 * MANIFEST_CHUNK  # manifest bytes queued to a peer at most


@dataclass(frozen=True)
class Published:
    """What a share knows of the version it serves, besides the database."""
    version: int
    block_size: int
    files: int
    total_bytes: int
    encoded_length: int = 0


class ShareServer(SwarmBase):
    """Serving one signed version of a shared folder to authenticated peers:
    the share itself, and each of its lane processes (engine/lanes/).

    A request finds its entry (path, size, root, leaves) in the version's table
    in the database, through a small cache, and the encoded manifest is read
    from there in parts when a peer is sent it: neither is held, so memory does
    not grow with the number of files (but for the parts queued to a peer that
    is being sent the manifest)."""

    role = Role.SHARE

    def __init__(self, public_key: bytes, folder: Path, db: ShareDB, emit: Callable,
                 changed: Callable[[], None] = lambda: None) -> None:
        super().__init__(public_key, folder, emit)
        self.db = db
        self.version = 0
        self.published: Published | None = None
        self._manifest: mf.Manifest | None = None
        self.encoded = b""
        self.signature = b""
        self._entries: OrderedDict[int, tuple[mf.Entry, bytes | None] | None] = OrderedDict()
        self.blocks = FileBlockSource(self._open, self._leaves, changed)
        self.server = BlockServer(self)
        self.collaborators = Collaborators(self.tid, lambda: self.manifest, emit)

    @property
    def manifest(self) -> mf.Manifest | None:
        """The served version decoded whole (an object per entry): for tests and
        tools; serving never needs it."""
        if self._manifest is None and self.encoded:
            self._manifest = mf.decode(bytes(self.encoded))
        return self._manifest

    @manifest.setter
    def manifest(self, m: mf.Manifest | None) -> None:
        self._manifest = m

    def _set_version(self, published: Published, encoded: bytes, sig: bytes) -> None:
        self.published, self.version = published, published.version
        self.encoded, self.signature, self._manifest = encoded, sig, None
        self._entries.clear()
        self.blocks.reset()

    def _set_stored(self, p: Published) -> None:
        """Serve a version stored in the database; its encoding stays there."""
        self._set_version(p, StoredManifest(self.db.conn, p.version, p.encoded_length),
                          self.db.signature(p.version))

    def _published_from_db(self, encoded: bytes) -> Published:
        version, block_size = mf.peek(encoded)
        _, files, nbytes = self.db.totals(version)
        return Published(version, block_size, files, nbytes, len(encoded))

    def _entry(self, file: int) -> tuple[mf.Entry, bytes | None] | None:
        if file in self._entries:
            self._entries.move_to_end(file)
            return self._entries[file]
        row = self.db.entry(self.version, file)
        got = None
        if row is not None:
            kind, path, mode, mtime_ns, size, root, leaves = row
            got = (mf.Entry(mf.Kind(kind), path, mode, mtime_ns, size, root), leaves)
        self._entries[file] = got
        if len(self._entries) > ENTRY_CACHE:
            self._entries.popitem(last=False)
        return got

    def _leaves(self, file: int, entry: mf.Entry) -> bytes | None:
        got = self._entry(file)
        return got[1] if got is not None and got[0] == entry else None

    def _open(self, path: str) -> int:
        return os.open(self.folder / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def read_block(self, version: int, file: int, block: int) -> tuple[bytes, list[bytes]] | None:
        if self.published is None or version != self.version:
            return None
        got = self._entry(file)
        if got is None:
            return None
        return self.blocks.read_entry(self.published.block_size, file, got[0], block)

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
        self._push_manifest(peer)
        self.server.pump(peer)

    def peer_extra(self, peer: PeerConnection, now: float) -> dict:
        return self.collaborators.status_of(peer, now)

    def leave_reason(self, peer: PeerConnection, reason: str) -> str:
        return self.collaborators.leave_reason(peer, reason)

    def send_manifest(self, peer: PeerConnection, have_version: int) -> None:
        if self.published is None:  # still scanning: peers hear NewVersion when published
            return
        if have_version == self.version:
            send_manifest(peer, self.version, self.encoded, self.signature, have_version)
            return
        # the parts go out as the connection drains, read from the database one
        # at a time: queued whole, a million-file manifest (70 MB) sat in QUIC's
        # send buffer
        peer.app["manifest_out"] = (self.version, manifest_parts(self.version, self.encoded))
        self._push_manifest(peer)

    def _push_manifest(self, peer: PeerConnection) -> None:
        out = peer.app.get("manifest_out")
        while out is not None and peer.backlog < MANIFEST_BACKLOG and not peer.link.closed:
            version, parts = out
            part = next(parts, None) if version == self.version else None
            if part is not None:
                peer.send(part)
                continue
            del peer.app["manifest_out"]
            out = None
            if version == self.version:  # else a NewVersion has gone out: it asks again
                send_manifest(peer, version, self.encoded, self.signature, version)

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
        self.scan_seconds = 0.0  # how long the last scan took
        self.symlinks: list[str] = []
        self._published = False
        self.lanes = ShareLanes(self, lanes, lane_options or {}) if lanes > 0 else None

    # ---- scanning and publishing ---------------------------------------------------
    async def publish(self) -> bool:
        """Scan the folder; sign and store a new version if anything changed."""
        async with self._scan_lock:
            last_emit = [0.0]

            def progress(files: int, nbytes: int) -> None:
                self.scan_progress = (files, nbytes)
                now = time.monotonic()
                if now - last_emit[0] > 0.2:
                    last_emit[0] = now
                    self.loop.call_soon_threadsafe(self.emit, ScanProgressed(self.tid, files, nbytes))

            latest = self.db.latest_head()
            t0 = time.monotonic()
            result = await asyncio.to_thread(self._scan, latest, progress)
            self.scan_seconds = time.monotonic() - t0
            summary, published, changed = result
            for link in summary.symlinks:
                if link not in self.symlinks:
                    self.emit(SymlinkSkipped(self.tid, link))
            self.symlinks = list(summary.symlinks)
            for path, reason in summary.skipped:
                self.emit(Logged(self.tid, "warning", f"skipped {path}: {reason}"))
            if changed:
                self.db.prune(published.version)
                self._set_stored(published)
            elif self.published is None:  # first scan of a share that published before
                v = latest[0]
                _, files, nbytes = self.db.totals(v)
                self._set_stored(Published(v, self.block_size, files, nbytes, self.db.manifest_length(v)))
            if self.lanes is not None and changed:
                self.lanes.publish()
            self.state = State.SEEDING
            first = not self._published
            self._published = True
            if changed or first:
                p = self.published
                self.emit(VersionPublished(self.tid, p.version, p.files, p.total_bytes))
                for peer in self.peers:
                    peer.send(wire.NewVersion(p.version))
            return changed

    def _scan(self, latest, progress) -> tuple[scan.ScanSummary, Published, bool]:
        return scan_version(self.db, self.folder, self.block_size, latest, self.key.sign,
                            include_hidden=self.include_hidden, progress=progress,
                            cancel=self._cancel)

    def start_rescans(self) -> None:
        if self._rescan_task is None and self.rescan_interval > 0:
            self._rescan_task = asyncio.ensure_future(self._rescan_loop())

    async def _rescan_loop(self) -> None:
        while True:
            # a folder whose scan takes over a second is scanned at most
            # 1/RESCAN_DUTY of the time (a rescan of a million files takes tens of seconds of CPU
            # that serving needs); a changed file seen while serving still
            # triggers one at once
            wait = self.rescan_interval
            if self.scan_seconds > 1.0:
                wait = max(wait, self.scan_seconds * (RESCAN_DUTY - 1))
            try:
                await asyncio.wait_for(self._rescan_soon.wait(), wait)
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
        if self.lanes is not None and self.published is not None:
            self.lanes.offer(peer)

    def file_progress(self) -> list[FileProgress]:
        if self.published is None:
            return []
        return [FileProgress(path, size, size) for path, size in self.db.files(self.version)]

    def status(self) -> TransferStatus:
        p = self.published
        files, nbytes = (p.files, p.total_bytes) if p else self.scan_progress
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


def scan_version(db: ShareDB, folder: Path, block_size: int, latest: tuple[int, bytes] | None,
                 sign: Callable[[bytes], bytes], *, include_hidden: bool = False, progress=None,
                 cancel: threading.Event | None = None) -> tuple[scan.ScanSummary, Published, bool]:
    """Scan `folder` into the database as the version after `latest` (its
    `ShareDB.latest_head`): its entries table, its encoding signed with
    `sign(digest)` -> signature. Returns what the scan found besides files, the
    version, and whether it differs from `latest`; when it does not, nothing of
    it is kept (its table becomes `latest`'s if that has none). Runs on any
    thread and holds no per-file state: files go to SQLite as they are hashed,
    and the encoding is written from there to there."""
    old = latest[0] if latest else None
    version = (old or 0) + 1
    same_bs = latest is not None and mf.peek(latest[1])[1] == block_size
    w = db.scan_writer(old if same_bs else None)  # leaves of another block size differ
    looked_up: list[scan.ScannedFile | None] = [None]
    differs = [w.previous is None]  # any file hashed, not reused from the previous version
    try:
        def lookup(path: str) -> scan.ScannedFile | None:
            row = w.lookup(path)
            looked_up[0] = None if row is None else scan.ScannedFile(path, *row)
            return looked_up[0]

        def store(f: scan.ScannedFile) -> None:
            if f is not looked_up[0]:
                differs[0] = True
            w.add(mf.Kind.FILE, f.path, f.mode, f.mtime_ns, f.size, f.root, f.leaves)

        summary = scan.scan_into(folder, block_size, lookup, store, include_hidden=include_hidden,
                                 progress=progress, cancel=cancel)
        for path, mode, mtime_ns in summary.dirs:
            differs[0] = differs[0] or not w.same_dir(path, mode, mtime_ns)
            w.add(mf.Kind.DIR, path, mode, mtime_ns, 0, b"", None)
        if not differs[0] and w.previous_count() == summary.files + len(summary.dirs):
            # every file and folder as in the previous version, and no more of
            # them: the same entries, known without sorting, encoding or hashing
            return summary, Published(version, block_size, 0, 0), False
        _, files, nbytes = w.finish(version)
        length = w.write_manifest(version, block_size, folder.name, old if same_bs else None,
                                  lambda digest: sign(mf.signing_message_of(digest)))
        if length is None:
            w.discard(version, keep_as=old)
    finally:
        w.close()
    return summary, Published(version, block_size, files, nbytes, length or 0), length is not None
