"""When a clone's state may say a block is verified: only once its bytes are durable.

The contract, kept by this module and engine/clonefs.py:

1. A block's bytes are written (pwrite) as soon as they verify; the block is
   served and counted in memory at once, but its record (the `verified` row,
   or the `done_files` row of a finished file) is only queued here.
2. A batch is closed by taking what is dirty (TargetFolder.take_dirty: the
   files written since the last batch, finished files, folders whose entries
   changed); a worker thread makes it durable (clonefs.sync_jobs: fdatasync
   each, fsync for finished files and folders, or one syncfs(2) when many
   are dirty) and then, in the same thread, once that has returned, commits
   the batch's records in one transaction, while the event loop goes on
   receiving (the loop's thread writes nothing to the database meanwhile:
   every other write waits for the batch through `flush`). After a power cut the state therefore never names a block
   whose bytes may be zeros; at worst it lacks the last batches' blocks,
   which are fetched again. One batch is synced at a time, in order.
3. A batch is closed when it holds FLUSH_BYTES, FLUSH_RECORDS or FLUSH_FILES
   finished files or is older than FLUSH_SECONDS. `flush` does the same synchronously (waiting for the
   batch in the thread first): before a new version is applied (the old
   version's files are then closed, and reopened at the new version's
   size), before `done` is reported (with every folder fsynced), and on a
   clean close.
4. The state database runs WAL with synchronous=FULL (engine/store.py): each
   commit is on disk when it returns. It costs one fsync of the WAL per batch,
   not per block, and makes `done` mean the state says done too.

What the front end reports as held (`pending_bytes` subtracted) is what is
durable, so a progress line never claims bytes that a crash could take back.

DATTUI_NO_SYNC=1 turns every fsync off (and the database to synchronous=OFF):
for measuring what syncing costs with bench/bench_clone.py, never for use.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor

from .clonefs import TargetFolder, sync_jobs
from .errors import DattuiError, DiskError
from .store import CloneDB

FLUSH_BYTES = 16 * 1024 * 1024
FLUSH_RECORDS = 4096
FLUSH_FILES = 256   # finished files held open for their fsync (clonefs.SYNCFS_OVER bounds them)
FLUSH_SECONDS = 0.25


def sync_enabled(environ=None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("DATTUI_NO_SYNC", "") in ("", "0")


class DurableRecords:
    """A write-behind queue of a clone's block and file records; answers the
    same questions as CloneDB for what it holds. `on_error(DattuiError)` is
    called when a sync in the worker thread fails (disk full, I/O error)."""

    def __init__(self, db: CloneDB, target: TargetFolder, durable: bool = True,
                 clock=time.monotonic, on_error=None) -> None:
        self.db = db
        self.target = target
        self.clock = clock
        self.durable = durable
        self.on_error = on_error
        target.durable = durable
        db.set_durable(durable)
        self._blocks: dict[tuple[int, int], tuple[bytes, bytes | None]] = {}
        self._done: dict[int, bytes] = {}
        self._bytes = 0
        self._since: float | None = None
        # the batch being synced in the worker thread: (future, blocks, done, bytes)
        self._syncing: tuple[Future, dict, dict, int] | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes verified and written but not yet recorded (not yet durable)."""
        return self._bytes + (self._syncing[3] if self._syncing else 0)

    # ---- queueing ----------------------------------------------------------------
    def add_verified(self, file: int, block: int, leaf: bytes, proof: bytes | None,
                     nbytes: int) -> None:
        self._blocks[(file, block)] = (leaf, proof)
        self._queued(nbytes)

    def file_done(self, file: int, leaves: bytes, nbytes: int) -> None:
        self._done[file] = leaves
        self._queued(nbytes)

    def _queued(self, nbytes: int) -> None:
        self._bytes += nbytes
        if self._since is None:
            self._since = self.clock()
        if self._bytes >= FLUSH_BYTES or len(self._blocks) + len(self._done) >= FLUSH_RECORDS \
                or self.target.finished_open >= FLUSH_FILES:
            self._start()

    def maybe_flush(self) -> None:
        if self._since is not None and self.clock() - self._since >= FLUSH_SECONDS:
            self._start()

    # ---- reading through the queue -------------------------------------------------
    def proof(self, file: int, block: int) -> tuple[bytes, bytes | None] | None:
        got = self._blocks.get((file, block))
        if got is None and self._syncing:
            got = self._syncing[1].get((file, block))
        return got if got is not None else self.db.proof(file, block)

    def leaves(self, file: int) -> bytes | None:
        got = self._done.get(file)
        if got is None and self._syncing:
            got = self._syncing[2].get(file)
        return got if got is not None else self.db.leaves(file)

    # ---- making it durable ------------------------------------------------------------
    def _take(self) -> tuple[dict, dict, int]:
        batch = (self._blocks, self._done, self._bytes)
        self._blocks, self._done, self._bytes, self._since = {}, {}, 0, None
        return batch

    def _commit(self, blocks: dict, done: dict) -> None:
        if blocks or done:
            self.db.record_batch(
                [(f, b, leaf, proof) for (f, b), (leaf, proof) in blocks.items() if f not in done],
                list(done.items()))

    def _start(self) -> None:
        """Close the batch and sync it in the worker thread (one at a time)."""
        if self._syncing is not None:
            return  # the next tick starts the next batch
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        jobs = self.target.take_dirty()
        blocks, done, nbytes = self._take()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="dattui-sync")
        fut = self._pool.submit(self._sync_and_commit, jobs, blocks, done)
        self._syncing = (fut, blocks, done, nbytes)
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._landed, f))

    def _sync_and_commit(self, jobs, blocks: dict, done: dict) -> None:
        """In the worker thread: the bytes, then their records."""
        sync_jobs(jobs, self.durable)
        self._commit(blocks, done)

    def _landed(self, fut: Future) -> None:
        if self._syncing is None or self._syncing[0] is not fut:
            return  # waited for by flush already
        self._syncing = None
        try:
            fut.result()
        except DattuiError as exc:
            if self.on_error:
                self.on_error(exc)
        except sqlite3.Error as exc:
            if self.on_error:
                self.on_error(DiskError(f"cannot record progress in the state database: {exc}; "
                                        "run the same command again"))

    def flush(self) -> None:
        """Everything queued durable and recorded, now: the batch in the
        thread first, then the rest; bytes always before their records."""
        if self._syncing is not None:
            fut = self._syncing[0]
            self._syncing = None
            fut.result()  # raises DiskError
        sync_jobs(self.target.take_dirty(), self.durable)
        blocks, done, _ = self._take()
        self._commit(blocks, done)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
