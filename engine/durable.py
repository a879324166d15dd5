"""When a clone's state may say a block is verified: only once its bytes are durable.

The contract, kept by this module and engine/clonefs.py:

1. A block's bytes are written (pwrite) as soon as they verify; the block is
   served and counted in memory at once, but its record (the `verified` row,
   or the `done_files` row of a finished file) is only queued here.
2. `flush` first makes the writes durable (TargetFolder.sync: fdatasync of
   every file written since the last flush, fsync of finished files and of
   folders whose entries changed, or one syncfs(2) when many are dirty), and
   only then commits every queued record in one transaction. After a power
   cut the state therefore never names a block whose bytes may be zeros; at
   worst it lacks the blocks of the last batch, which are fetched again.
3. A batch is flushed when it holds FLUSH_BYTES, FLUSH_RECORDS or is older
   than FLUSH_SECONDS, before a new version is applied (the old version's
   files are then closed, and reopened at the new version's size), before
   `done` is reported (with every folder fsynced), and on a clean close.
4. The state database runs WAL with synchronous=FULL (engine/store.py): each
   commit is on disk when it returns. It costs one fsync of the WAL per batch,
   not per block, and makes `done` mean the state says done too.

What the front end reports as held (`pending_bytes` subtracted) is what is
durable, so a progress line never claims bytes that a crash could take back.

DATTUI_NO_SYNC=1 turns every fsync off (and the database to synchronous=OFF):
for measuring what syncing costs with bench/bench_clone.py, never for use.
"""

from __future__ import annotations

import os
import time

from .clonefs import TargetFolder
from .store import CloneDB

FLUSH_BYTES = 64 * 1024 * 1024
FLUSH_RECORDS = 4096
FLUSH_SECONDS = 1.0


def sync_enabled(environ=None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("DATTUI_NO_SYNC", "") in ("", "0")


class DurableRecords:
    """A write-behind queue of a clone's block and file records; answers the
    same questions as CloneDB for what it holds."""

    def __init__(self, db: CloneDB, target: TargetFolder, durable: bool = True,
                 clock=time.monotonic) -> None:
        self.db = db
        self.target = target
        self.clock = clock
        self.durable = durable
        target.durable = durable
        db.set_durable(durable)
        self._blocks: dict[tuple[int, int], tuple[bytes, bytes | None]] = {}
        self._done: dict[int, bytes] = {}
        self.pending_bytes = 0
        self._since: float | None = None

    # ---- queueing ----------------------------------------------------------------
    def add_verified(self, file: int, block: int, leaf: bytes, proof: bytes | None,
                     nbytes: int) -> None:
        self._blocks[(file, block)] = (leaf, proof)
        self._queued(nbytes)

    def file_done(self, file: int, leaves: bytes, nbytes: int) -> None:
        self._done[file] = leaves
        self._queued(nbytes)

    def _queued(self, nbytes: int) -> None:
        self.pending_bytes += nbytes
        if self._since is None:
            self._since = self.clock()
        if self.pending_bytes >= FLUSH_BYTES \
                or len(self._blocks) + len(self._done) >= FLUSH_RECORDS:
            self.flush()

    def maybe_flush(self) -> None:
        if self._since is not None and self.clock() - self._since >= FLUSH_SECONDS:
            self.flush()

    # ---- reading through the queue -------------------------------------------------
    def proof(self, file: int, block: int) -> tuple[bytes, bytes | None] | None:
        got = self._blocks.get((file, block))
        return got if got is not None else self.db.proof(file, block)

    def leaves(self, file: int) -> bytes | None:
        got = self._done.get(file)
        return got if got is not None else self.db.leaves(file)

    # ---- making it durable ------------------------------------------------------------
    def flush(self) -> None:
        """Bytes first (TargetFolder.sync), then the records, in one commit."""
        self.target.sync()
        if not self._blocks and not self._done:
            self._since = None
            return
        blocks, done = self._blocks, self._done
        self._blocks, self._done = {}, {}
        self.pending_bytes = 0
        self._since = None
        self.db.record_batch(
            [(f, b, leaf, proof) for (f, b), (leaf, proof) in blocks.items() if f not in done],
            list(done.items()))
