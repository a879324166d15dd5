"""The cloning side: fetch the signed manifest, then every block, verified.

Blocks are requested in file order, pipelined per peer up to a byte and a
count limit; each arriving block is checked against its file's Merkle root
from the signed manifest before a byte is written. A peer that sends a block
that does not verify is disconnected and its requests go back to the queue.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from . import manifest as mf
from . import merkle, wire
from .blocksource import FileBlockSource
from .clonefs import TargetFolder
from .serve import BlockServer, send_manifest
from .errors import DattuiError, ProtocolError, UnsafeManifest
from .events import (BadBlockReceived, CloneCompleted, FileCompleted, FileProgress, Logged,
                     ManifestReceived, Role, State, TransferFailed, TransferStatus)
from .peer import ERR_BAD_BLOCK, ERR_PROTOCOL, PeerConnection
from .store import CloneDB
from .swarmbase import SwarmBase

MAX_UNSOLICITED = 64


class CloneSwarm(SwarmBase):
    role = Role.CLONE

    def __init__(self, public_key: bytes, folder: Path, db: CloneDB, emit: Callable, *,
                 sync: bool = False, max_inflight_bytes: int = 16 * 1024 * 1024,
                 max_inflight_requests: int = 256, upload: bool = True) -> None:
        super().__init__(public_key, folder, emit)
        self.db = db
        self.sync = sync
        self.max_bytes = max_inflight_bytes
        self.max_requests = max_inflight_requests
        self.target = TargetFolder(folder)
        self.blocks = FileBlockSource(self.target.open_read, self._leaves_of)
        self.server = BlockServer(self)
        self.upload = upload
        self.manifest: mf.Manifest | None = None
        self.encoded = b""
        self.signature = b""
        self.version = 0
        self.verified: dict[int, dict[int, bytes]] = {}  # file -> block -> leaf
        self.done: set[int] = set()
        self.inflight: dict[tuple[int, int], PeerConnection] = {}
        self.retry: deque[tuple[int, int]] = deque()
        self._cursor: Iterator[tuple[int, int]] | None = None
        self.bytes_received = 0
        self.bytes_have = 0
        self.blocks_refetched = 0
        self.failed: DattuiError | None = None
        self.completed = False
        self.completed_at: float | None = None
        self.contacted = False  # a peer has answered with the share's manifest in this run
        self._load()

    # ---- state from disk -------------------------------------------------------
    def _load(self) -> None:
        latest = self.db.latest_manifest()
        if latest is None:
            return
        version, encoded, sig = latest
        if not mf.verify(self.public_key, encoded, sig):
            return  # damaged state: fetch the manifest again
        self._set_manifest(mf.decode(encoded), encoded, sig)
        self.verified = self.db.verified()
        self.done = self.db.done_files()
        # a finished file that changed on disk since is fetched again
        for idx in list(self.done):
            e = self.manifest.entries[idx]
            st = self.target.stat_file(e.path)
            if st is None or st.st_size != e.size or st.st_mtime_ns != e.mtime_ns:
                self.db.file_undone(idx)
                self.done.discard(idx)
                self.verified.pop(idx, None)
        self._recount()

    def _set_manifest(self, m: mf.Manifest, encoded: bytes, sig: bytes) -> None:
        self.manifest, self.encoded, self.signature, self.version = m, encoded, sig, m.version
        self._file_count = sum(1 for e in m.entries if e.kind == mf.Kind.FILE)
        if hasattr(self, "blocks"):
            self.blocks.reset()
        self._cursor = None
        self.retry.clear()

    def _recount(self) -> None:
        m = self.manifest
        bs = m.block_size
        have = 0
        for idx, e in enumerate(m.entries):
            if e.kind != mf.Kind.FILE:
                continue
            if idx in self.done:
                have += e.size
            else:
                for b in self.verified.get(idx, ()):
                    have += min(bs, e.size - b * bs)
        self.bytes_have = have

    # ---- manifest ----------------------------------------------------------------
    def _apply_manifest(self, encoded: bytes, sig: bytes) -> None:
        if not mf.verify(self.public_key, encoded, sig):
            raise ProtocolError("manifest signature does not verify")
        m = mf.decode(encoded)  # raises UnsafeManifest for paths leaving the folder
        if m.version <= self.version:
            return
        for e in m.entries:
            self.target.check_existing(e.path, e.kind == mf.Kind.DIR)
        keep: dict[int, int] = {}
        if self.manifest is not None:
            new_index = {(e.path, e.root, e.size): i for i, e in enumerate(m.entries)
                         if e.kind == mf.Kind.FILE}
            for i, e in enumerate(self.manifest.entries):
                j = new_index.get((e.path, e.root, e.size))
                if j is not None and e.kind == mf.Kind.FILE:
                    keep[i] = j
        self.db.set_manifest(m.version, encoded, sig, keep)
        self.verified = {keep[f]: b for f, b in self.verified.items() if f in keep}
        self.done = {keep[f] for f in self.done if f in keep}
        for key, peer in list(self.inflight.items()):
            self.inflight.pop(key)
        self._set_manifest(m, encoded, sig)
        self.completed = False
        self._recount()
        self.emit(ManifestReceived(self.tid, m.version, len(m.files), m.total_bytes, m.name))
        self._prepare_tree()

    def _prepare_tree(self) -> None:
        """Create every folder and every empty file; finish files already complete."""
        m = self.manifest
        for e in m.entries:
            if e.kind == mf.Kind.DIR:
                self.target.dir_fd(e.path)
        for idx, e in enumerate(m.entries):
            if e.kind == mf.Kind.FILE and idx not in self.done and e.size == 0:
                self._file_complete(idx)
        self.state = State.TRANSFERRING
        self._check_complete()

    # ---- scheduling --------------------------------------------------------------
    def _needed(self) -> Iterator[tuple[int, int]]:
        m = self.manifest
        bs = m.block_size
        for idx, e in enumerate(m.entries):
            if e.kind != mf.Kind.FILE or idx in self.done:
                continue
            have = self.verified.get(idx, ())
            for b in range(e.blocks(bs)):
                if b not in have:
                    yield idx, b

    def _next_block(self) -> tuple[int, int] | None:
        while self.retry:
            key = self.retry.popleft()
            if key not in self.inflight and key[1] not in self.verified.get(key[0], ()) \
                    and key[0] not in self.done:
                return key
        if self._cursor is None:
            self._cursor = self._needed()
        for key in self._cursor:
            if key not in self.inflight:
                return key
        return None

    def _block_size(self, file: int, block: int) -> int:
        e = self.manifest.entries[file]
        bs = self.manifest.block_size
        return min(bs, e.size - block * bs)

    def _schedule(self, peer: PeerConnection) -> None:
        if self.manifest is None or self.failed or peer.link.closed or peer.app.get("version") != self.version:
            return
        mine = peer.app.setdefault("inflight", {})
        out = peer.app.get("inflight_bytes", 0)
        sent = []
        while len(mine) < self.max_requests and out < self.max_bytes:
            key = self._next_block()
            if key is None:
                break
            size = self._block_size(*key)
            mine[key] = size
            out += size
            self.inflight[key] = peer
            sent.append(wire.encode(wire.Request(self.version, key[0], key[1])))
        peer.app["inflight_bytes"] = out
        if sent:
            peer.send_raw(b"".join(sent))

    def _release(self, peer: PeerConnection, key: tuple[int, int]) -> None:
        size = peer.app["inflight"].pop(key, None)
        if size is not None:
            peer.app["inflight_bytes"] -= size
        if self.inflight.get(key) is peer:
            del self.inflight[key]

    # ---- peers -------------------------------------------------------------------
    def attach(self, peer: PeerConnection) -> None:
        super().attach(peer)
        peer.app["inflight"] = {}
        peer.app["inflight_bytes"] = 0
        peer.send(wire.GetManifest(self.version))
        if self.manifest is not None and self.state == State.SEARCHING:
            self.state = State.TRANSFERRING

    def detach(self, peer: PeerConnection, reason: str) -> None:
        super().detach(peer, reason)
        for key in list(peer.app.get("inflight", {})):
            self._release(peer, key)
            self.retry.append(key)
        for other in self.peers:
            self._schedule(other)

    def on_writable(self, peer: PeerConnection) -> None:
        self.server.pump(peer)

    # ---- serving what is verified --------------------------------------------------
    def _leaves_of(self, file: int, entry: mf.Entry) -> bytes | None:
        return self.db.leaves(file) if file in self.done else None

    def read_block(self, version: int, file: int, block: int) -> tuple[bytes, list[bytes]] | None:
        if self.manifest is None or version != self.version or file not in self.done:
            return None
        return self.blocks.read(self.manifest, file, block)

    def on_frame(self, peer: PeerConnection, frame) -> None:
        try:
            if isinstance(frame, wire.Data):
                self._on_data(peer, frame)
            elif isinstance(frame, wire.ManifestPart):
                self._on_manifest_part(peer, frame)
            elif isinstance(frame, wire.ManifestSignature):
                self._on_manifest_sig(peer, frame)
            elif isinstance(frame, wire.NewVersion):
                if frame.version > self.version:
                    peer.send(wire.GetManifest(self.version))
            elif type(frame) is wire.NoData:
                self._release(peer, (frame.file, frame.block))
                self.retry.append((frame.file, frame.block))
                if frame.version != self.version:
                    peer.send(wire.GetManifest(self.version))
                else:
                    peer.app["lacks"] = peer.app.get("lacks", 0) + 1
            elif type(frame) is wire.Request:
                if self.upload:
                    self.server.request(peer, frame)
                else:
                    peer.send(wire.NoData(frame.version, frame.file, frame.block))
            elif type(frame) is wire.Cancel:
                self.server.cancel(peer, frame)
            elif isinstance(frame, wire.GetManifest):
                if self.manifest is not None and self.upload:
                    send_manifest(peer, self.version, self.encoded, self.signature, frame.have_version)
            else:
                self.common_frame(peer, frame)
        except UnsafeManifest as exc:
            self._fail(exc)
            peer.close(ERR_PROTOCOL, "unsafe manifest")
        except DattuiError as exc:
            self._fail(exc)

    def _on_manifest_part(self, peer: PeerConnection, f: wire.ManifestPart) -> None:
        parts = peer.app.get("manifest")
        if f.offset == 0:
            if f.total > mf.MAX_MANIFEST_BYTES:
                raise ProtocolError("manifest too large")
            parts = peer.app["manifest"] = (f.version, f.total, bytearray())
        if parts is None or parts[0] != f.version or parts[1] != f.total or len(parts[2]) != f.offset:
            raise ProtocolError("manifest parts out of order")
        parts[2].extend(f.chunk)
        if len(parts[2]) > f.total:
            raise ProtocolError("manifest longer than announced")

    def _on_manifest_sig(self, peer: PeerConnection, f: wire.ManifestSignature) -> None:
        self.contacted = True
        parts = peer.app.pop("manifest", None)
        if parts is None:
            # the peer has nothing newer than what we hold
            peer.app["version"] = f.version if f.version == self.version else None
            self._schedule(peer)
            self._check_complete()  # a re-run of a finished clone: the share has nothing newer
            return
        if parts[0] != f.version or len(parts[2]) != parts[1]:
            raise ProtocolError("incomplete manifest")
        self._apply_manifest(bytes(parts[2]), f.signature)
        peer.app["version"] = f.version if f.version == self.version else None
        for p in self.peers:
            if p is not peer and p.app.get("version") != self.version:
                p.send(wire.GetManifest(0 if p.app.get("version") is None else p.app["version"]))
        self._schedule(peer)

    def _on_data(self, peer: PeerConnection, f: wire.Data) -> None:
        key = (f.file, f.block)
        mine = peer.app.get("inflight", {})
        if key not in mine or f.version != self.version:
            peer.app["unsolicited"] = peer.app.get("unsolicited", 0) + 1
            if peer.app["unsolicited"] > MAX_UNSOLICITED:
                peer.close(ERR_PROTOCOL, "too many unrequested blocks")
            return
        self._release(peer, key)
        m = self.manifest
        e = m.entries[f.file]
        data = f.data
        leaf = merkle.leaf_hash(data)
        ok = len(data) == self._block_size(*key) and merkle.verify_proof(
            leaf, f.block, e.blocks(m.block_size), list(f.proof), e.root)
        if not ok:
            self.retry.appendleft(key)
            self.emit(BadBlockReceived(self.tid, peer.peer_id, e.path, f.block))
            peer.close(ERR_BAD_BLOCK, "sent a block that does not match the signed tree")
            return
        self.target.write(e.path, e.size, f.block * m.block_size, data)
        have = self.verified.setdefault(f.file, {})
        have[f.block] = leaf
        n = len(data)
        self.bytes_received += n
        self.bytes_have += n
        peer.blocks_down += 1
        if len(have) == e.blocks(m.block_size):
            self._file_complete(f.file, had_partial=len(have) > 1)
        else:
            self.db.add_verified(f.file, f.block, leaf)
        self._schedule(peer)
        self._check_complete()

    def _file_complete(self, idx: int, had_partial: bool = True) -> None:
        e = self.manifest.entries[idx]
        if e.size == 0:
            self.target.file_fd(e.path, 0)
        self.target.finish_file(e.path, e.size, e.mode, e.mtime_ns)
        have = self.verified.get(idx, {})
        leaves = b"".join(have[b] for b in range(len(have)))
        self.db.file_done(idx, leaves, had_partial)
        self.done.add(idx)
        self.verified.pop(idx, None)
        self.emit(FileCompleted(self.tid, e.path, e.size))

    def _check_complete(self) -> None:
        m = self.manifest
        if self.completed or m is None or len(self.done) < self._file_count:
            return
        dirs = [e for e in m.entries if e.kind == mf.Kind.DIR]
        for e in sorted(dirs, key=lambda e: e.path.count("/"), reverse=True):
            self.target.finish_dir(e.path, e.mode, e.mtime_ns)
        self.completed = True
        self.completed_at = time.monotonic()
        self.state = State.SEEDING if self.sync else State.DONE
        self.emit(CloneCompleted(self.tid, m.version, len(m.files), m.total_bytes,
                                 self.bytes_received, self.completed_at - self.started))

    def _fail(self, exc: DattuiError) -> None:
        if self.failed is None:
            self.failed = exc
            self.state = State.FAILED
            self.message = str(exc)
            self.emit(TransferFailed(self.tid, str(exc), exc.exit_code))

    def file_progress(self) -> list[FileProgress]:
        m = self.manifest
        if m is None:
            return []
        bs = m.block_size
        out = []
        for idx, e in enumerate(m.entries):
            if e.kind != mf.Kind.FILE:
                continue
            if idx in self.done:
                have = e.size
            else:
                have = sum(min(bs, e.size - b * bs) for b in self.verified.get(idx, ()))
            out.append(FileProgress(e.path, e.size, have))
        return out

    # ---- status --------------------------------------------------------------------
    def status(self) -> TransferStatus:
        m = self.manifest
        active = []
        if m is not None:
            bs = m.block_size
            for idx in sorted({k[0] for k in self.inflight} | set(self.verified))[:64]:
                e = m.entries[idx]
                have = sum(min(bs, e.size - b * bs) for b in self.verified.get(idx, ()))
                active.append(FileProgress(e.path, e.size, have))
        return self._status(
            state=self.state, version=self.version,
            files_total=len(m.files) if m else 0, files_done=len(self.done),
            bytes_total=m.total_bytes if m else 0, bytes_have=self.bytes_have,
            bytes_received=self.bytes_received, active_files=tuple(active))

    async def close(self) -> None:
        await super().close()
        self.blocks.close()
        self.target.close()
        self.db.close()
