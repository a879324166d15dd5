"""The cloning side: fetch the signed manifest, then every block, verified,
from every peer that has it at once; serve what is verified to other clones.

Availability. After its manifest signature every peer says what it serves of
that version: HAVE_ALL (a share, a finished clone) or a BITFIELD of complete
files, then HAVE_BLOCKS (block ranges) for every file it holds in part; then
HAVE_BLOCKS as it verifies blocks and a HAVE per file as it completes. A clone
keeps per peer a bitfield of files (sized by the manifest) and, for files the
peer holds in part, a bitmap of blocks; per file, how many connected peers
hold it whole, and per block of a file held in part, how many peers hold it.
A clone serves every block it has verified, with the proof it was verified
with (kept in its state database), not only complete files.

Picking. Blocks a peer gave back come first; then files are taken rarest first
(held by the fewest connected peers; among equals, files already started, then
path order from a random starting file, so that clones of one share begin in
different places and soon have something to give each other), and within a
file blocks in a random order of this clone's own, blocks no peer holds in part
before the others, and only from peers that hold them. Blocks a peer holds in
part are offered to it as it announces them. A peer that answers NO_DATA for a
block it advertised loses that block (its whole file, if it had said HAVE)
until it says so again.

Seeds (peers that hold everything) are the swarm's scarce upload: a seed is not
asked for a file or a block that a clone peer holding it has room for; a
request waiting at a seed moves to a clone peer that announces the block (CANCEL
at the seed; not the seed's two oldest requests, which it is likely sending
already), and a clone peer with nothing else to give us takes over the latest
requests waiting at a seed for blocks it holds. Measured with five clones of a
share whose upload is the bottleneck, that is what keeps the share's upload
near one copy of the data instead of one per clone, for many files and for one
big file alike.

Pipelining. Each peer gets requests until its in-flight bytes reach
rate x RTT x 2 (its measured delivery rate and the QUIC smoothed RTT),
at least MIN_PIPELINE_BLOCKS blocks, at most max_inflight_bytes; the whole
transfer never has more than max_inflight_bytes / max_inflight_requests out.

Endgame. When every block still missing is requested, a peer with room takes
copies of requests outstanding elsewhere (oldest first, at most ENDGAME_COPIES
holders per block); the first copy to arrive wins and the others are
CANCELled, so one slow peer never stalls the end.

Lanes. When this process or a share that offers lanes (LANES) is CPU-bound
and enough is left, lane processes each open a connection of their own to one
of the share's lane ports (engine/lanes/); each is one more seed here
(LanePeer), whose blocks arrive verified. While a share's lanes run, the
connection to the share itself gets no new requests; a lane that closes
gives its requests back. Files, state and picking stay in this process.

Each arriving block is checked against its file's Merkle root from the signed
manifest before a byte is written. A peer that sends a block that does not
verify is disconnected and its requests go back to the queue; it is not
dialled again in this run.

Liveness. What the clone waits for, and when it stops waiting (requests a
peer does not answer in time, silent or dead connections, bans and backoff,
giving up with a cause) is decided by engine/liveness.py, sans-IO, and
carried out by engine/clone_liveness.py.

On disk: a block is recorded verified only once its bytes are durable
(engine/durable.py); a new version cuts every file to its new size and
removes files it no longer names (engine/treeops.py), after a check that
what is left to fetch fits on the disk (engine/space.py); a folder without
usable state is checked against the manifest first (engine/adopt.py).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

from . import liveness as lv
from . import collaborators, manifest as mf
from . import adopt, merkle, names, wire
from .bandwidth import Throttle
from .blocksource import FileBlockSource
from .clone_liveness import LivenessGlue
from .clonefs import TargetFolder, disk_error
from .durable import DurableRecords
from .selection import Selection
from .serve import BlockServer, manifest_frames, send_manifest
from .space import check_free_space
from .treeops import remove_left_behind, sizes_differ
from .errors import DattuiError, DiskError, NotFound, ProtocolError, UnsafeManifest
from .events import (BadBlockReceived, CloneCompleted, FileCompleted, FileProgress, Logged,
                     ManifestProgressed, ManifestReceived, Role, State, TransferFailed, TransferStatus)
from .lanes import share_lanes as lanes_policy
from .lanes.cpu import CpuGauge
from .lanes.lane_peer import LanePeer
from .peer import ERR_BAD_BLOCK, ERR_GONE, ERR_PROTOCOL, PeerConnection
from .store import CloneDB
from .swarmbase import SwarmBase

MAX_UNSOLICITED = 64
MIN_PIPELINE_BLOCKS = 4  # requests kept at every peer, however slow it looks
PIPELINE_RTTS = 2        # in-flight bytes per peer: rate x RTT x this
DEFAULT_RTT = 0.1        # until QUIC has measured one
ENDGAME_COPIES = 3       # at most this many peers asked for one block at once
CANCELLED_MEMORY = 1024  # per peer: cancelled requests whose late DATA is not a violation
MANIFEST_PROGRESS_STEP = 4 * 1024 * 1024  # a file list this large shows its download
TICK = 0.25              # every peer's pipeline is topped up at least this often
ORDER_REFRESH = 0.05     # the rarest-first order is rebuilt at most this often ...
ORDER_REFRESH_PER_FILE = 1e-5  # ... and less often for large folders (1 s for 100,000 files)
MOVE_WINDOW = 32         # the latest requests at a seed that may move to a clone
SEED_SENDING = 2         # a seed's oldest requests: likely on the wire, never moved
MAX_OFFERS = 4096        # per peer: blocks it announced that we lack, queued to ask it for
SCAN_LIMIT = 4096        # blocks looked at per pick within one file
SEED_COPY_AFTER = 1.5    # endgame: a seed copies a clone peer's request only when older

Key = tuple[int, int]  # (file index, block index)


def pipeline_bytes(rate: float, rtt: float, block_size: int, max_bytes: int) -> int:
    """Bytes to keep requested from a peer that delivers `rate` bytes/s over a
    path of round trip `rtt` s: twice the bandwidth-delay product, so the peer
    never idles waiting for our next request, and since the rate measured is
    what this very pipeline let through, a pipeline that is too short doubles
    every round trip until the path is full. At least MIN_PIPELINE_BLOCKS
    blocks, at most max_bytes."""
    want = rate * (rtt or DEFAULT_RTT) * PIPELINE_RTTS
    return int(min(max_bytes, max(MIN_PIPELINE_BLOCKS * block_size, want)))


def _set_bits(bits: bytes | bytearray) -> Iterator[int]:
    for i, byte in enumerate(bits):
        if byte:
            base = i << 3
            for j in range(8):
                if byte & (0x80 >> j):
                    yield base + j


def _has(have, f: int) -> bool:
    if have is True:
        return True
    return have is not None and bool(have[f >> 3] & (0x80 >> (f & 7)))


_NONZERO = re.compile(rb"[^\x00]")


def _new_bits(old: bytes | bytearray, mask: bytes | bytearray) -> Iterator[int]:
    """Bit indices (most significant bit of byte 0 first) set in `mask` and
    not in `old`: C-speed over the zero bytes, Python only for the bits found."""
    n = len(mask)
    new = (int.from_bytes(mask, "big") & ~int.from_bytes(old, "big")).to_bytes(n, "big")
    for m in _NONZERO.finditer(new):
        i = m.start()
        byte, base = new[i], i << 3
        for j in range(8):
            if byte & (0x80 >> j):
                yield base + j


def ranges_mask(ranges, nblocks: int) -> bytearray | None:
    """A block bitmap of `nblocks` bits with the given (first, count) ranges set;
    None when a range leaves the file or ranges overlap or go backwards (so one
    frame costs at most one pass over the file's bitmap)."""
    mask = bytearray((nblocks + 7) // 8)
    prev = 0
    for start, count in ranges:
        end = start + count
        if start < prev or end > nblocks:
            return None
        prev = end
        a, b = start >> 3, end >> 3
        if a == b:
            mask[a] |= (0xFF >> (start & 7)) & ~(0xFF >> (end & 7)) & 0xFF
            continue
        mask[a] |= 0xFF >> (start & 7)
        if b > a + 1:
            mask[a + 1:b] = b"\xff" * (b - a - 1)
        if end & 7:
            mask[b] |= ~(0xFF >> (end & 7)) & 0xFF
    return mask


class CloneSwarm(LivenessGlue, SwarmBase):
    role = Role.CLONE

    def __init__(self, public_key: bytes, folder: Path, db: CloneDB, emit: Callable, *,
                 sync: bool = False, max_inflight_bytes: int = 16 * 1024 * 1024,
                 max_inflight_requests: int = 256, upload: bool = True,
                 rng: random.Random | None = None, lanes: int = 0,
                 lane_options: dict | None = None, selection: Selection | None = None,
                 durable: bool = True, adopt: str | None = None,
                 rules: lv.Rules = lv.Rules(), folding: tuple[bool, bool] | None = None) -> None:
        super().__init__(public_key, folder, emit)
        self.db = db
        self.sync = sync
        # which files to fetch: given, else the one this clone was made with
        if selection is None:
            selection = Selection.from_json(db.get("selection"))
        else:
            db.set("selection", selection.to_json())
        self.selection = selection
        self.max_bytes = max_inflight_bytes
        self.max_requests = max_inflight_requests
        self.rng = rng or random.Random()
        self.target = TargetFolder(folder)
        self.records = DurableRecords(db, self.target, durable, on_error=self._fail)
        self.adopt = adopt  # no usable state: check the files on disk first (engine/adopt.py)
        self.blocks = FileBlockSource(self.target.open_read, self._leaves_of)
        self.server = BlockServer(self)
        #: the download limit shared by the engine's clones (the engine sets it)
        self.down = Throttle(None, 0.0)
        self.upload = upload
        self.manifest: mf.Manifest | None = None
        self.encoded = b""
        self.signature = b""
        self.version = 0
        self.verified: dict[int, dict[int, bytes]] = {}  # file -> block -> leaf
        self.done: set[int] = set()
        # requests out: block -> the peers asked for it (more than one only in the endgame)
        self.inflight: dict[Key, list[PeerConnection]] = {}
        self.retry: dict[Key, None] = {}  # blocks given back, to ask again (an ordered set)
        self._asked_at: dict[Key, float] = {}  # when each block in flight was first asked for
        self._requests = 0          # requests out, copies included
        self._requested_bytes = 0
        self._remaining = 0         # blocks not verified yet
        self._next: dict[int, int] = {}  # file -> first block not handed out yet
        self._file_idx: list[int] = []   # the selected files
        self._all_files = 0         # files in the manifest, selected or not
        self._selected_bytes = 0
        self._done_unselected = 0   # files done earlier that the selection leaves out now
        self._nblocks: list[int] = []
        self._rank: list[int] = []  # tie order among files held by as many peers
        self._count = array("I")    # entry -> peers with a bitfield that hold it
        self._n_all = 0             # peers that hold everything
        self._order: list[int] = []  # wanted files, rarest first
        self._perm: dict[int, array] = {}  # file -> this clone's random block order
        self._bc: dict[int, array] = {}    # file -> per block, peers holding it in part
        self._unprovable: set[Key] = set()  # verified by an older dattui: no proof kept
        self._order_gen = 0
        self._order_dirty = True
        self._order_at = 0.0
        self._tick_handle = None
        self._closed = False
        self.bytes_received = 0
        self.bytes_have = 0
        self.blocks_refetched = 0
        self.blocks_duplicated = 0  # endgame copies requested
        self.blocks_moved = 0       # requests moved from a seed to a clone holding the block
        self.bytes_wasted = 0       # copies that arrived after another one
        self.failed: DattuiError | None = None
        self.completed = False
        self.completed_at: float | None = None
        self.contacted = False  # a peer holding the link has authenticated in this run
        self._folding = folding  # (case, normalisation) the target folds; None: probe it
        self._start_watch(rules)
        self.lanes = lanes  # at most this many lane processes (engine/lanes/) per version
        self.lane_options = lane_options or {}
        self.lane_peers: list[LanePeer] = []
        self.cpu = CpuGauge()
        self._lane_count = 0
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
        self._unprovable = self.db.unprovable()
        # a finished file that changed on disk since is fetched again
        for idx in list(self.done):
            e = self.manifest.entries[idx]
            st = self.target.stat_file(e.path)
            if st is None or st.st_size != e.size or st.st_mtime_ns != e.mtime_ns:
                self.db.file_undone(idx)
                self.done.discard(idx)
                self.verified.pop(idx, None)
        self._recount()
        check_free_space(self.target, self.manifest, self.done,  # a resumed clone too
                         wants=self._wants())

    def _set_manifest(self, m: mf.Manifest, encoded: bytes, sig: bytes) -> None:
        self.manifest, self.encoded, self.signature, self.version = m, encoded, sig, m.version
        n = len(m.entries)
        sel = self.selection
        self._file_idx = [i for i, e in enumerate(m.entries)
                          if e.kind == mf.Kind.FILE and (sel.everything or sel.wants(e.path))]
        self._all_files = len(m.files)
        self._selected_bytes = sum(m.entries[i].size for i in self._file_idx)
        self._nblocks = [e.blocks(m.block_size) for e in m.entries]
        self._file_count = len(self._file_idx)
        self._rank = self._tie_ranks(n)
        if hasattr(self, "blocks"):
            self.blocks.reset()
        self.retry.clear()
        self._next.clear()
        self._perm.clear()
        # what peers hold is known again from their answers for this version
        self._count = array("I", bytes(4 * n))
        self._bc.clear()
        self._n_all = 0
        for p in self.peers:
            p.app["have"] = None
            p.app["pb"] = {}
            p.app["offers"] = deque()
            p.app.pop("offers_lost", None)
        self._order = []
        self._order_gen += 1
        self._order_dirty = True

    def _tie_ranks(self, n: int) -> list[int]:
        """Order among files held by as many peers: random, and each clone's
        own, so that clones of one share begin in different places and never
        walk the same files in lock-step (asking a seed for the same file at
        the same moment)."""
        order = list(range(n))
        self.rng.shuffle(order)
        rank = [0] * n
        for pos, f in enumerate(order):
            rank[f] = pos
        return rank

    def _recount(self) -> None:
        m = self.manifest
        bs = m.block_size
        have = 0
        remaining = 0
        for idx in self._file_idx:
            e = m.entries[idx]
            if idx in self.done:
                have += e.size
            else:
                got = self.verified.get(idx, ())
                remaining += e.blocks(bs) - len(got)
                for b in got:
                    have += min(bs, e.size - b * bs)
        self.bytes_have = have
        self._remaining = remaining
        self._done_unselected = len(self.done) - sum(1 for i in self._file_idx if i in self.done)

    # ---- manifest ----------------------------------------------------------------
    def _apply_manifest(self, encoded: bytes, sig: bytes) -> None:
        if not mf.verify(self.public_key, encoded, sig):
            raise ProtocolError("manifest signature does not verify")
        m = mf.decode(encoded)  # raises UnsafeManifest for paths leaving the folder
        if m.version <= self.version:
            return
        self._check_names(m)
        for e in m.entries:
            self.target.check_existing(e.path, e.kind == mf.Kind.DIR)
        self.records.flush()  # what the version being left verified stays recorded
        keep: dict[int, int] = {}
        if self.manifest is not None:
            new_index = {(e.path, e.root, e.size): i for i, e in enumerate(m.entries)
                         if e.kind == mf.Kind.FILE}
            for i, e in enumerate(self.manifest.entries):
                j = new_index.get((e.path, e.root, e.size))
                if j is not None and e.kind == mf.Kind.FILE:
                    keep[i] = j
        check_free_space(self.target, m, {keep[f] for f in self.done if f in keep}, wants=self._wants())
        self.db.set_manifest(m.version, encoded, sig, keep)
        if self.manifest is not None:
            remove_left_behind(self.target, self.manifest, m, self._wants())
        self.target.forget_files()  # reopened at the new version's sizes
        self.verified = {keep[f]: b for f, b in self.verified.items() if f in keep}
        self.done = {keep[f] for f in self.done if f in keep}
        self._unprovable = {(keep[f], b) for f, b in self._unprovable if f in keep}
        self._forget_requests()
        for lp in list(self.lane_peers):  # they verify against the version being left
            lp.close(ERR_GONE, "a new version")
        self._set_manifest(m, encoded, sig)
        self.completed = False
        if self.adopt:
            self.done |= set(adopt.adopt_files(self.folder, m, self.target, self.records, self.adopt))
            self.adopt = None
        self._recount()
        self.emit(ManifestReceived(self.tid, m.version, len(m.files), m.total_bytes, m.name))
        self._prepare_tree()
        self._ensure_tick()

    def _check_names(self, m: mf.Manifest) -> None:
        """Two names this folder's filesystem would hold as one (case, Unicode
        normalisation) are refused, never merged."""
        if self._folding is None:
            self._folding = names.folding(self.target.root_fd)
        pair = names.collision((e.path for e in m.entries), *self._folding)
        if pair is not None:
            raise UnsafeManifest(
                f"refusing the share's manifest: {names.shown(pair[0], 80)} and "
                f"{names.shown(pair[1], 80)} would be one file on the target folder's filesystem "
                "(it ignores case or Unicode normalisation); nothing was written; clone onto a "
                "case-sensitive filesystem or ask the sharer to rename one")

    def _forget_requests(self) -> None:
        """Every request of the version being left: cancelled."""
        for p in self.peers:
            mine = p.app.get("inflight", {})
            if mine and not p.link.closed:
                p.send_raw(b"".join(wire.encode(wire.Cancel(self.version, *key)) for key in mine))
            for key in mine:
                self._remember_cancel(p, key)
            p.app["inflight"] = {}
            p.app["inflight_bytes"] = 0
        self.inflight.clear()
        self._asked_at.clear()
        self._requests = 0
        self._requested_bytes = 0

    def _prepare_tree(self) -> None:
        """Create every folder (with a selection: those it holds files of, or
        matches) and every empty file; finish files already complete."""
        m = self.manifest
        for e in self._selected_dirs():
            self.target.dir_fd(e.path)
        for idx in self._file_idx:
            if idx not in self.done and m.entries[idx].size == 0:
                self._file_complete(idx)
        self.state = State.TRANSFERRING
        self._check_complete()

    def _selected_dirs(self) -> list[mf.Entry]:
        m, sel = self.manifest, self.selection
        dirs = [e for e in m.entries if e.kind == mf.Kind.DIR]
        if sel.everything:
            return dirs
        needed = set()
        for i in self._file_idx:
            path = m.entries[i].path
            while "/" in path:
                path = path.rsplit("/", 1)[0]
                needed.add(path)
        return [e for e in dirs if e.path in needed or sel.wants(e.path + "/")]

    def _wants(self):
        """The selection's test of a path, None when every file is selected."""
        return None if self.selection.everything else self.selection.wants

    def _selected_done(self) -> int:
        return len(self.done) - self._done_unselected

    # ---- what peers hold -----------------------------------------------------------
    def _summary(self) -> wire.HaveAll | wire.Bitfield:
        if len(self.done) >= self._all_files:
            return wire.HaveAll(self.version)
        return wire.Bitfield.of(self.version, len(self.manifest.entries), self.done)

    def _summary_frames(self) -> list:
        """What we serve of this version: the summary of complete files, then
        HAVE_BLOCKS for every file held in part."""
        out = [self._summary()]
        unprovable = self._unprovable
        for f, got in self.verified.items():
            if f in self.done or not got:
                continue
            blocks = sorted(b for b in got if (f, b) not in unprovable) if unprovable \
                else sorted(got)
            ranges = wire.block_ranges(blocks)
            for i in range(0, len(ranges), wire.MAX_RANGES):
                out.append(wire.HaveBlocks(self.version, f, tuple(ranges[i:i + wire.MAX_RANGES])))
        return out

    def _drop_partial(self, peer: PeerConnection, f: int) -> None:
        """Forget which blocks of file f the peer holds in part."""
        bits = peer.app.get("pb", {}).pop(f, None)
        bc = self._bc.get(f)
        if bits is None or bc is None:
            return
        for b in _set_bits(bits):
            if bc[b]:
                bc[b] -= 1

    def _drop_availability(self, peer: PeerConnection) -> None:
        have = peer.app.get("have")
        if have is True:
            self._n_all -= 1
        elif have is not None:
            count = self._count
            for i in _set_bits(have):
                count[i] -= 1
        peer.app["have"] = None
        for f in list(peer.app.get("pb", ())):
            self._drop_partial(peer, f)
        peer.app["offers"] = deque()
        peer.app.pop("offers_lost", None)
        self._order_dirty = True

    def _on_summary(self, peer: PeerConnection, version: int, bf: wire.Bitfield | None) -> None:
        m = self.manifest
        if m is None or version != self.version:
            return  # of another version: the peer answers again once we agree on one
        if bf is not None and bf.count != len(m.entries):
            peer.close(ERR_PROTOCOL, "bitfield does not match the manifest")
            return
        self._drop_availability(peer)
        if bf is None:
            peer.app["have"] = True
            self._n_all += 1
            collaborators.report(self, (peer,), force=True)  # it holds all: tell it our progress
        else:
            bits = bytearray(bf.bits)
            count, entries = self._count, m.entries
            for i in _set_bits(bf.bits):
                if entries[i].kind == mf.Kind.FILE:
                    count[i] += 1
                else:
                    bits[i >> 3] &= ~(0x80 >> (i & 7))
            peer.app["have"] = bits
        self._schedule(peer)

    def _on_have(self, peer: PeerConnection, f: wire.Have) -> None:
        m = self.manifest
        if m is None or f.version != self.version or not 0 <= f.file < len(m.entries) \
                or m.entries[f.file].kind != mf.Kind.FILE:
            return
        have = peer.app.get("have")
        if have is True:
            return
        if have is None:
            have = peer.app["have"] = bytearray((len(m.entries) + 7) // 8)
        byte, bit = f.file >> 3, 0x80 >> (f.file & 7)
        if not have[byte] & bit:
            have[byte] |= bit
            self._count[f.file] += 1
            self._order_dirty = True
            self._drop_partial(peer, f.file)  # held whole now
            peer.app.setdefault("fresh", []).append(f.file)
            if self._nblocks[f.file] == 1 and f.file not in self.done:
                self._maybe_move(peer, (f.file, 0), time.monotonic())
        self._schedule(peer)

    def _on_have_blocks(self, peer: PeerConnection, f: wire.HaveBlocks) -> None:
        m = self.manifest
        if m is None or f.version != self.version or peer.app.get("have") is None:
            return  # of another version, or before its summary: it answers again
        file = f.file
        if not 0 <= file < len(m.entries) or m.entries[file].kind != mf.Kind.FILE:
            peer.close(ERR_PROTOCOL, "block ranges of no file")
            return
        n = self._nblocks[file]
        mask = ranges_mask(f.ranges, n)
        if mask is None:
            peer.close(ERR_PROTOCOL, "block ranges outside the file or out of order")
            return
        if _has(peer.app["have"], file) or file in self.done:
            return  # it holds the whole file already, or we do
        pb = peer.app.setdefault("pb", {})
        bits = pb.get(file)
        if bits is None:
            bits = pb[file] = bytearray(len(mask))
        bc = self._bc.get(file)
        if bc is None:
            bc = self._bc[file] = array("H", bytes(2 * n))
        got = self.verified.get(file, ())
        offers = peer.app.setdefault("offers", deque())
        now = time.monotonic()
        for b in _new_bits(bits, mask):
            if bc[b] < 0xFFFF:
                bc[b] += 1
            if b not in got:
                key = (file, b)
                if len(offers) < MAX_OFFERS:
                    offers.append(key)
                else:
                    peer.app["offers_lost"] = True
                self._maybe_move(peer, key, now)
        bits[:] = (int.from_bytes(bits, "big") | int.from_bytes(mask, "big")).to_bytes(len(mask), "big")
        self._order_dirty = True
        self._schedule(peer)

    def _maybe_move(self, peer: PeerConnection, key: Key, now: float) -> None:
        """`peer` (not a seed) has just announced `key`: a request for it that
        waits at a seed moves here, when this peer has room and the seed is not
        likely sending it already. Seeds are the swarm's scarce upload."""
        holders = self.inflight.get(key)
        if not holders or len(holders) != 1 or peer.app.get("have") is True:
            return
        seed = holders[0]
        if seed is peer or seed.app.get("have") is not True or peer.link.closed \
                or peer.app.get("version") != self.version \
                or key in islice(seed.app["inflight"], SEED_SENDING) \
                or peer.app["inflight_bytes"] >= self._target(peer, now):
            return
        seed.send(wire.Cancel(self.version, *key))
        self._remember_cancel(seed, key)
        self._release(seed, key)
        self.blocks_moved += 1
        peer.send_raw(self._request(peer, key))

    def _holds(self, peer: PeerConnection, f: int, b: int) -> bool:
        if _has(peer.app.get("have"), f):
            return True
        bits = peer.app.get("pb", {}).get(f)
        return bits is not None and bool(bits[b >> 3] & (0x80 >> (b & 7)))

    def _lose(self, peer: PeerConnection, file: int, block: int) -> None:
        """The peer advertised a block of `file` but cannot serve it: a file it
        said HAVE for is not asked again until HAVE; a block it announced, until
        it announces it again."""
        have = peer.app.get("have")
        if have is None:
            return
        bits = peer.app.get("pb", {}).get(file)
        if bits is not None and not _has(have, file):
            byte, bit = block >> 3, 0x80 >> (block & 7)
            if bits[byte] & bit:
                bits[byte] &= ~bit
                bc = self._bc.get(file)
                if bc is not None and bc[block]:
                    bc[block] -= 1
            return
        if have is True:  # everything but this file, from now on
            m = self.manifest
            have = bytearray((len(m.entries) + 7) // 8)
            count = self._count
            for i in self._file_idx:
                have[i >> 3] |= 0x80 >> (i & 7)
                count[i] += 1
            self._n_all -= 1
            peer.app["have"] = have
        byte, bit = file >> 3, 0x80 >> (file & 7)
        if have[byte] & bit:
            have[byte] &= ~bit
            self._count[file] -= 1
        self._order_dirty = True

    # ---- scheduling --------------------------------------------------------------
    def _block_size(self, file: int, block: int) -> int:
        e = self.manifest.entries[file]
        bs = self.manifest.block_size
        return min(bs, e.size - block * bs)

    def _target(self, peer: PeerConnection, now: float) -> int:
        """In-flight bytes to keep at this peer."""
        rate = peer.down.rate(now)
        first = peer.app.get("first_data")
        if first is not None and now - first < peer.down.window:
            rate *= peer.down.window / max(now - first, 0.25)  # the meter's window is not full yet
        return pipeline_bytes(rate, peer.link.rtt, self.manifest.block_size, self.max_bytes)

    def _rebuild_order(self, now: float) -> None:
        n_all, count, rank = self._n_all, self._count, self._rank
        done, verified, started, nblocks = self.done, self.verified, self._next, self._nblocks
        files = [f for f in self._file_idx if f not in done and (n_all or count[f])
                 and started.get(f, 0) < nblocks[f]]
        files.sort(key=lambda f: (n_all + count[f], not (f in verified or f in started), rank[f]))
        self._order = files
        self._order_gen += 1
        self._order_dirty = False
        self._order_at = now
        for p in self.peers:
            p.app["fresh"] = []

    def _perm_of(self, f: int) -> array:
        """This clone's own random order of file f's blocks: clones of one share
        fetch a big file in different orders (never in lock-step), so they soon
        have blocks to give each other."""
        perm = self._perm.get(f)
        if perm is None:
            perm = array("I", range(self._nblocks[f]))
            self.rng.shuffle(perm)
            self._perm[f] = perm
        return perm

    def _take(self, f: int, seed: PeerConnection | None = None, now: float = 0.0) -> int | None:
        """A block of file f nobody was asked for, if any: blocks no peer holds
        in part first. For a `seed`, a block a clone peer with room holds is
        left to that peer."""
        n = self._nblocks[f]
        got = self.verified.get(f, ())
        inflight = self.inflight
        if n == 1:
            self._next[f] = 1
            return 0 if not got and (f, 0) not in inflight else None
        perm = self._perm_of(f)
        i = self._next.get(f, 0)
        while i < n and (perm[i] in got or (f, perm[i]) in inflight):
            i += 1
        self._next[f] = i  # every block before i is verified or asked for
        if i >= n:
            return None
        bc = self._bc.get(f)
        if bc is None:
            return perm[i]
        fallback, spared = None, False
        for j in range(i, min(n, i + SCAN_LIMIT)):
            b = perm[j]
            if b in got or (f, b) in inflight:
                continue
            if not bc[b]:
                return b
            if fallback is None:
                if seed is not None and self._partial_room(seed, f, b, now):
                    spared = True
                else:
                    fallback = b
                    if seed is None:
                        break
        if fallback is None and spared:
            self._order_dirty = True  # look again soon: that peer may be slow to ask
        return fallback

    def _partial_room(self, seed: PeerConnection, f: int, b: int, now: float) -> bool:
        """A peer other than `seed` that holds block b of f in part and has room."""
        byte, bit = b >> 3, 0x80 >> (b & 7)
        for q in self.peers:
            bits = q.app.get("pb", {}).get(f) if q is not seed else None
            if bits is not None and bits[byte] & bit and q.app.get("version") == self.version \
                    and not q.link.closed and q.app["inflight_bytes"] < self._target(q, now):
                return True
        return False

    def _take_offer(self, peer: PeerConnection) -> Key | None:
        """A block the peer announced (it holds its file in part) that we lack
        and nobody was asked for."""
        offers = peer.app.get("offers")
        if offers is None:
            return None
        for _ in range(2):
            while offers:
                f, b = key = offers.popleft()
                if f not in self.done and b not in self.verified.get(f, ()) \
                        and key not in self.inflight and self._holds(peer, f, b):
                    return key
            if not peer.app.pop("offers_lost", False):
                return None
            # more was announced than the queue holds: look through its bitmaps again
            for f, bits in peer.app.get("pb", {}).items():
                if f in self.done:
                    continue
                got = self.verified.get(f, ())
                for b in _new_bits(b"\x00" * len(bits), bits):
                    if b not in got and (f, b) not in self.inflight:
                        if len(offers) >= MAX_OFFERS:
                            peer.app["offers_lost"] = True
                            break
                        offers.append((f, b))
                if peer.app.get("offers_lost"):
                    break
        return None

    def _pick(self, peer: PeerConnection, now: float) -> Key | None:
        have = peer.app.get("have")
        if have is None:
            return None
        if self.retry:  # blocks given back, to any peer that holds them
            found, stale = None, []
            for key in self.retry:
                f, b = key
                if f in self.done or b in self.verified.get(f, ()) or key in self.inflight:
                    stale.append(key)
                elif self._holds(peer, f, b):
                    found = key
                    break
            for key in stale:
                del self.retry[key]
            if found is not None:
                del self.retry[found]
                return found
        # rarest first; the order is rebuilt when availability changed, not at
        # every HAVE (a large folder, many clones)
        if self._order_dirty and now - self._order_at >= max(
                ORDER_REFRESH, ORDER_REFRESH_PER_FILE * len(self._file_idx)):
            self._rebuild_order(now)
        order = self._order
        pos = peer.app.get("scan", 0) if peer.app.get("scan_gen") == self._order_gen else 0
        spare = have is True and self._n_all < len(self.peers)
        seed = peer if spare else None
        while pos < len(order):
            f = order[pos]
            if f not in self.done and _has(have, f) \
                    and not (spare and self._count[f] and self._other_has_room(peer, f, now)):
                b = self._take(f, seed, now)
                if b is not None:
                    peer.app["scan"], peer.app["scan_gen"] = pos, self._order_gen
                    return f, b
            pos += 1
        peer.app["scan"], peer.app["scan_gen"] = pos, self._order_gen
        # files the peer said HAVE for since the order was built (the peer had
        # nothing else for us in it)
        fresh = peer.app.get("fresh")
        while fresh:
            f = fresh[-1]
            if f not in self.done:
                b = self._take(f, None, now)
                if b is not None:
                    return f, b
            fresh.pop()
        if have is not True:
            key = self._take_offer(peer)
            if key is not None:
                return key
            if self._n_all:
                key = self._pick_moved(peer)
                if key is not None:
                    return key
        if self._remaining == len(self.inflight):
            return self._pick_copy(peer, now)
        return None

    def _pick_moved(self, peer: PeerConnection) -> Key | None:
        """A request waiting at a peer that holds everything, for a block this
        peer holds too: moved here (CANCEL there), the latest first, since the
        seed's queue is served oldest first. Seeds are the swarm's scarce
        upload; what other clones hold is fetched from them."""
        for seed in self.peers:
            if seed is peer or seed.app.get("have") is not True:
                continue
            for key in islice(reversed(seed.app["inflight"]), MOVE_WINDOW):
                if self._holds(peer, *key) and len(self.inflight.get(key, ())) == 1:
                    seed.send(wire.Cancel(self.version, *key))
                    self._remember_cancel(seed, key)
                    self._release(seed, key)
                    self.blocks_moved += 1
                    return key
        return None

    def _other_has_room(self, seed: PeerConnection, f: int, now: float) -> bool:
        """A peer other than `seed` (which holds everything) that holds f and
        has room in its pipeline: f is left to it, sparing the seed's upload."""
        for q in self.peers:
            have = q.app.get("have")
            if q is not seed and have is not True and have is not None and _has(have, f) \
                    and q.app.get("version") == self.version and not q.link.closed \
                    and q.app["inflight_bytes"] < self._target(q, now):
                return True
        return False

    def _pick_copy(self, peer: PeerConnection, now: float) -> Key | None:
        """Endgame: a block requested elsewhere, the longest outstanding first.
        A seed copies a request waiting at a clone peer only once it has waited
        SEED_COPY_AFTER: seeds are the swarm's scarce upload."""
        mine = peer.app["inflight"]
        seed = peer.app.get("have") is True
        for key, holders in self.inflight.items():
            if len(holders) < ENDGAME_COPIES and key not in mine and self._holds(peer, *key):
                if seed and now - self._asked_at.get(key, 0.0) < SEED_COPY_AFTER \
                        and any(h.app.get("have") is not True for h in holders):
                    continue
                self.blocks_duplicated += 1
                return key
        return None

    def _request(self, peer: PeerConnection, key: Key) -> bytes:
        """Record a request for `key` at `peer`; the encoded frame to send."""
        size = self._block_size(*key)
        peer.app["inflight"][key] = size
        peer.app["inflight_bytes"] += size
        self._requests += 1
        self._requested_bytes += size
        holders = self.inflight.setdefault(key, [])
        if not holders:
            self._asked_at[key] = time.monotonic()
        holders.append(peer)
        return wire.encode(wire.Request(self.version, key[0], key[1]))

    def _schedule(self, peer: PeerConnection) -> None:
        if self.manifest is None or self.failed or self.completed or peer.link.closed \
                or peer.app.get("version") != self.version or peer.app.get("have") is None \
                or peer.app.get("lanes_ready") \
                or self.live.is_slow(peer):  # its lanes fetch / it stopped delivering
            return
        now = time.monotonic()
        target = self._target(peer, now)
        sent = []
        while peer.app["inflight_bytes"] < target and self._requests < self.max_requests \
                and self._requested_bytes < self.max_bytes and self.down.allow(now):
            key = self._pick(peer, now)
            if key is None:
                break
            sent.append(self._request(peer, key))
            self.down.spend(self._block_size(*key), now)
        if sent:
            peer.send_raw(b"".join(sent))

    def _kick(self) -> None:
        for p in list(self.peers):
            self._schedule(p)

    def _release(self, peer: PeerConnection, key: Key) -> bool:
        """Forget peer's request for key. True when nobody else was asked for it."""
        size = peer.app["inflight"].pop(key, None)
        if size is not None:
            peer.app["inflight_bytes"] -= size
            self._requests -= 1
            self._requested_bytes -= size
        holders = self.inflight.get(key)
        if holders is None:
            self._asked_at.pop(key, None)
            return True
        if peer in holders:
            holders.remove(peer)
        if holders:
            return False
        del self.inflight[key]
        self._asked_at.pop(key, None)
        return True

    def _remember_cancel(self, peer: PeerConnection, key: Key) -> None:
        cancelled = peer.app.setdefault("cancelled", {})
        cancelled[(self.version, *key)] = None
        if len(cancelled) > CANCELLED_MEMORY:
            del cancelled[next(iter(cancelled))]

    def _ensure_tick(self) -> None:
        if self._tick_handle is None and not self._closed:
            self._tick_handle = self.loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        if self._closed or self.failed or self.completed or not self.peers:
            return
        try:
            self.records.maybe_flush()
        except DattuiError as exc:
            self._fail(exc)
            return
        self._kick()
        collaborators.report(self, self.peers)
        if self.lanes > 0:
            self.cpu.sample()
            self._maybe_lanes()
        self._ensure_tick()

    # ---- peers -------------------------------------------------------------------
    def attach(self, peer: PeerConnection) -> None:
        if peer.closed_reason:
            return  # closing already (a duplicate connection to a peer we have)
        if self.live.refuses(peer.remote_id):
            peer.close(ERR_GONE, "sent bad data earlier in this transfer")
            return
        self.contacted = True
        self._feed(lv.PeerAuthenticated(peer, peer.link.addr, peer.remote_id))
        super().attach(peer)
        self._start_peer(peer)

    def _start_peer(self, peer) -> None:
        peer.app["inflight"] = {}
        peer.app["inflight_bytes"] = 0
        peer.app["have"] = None
        peer.app["pb"] = {}
        peer.app["offers"] = deque()
        peer.send(wire.GetManifest(self.version))
        if self.manifest is not None and self.state == State.SEARCHING:
            self.state = State.TRANSFERRING
        self._ensure_tick()

    def detach(self, peer: PeerConnection, reason: str) -> None:
        bad = getattr(peer, "close_code", None) in (ERR_BAD_BLOCK, ERR_PROTOCOL)  # lanes have none
        self._feed(lv.PeerClosed(peer, bad, reason))
        super().detach(peer, reason)
        self._drop_availability(peer)
        for key in list(peer.app.get("inflight", {})):
            if self._release(peer, key):
                self.retry[key] = None
        self._kick()

    def on_writable(self, peer: PeerConnection) -> None:
        self.server.pump(peer)

    # ---- serving what is verified --------------------------------------------------
    def _leaves_of(self, file: int, entry: mf.Entry) -> bytes | None:
        return self.records.leaves(file) if file in self.done else None

    def read_block(self, version: int, file: int, block: int) -> tuple[bytes, list[bytes]] | None:
        if self.manifest is None or version != self.version:
            return None
        if file in self.done:
            return self.blocks.read(self.manifest, file, block)
        # a file held in part: the block with the proof it was verified with
        if block not in self.verified.get(file, ()) or (file, block) in self._unprovable:
            return None
        row = self.records.proof(file, block)
        if row is None or row[1] is None:
            return None
        leaf, proof = row
        return self.blocks.read_verified(self.manifest, file, block, leaf,
                                         merkle.split_leaves(proof))

    def on_frame(self, peer: PeerConnection, frame) -> None:
        try:
            if isinstance(frame, wire.Data):
                self._on_data(peer, frame)
            elif isinstance(frame, wire.HaveBlocks):
                self._on_have_blocks(peer, frame)
            elif isinstance(frame, wire.Have):
                self._on_have(peer, frame)
            elif isinstance(frame, wire.HaveAll):
                self._on_summary(peer, frame.version, None)
            elif isinstance(frame, wire.Bitfield):
                self._on_summary(peer, frame.version, frame)
            elif isinstance(frame, wire.ManifestPart):
                self._on_manifest_part(peer, frame)
            elif isinstance(frame, wire.ManifestSignature):
                self._on_manifest_sig(peer, frame)
            elif isinstance(frame, wire.NewVersion):
                # newer: fetch it; ours, from a peer that had none when we asked:
                # ask again, for what it holds
                if frame.version > self.version or (
                        frame.version == self.version and peer.app.get("version") != self.version):
                    peer.send(wire.GetManifest(self.version))
            elif type(frame) is wire.NoData:
                self._on_no_data(peer, frame)
            elif type(frame) is wire.Request:
                if self.upload:
                    self.server.request(peer, frame)
                else:
                    peer.send(wire.NoData(frame.version, frame.file, frame.block))
            elif type(frame) is wire.Cancel:
                self.server.cancel(peer, frame)
            elif isinstance(frame, wire.GetManifest):
                if self.manifest is not None and self.upload:
                    send_manifest(peer, self.version, self.encoded, self.signature,
                                  frame.have_version, self._summary_frames())
            elif isinstance(frame, wire.Lanes):
                peer.app["lane_ports"] = frame.ports
                peer.app["lanes_busy"] = frame.busy
                self._maybe_lanes()
            else:
                self.common_frame(peer, frame)
        except UnsafeManifest as exc:
            self._fail(exc)
            peer.close(ERR_PROTOCOL, "unsafe manifest")
        except DattuiError as exc:
            self._fail(exc)
        except OSError as exc:  # the target folder refused (a name the filesystem cannot take)
            self._fail(disk_error(exc, "the target folder"))
            peer.close(ERR_GONE, "cannot write")
        except (ValueError, IndexError, KeyError, TypeError, RecursionError, OverflowError) as exc:
            # a frame we could not handle: that peer goes, never a traceback
            self.emit(Logged(self.tid, "warning", f"peer {peer.peer_id}: cannot handle "
                                                  f"{type(frame).__name__}: {exc!r}"))
            peer.close(ERR_PROTOCOL, f"frame not handled: {type(exc).__name__}")

    def _on_no_data(self, peer: PeerConnection, f: wire.NoData) -> None:
        key = (f.file, f.block)
        if f.version != self.version:
            peer.send(wire.GetManifest(self.version))
            return
        if key not in peer.app.get("inflight", {}):
            return  # a request cancelled since
        if self._release(peer, key):
            self.retry[key] = None
        peer.app["lacks"] = peer.app.get("lacks", 0) + 1
        self._lose(peer, f.file, f.block)
        self._kick()

    def _on_manifest_part(self, peer: PeerConnection, f: wire.ManifestPart) -> None:
        if f.version > self.version:  # an older version's parts are no progress
            self._feed(lv.DataArrived(peer, len(f.chunk)))
        parts = peer.app.get("manifest")
        if f.offset == 0:
            if f.total > mf.MAX_MANIFEST_BYTES:
                raise ProtocolError("manifest too large")
            parts = peer.app["manifest"] = (f.version, f.total, bytearray())
        if parts is None or parts[0] != f.version or parts[1] != f.total or len(parts[2]) != f.offset:
            raise ProtocolError("manifest parts out of order")
        before = len(parts[2])
        parts[2].extend(f.chunk)
        if len(parts[2]) > f.total:
            raise ProtocolError("manifest longer than announced")
        if f.total >= MANIFEST_PROGRESS_STEP and f.version > self.version and (
                before == 0 or before // MANIFEST_PROGRESS_STEP != len(parts[2]) // MANIFEST_PROGRESS_STEP
                or len(parts[2]) == f.total):
            self.emit(ManifestProgressed(self.tid, f.version, len(parts[2]), f.total))

    def _on_manifest_sig(self, peer: PeerConnection, f: wire.ManifestSignature) -> None:
        self._feed(lv.VersionOffered(peer, f.version))
        self._drop_availability(peer)  # what it holds follows (HAVE_ALL or BITFIELD)
        parts = peer.app.pop("manifest", None)
        if parts is None:
            # the peer has nothing newer than what we hold
            peer.app["version"] = f.version if f.version == self.version else None
            self._check_complete()  # a re-run of a finished clone: the share has nothing newer
            return
        if parts[0] != f.version or len(parts[2]) != parts[1]:
            raise ProtocolError("incomplete manifest")
        encoded = bytes(parts[2])
        parts[2].clear()  # a 2,000,000-entry list is 124 MiB: not held twice while it is decoded
        self._apply_manifest(encoded, f.signature)
        peer.app["version"] = f.version if f.version == self.version else None
        for p in self.peers:  # peers that had no manifest or another one when we asked
            if p is not peer and p.app.get("version") != self.version:
                if self.upload:
                    p.send(wire.NewVersion(self.version))
                p.send(wire.GetManifest(self.version))

    def _claim(self, peer, f) -> bool | None:
        """A block arrived from `peer`: None when it was not asked of it (or
        not any more); else whether this was the only request out for it."""
        key = (f.file, f.block)
        mine = peer.app.get("inflight", {})
        if key not in mine or f.version != self.version:
            cancelled = peer.app.get("cancelled", {})
            if (f.version, f.file, f.block) in cancelled:
                del cancelled[(f.version, f.file, f.block)]
                self.bytes_wasted += len(f.data)  # a copy already on its way when cancelled
                return None
            peer.app["unsolicited"] = peer.app.get("unsolicited", 0) + 1
            if peer.app["unsolicited"] > MAX_UNSOLICITED:
                peer.close(ERR_PROTOCOL, "too many unrequested blocks")
            return None
        if "first_data" not in peer.app:
            peer.app["first_data"] = time.monotonic()
        return self._release(peer, key)

    def _on_data(self, peer: PeerConnection, f: wire.Data) -> None:
        alone = self._claim(peer, f)
        if alone is None:
            return
        leaf = mf.block_leaf(self.manifest, f.file, f.block, f.data, f.proof)
        if leaf is None:
            if alone:
                self.retry[(f.file, f.block)] = None
            self._bad_block(peer, f.file, f.block)
            return
        self._store(peer, f, leaf, alone)

    def on_verified(self, peer, f) -> None:
        """A block a lane checked against the signed tree already."""
        alone = self._claim(peer, f)
        if alone is not None:
            try:
                self._store(peer, f, f.leaf, alone)
            except DattuiError as exc:
                self._fail(exc)

    def _bad_block(self, peer, file: int, block: int) -> None:
        self.emit(BadBlockReceived(self.tid, peer.peer_id, self.manifest.entries[file].path, block))
        peer.close(ERR_BAD_BLOCK, "sent a block that does not match the signed tree")

    def _store(self, peer, f, leaf: bytes, alone: bool) -> None:
        """Write a verified block and tell whoever should know."""
        m = self.manifest
        e = m.entries[f.file]
        data = f.data
        if not alone:  # endgame: the other copies are not needed any more
            key = (f.file, f.block)
            for other in list(self.inflight.get(key, ())):
                other.send(wire.Cancel(self.version, f.file, f.block))
                self._remember_cancel(other, key)
                self._release(other, key)
        self.target.write(e.path, e.size, f.block * m.block_size, data)
        have = self.verified.setdefault(f.file, {})
        have[f.block] = leaf
        n = len(data)
        self.bytes_received += n
        self.bytes_have += n
        self._remaining -= 1
        peer.blocks_down += 1
        self._feed(lv.DataArrived(peer, n))
        if len(have) == e.blocks(m.block_size):
            self._file_complete(f.file, nbytes=n)
        else:
            self.records.add_verified(f.file, f.block, leaf, b"".join(f.proof), n)
            if self.upload:  # served from now on, with the proof it came with
                frame = None
                for p in self.peers:
                    if not p.link.closed and not self._holds(p, f.file, f.block):
                        frame = frame or wire.encode(
                            wire.HaveBlocks(self.version, f.file, ((f.block, 1),)))
                        p.send_raw(frame)
        self._check_complete()
        if self._remaining == len(self.inflight):
            self._kick()  # endgame: every peer with room takes copies
        else:
            self._schedule(peer)

    # ---- lanes: more connections to a share, in processes of their own ----------------
    def _maybe_lanes(self) -> None:
        """Start lanes to a seed that offers them, on a direct path, when enough
        is left to fetch and this process or the seed's is CPU-bound; one set
        per version."""
        m = self.manifest
        if self.lanes <= 0 or m is None or self._closed or self.failed or self.completed \
                or self.lane_peers or self._selected_bytes - self.bytes_have < lanes_policy.MIN_BYTES:
            return
        busy = self.cpu.busy()
        for p in self.peers:
            ports = p.app.get("lane_ports")
            if not ports or not (busy or p.app.get("lanes_busy")) \
                    or p.app.get("have") is not True or p.app.get("version") != self.version \
                    or p.app.get("lanes_tried") == self.version or p.link.closed \
                    or not lanes_policy.lane_path_ok(p):
                continue
            p.app["lanes_tried"] = self.version
            frames = manifest_frames(self.version, self.encoded, self.signature)
            for port in ports[:self.lanes]:
                self._lane_count += 1
                lp = LanePeer(self, self._lane_count, (p.link.addr[0], port), p.path, p)
                self.lane_peers.append(lp)
                config = {"role": "clone", "public_key": self.public_key.hex(),
                          "peer_host": p.link.addr[0], "peer_port": port, "path": p.path.value,
                          **self.lane_options}
                asyncio.ensure_future(self._start_lane(lp, config, frames))
            return

    async def _start_lane(self, lp: LanePeer, config: dict, frames: list) -> None:
        try:
            await lp.start(config, frames)
        except OSError as exc:
            self.emit(Logged(self.tid, "warning", f"cannot start a lane process: {exc}"))
            lp.close(0, f"cannot start: {exc}")

    def lane_ready(self, lp: LanePeer) -> None:
        if self._closed or lp.link.closed or self.state == State.PAUSED:
            lp.close(0, "not wanted any more")
            return
        self.peers.append(lp)  # not SwarmBase.attach: a lane is no peer for peer exchange
        self._start_peer(lp)
        lp.parent.app["lanes_ready"] = lp.parent.app.get("lanes_ready", 0) + 1
        self.emit(Logged(self.tid, "info", f"lane {lp.index} connected to {lp.address} "
                                           f"in {lp.connect_seconds:.2f} s"))

    def paused(self) -> None:
        for lp in list(self.lane_peers):
            lp.close(0, "paused")

    def lane_bad_block(self, lp: LanePeer, file: int, block: int) -> None:
        if self.manifest is not None and 0 <= file < len(self.manifest.entries):
            self._bad_block(lp, file, block)

    def lane_closed(self, lp: LanePeer, was_ready: bool) -> None:
        if lp in self.lane_peers:
            self.lane_peers.remove(lp)
        if was_ready and lp in self.peers:
            lp.parent.app["lanes_ready"] -= 1
            self.detach(lp, lp.closed_reason)  # its requests go back: the parent fetches again
            if not self._closed and not self.completed:
                self.emit(Logged(self.tid, "info", f"lane {lp.index} closed: {lp.closed_reason}"))

    def _file_complete(self, idx: int, nbytes: int = 0) -> None:
        e = self.manifest.entries[idx]
        if e.size == 0:
            self.target.file_fd(e.path, 0)
        self.target.finish_file(e.path, e.size, e.mode, e.mtime_ns)
        have = self.verified.get(idx, {})
        leaves = b"".join(have[b] for b in range(len(have)))
        self.records.file_done(idx, leaves, nbytes)
        self.done.add(idx)
        self.verified.pop(idx, None)
        self._next.pop(idx, None)
        self._perm.pop(idx, None)
        self._bc.pop(idx, None)
        if self._unprovable:
            self._unprovable = {k for k in self._unprovable if k[0] != idx}
        if self.upload and e.size:
            have_frame = wire.encode(wire.Have(self.version, idx))
            for p in self.peers:
                if p.app.get("have") is not True and not p.link.closed:
                    p.send_raw(have_frame)
        self.emit(FileCompleted(self.tid, e.path, e.size))

    def _check_complete(self) -> None:
        m = self.manifest
        if self.completed or m is None or self._selected_done() < self._file_count:
            return
        dirs = self._selected_dirs()
        for e in sorted(dirs, key=lambda e: e.path.count("/"), reverse=True):
            self.target.finish_dir(e.path, e.mode, e.mtime_ns)
        self.records.flush()  # every file and folder durable, then the records
        wrong = sizes_differ(self.target, m, self._wants())
        if wrong:
            raise DiskError(f"{len(wrong)} files in {self.folder} do not have the size of version "
                            f"{m.version} (first: {wrong[0]}); something else writes there: stop "
                            "it and run the same command again")
        self.completed = True
        self.completed_at = time.monotonic()
        self.state = State.SEEDING if self.sync else State.DONE
        self.emit(CloneCompleted(self.tid, m.version, self._file_count, self._selected_bytes,
                                 self.bytes_received, self.completed_at - self.started))
        collaborators.report(self, self.peers, force=True)
        if self.upload and len(self.done) >= self._all_files:  # what a peer that saw our bitfield holds now: everything
            for p in self.peers:
                if p.app.get("have") is not True and not p.link.closed:
                    p.send(wire.HaveAll(self.version))

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
            files_total=self._file_count if m else 0, files_done=self._selected_done() if m else 0,
            bytes_total=self._selected_bytes if m else 0,
            bytes_have=self.bytes_have - self.records.pending_bytes,  # what is durable
            bytes_received=self.bytes_received, bytes_sent=self.server.bytes_sent,
            active_files=tuple(active))

    async def close(self) -> None:
        self._closed = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        self._stop_watch()
        await asyncio.gather(*(lp.process.stop() for lp in self.lane_peers), return_exceptions=True)
        await super().close()
        try:
            self.records.flush()  # a clean stop keeps every block verified so far
        except DattuiError:
            pass
        self.records.close()
        self.blocks.close()
        self.target.close()
        self.db.close()
        if self.adopt == adopt.MISSING:  # never checked: the folder is left as it was found
            adopt.forget_state(self.folder)
