"""SQLite state in a share's or clone's `.dat/` folder (WAL mode).

ShareDB: the share's public key, its newest two signed manifest versions and,
per version, a table `entries_<version>` with one row per entry in manifest
order (idx = the entry's index: folders first, then files, each by path), with
each file's leaf hashes. It serves blocks (a row per request, not the whole
manifest in memory) and makes rescans cheap (unchanged files keep their
hashes). A scan writes through its own connection (`ScanWriter`) as it goes.
CloneDB: the link, the newest verified manifest, and which blocks of it are
verified on disk, each with the Merkle proof it came with (so a clone serves
any block it has verified, before the whole file is there). A block is
recorded only after its bytes are durable (engine/durable.py batches the
records and syncs the files first), so a clone killed at any moment, or a
machine losing power, refetches at most the blocks of the last batch.

synchronous=FULL: a commit is on disk when it returns (one fsync of the WAL
per commit; clones commit once per batch of blocks, not per block).

A database SQLite cannot read (truncated, overwritten) raises StateDamaged,
a one-line error; `dattui clone` recovers from it (engine/adopt.py).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from .errors import DattuiError, DiskError


class StateDamaged(DattuiError):
    """The state database cannot be read."""

    exit_code = 1


def damaged(folder: Path, exc: Exception) -> StateDamaged:
    return StateDamaged(
        f"the state database {db_path(folder)} is damaged ({exc}); for a clone, run the same "
        "`dattui clone LINK DIR` again: it checks the files already there against the share "
        "and fetches only what differs")

DB_DIR = ".dat"
SIGNATURE_SIZE = 64  # ed25519
DB_NAME = "dattui.db"

_COMMON = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS manifests (
    version INTEGER PRIMARY KEY, encoded BLOB NOT NULL, signature BLOB NOT NULL);
"""
# `scanned` held one scan in a single table (dattui before per-version entry
# tables); its files are hashed again once.
_SHARE = """
DROP TABLE IF EXISTS scanned;
"""
_ENTRIES = """CREATE TABLE {table} (
    idx INTEGER PRIMARY KEY, kind INTEGER NOT NULL, path TEXT NOT NULL UNIQUE,
    mode INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
    root BLOB NOT NULL, leaves BLOB)"""
_CLONE = """
CREATE TABLE IF NOT EXISTS verified (
    file INTEGER NOT NULL, block INTEGER NOT NULL, leaf BLOB NOT NULL, proof BLOB,
    PRIMARY KEY (file, block)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS done_files (file INTEGER PRIMARY KEY, leaves BLOB NOT NULL);
"""


def db_path(folder: Path) -> Path:
    return folder / DB_DIR / DB_NAME


def _connect(folder: Path, create: bool) -> sqlite3.Connection:
    d = folder / DB_DIR
    try:
        if create:
            d.mkdir(mode=0o700, exist_ok=True)
        conn = sqlite3.connect(d / DB_NAME, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "not a database" not in str(exc) \
                and "malformed" not in str(exc):
            raise DiskError(f"cannot open the state database in {d}: {exc}; "
                            "check that the folder is writable") from None
        raise damaged(folder, exc) from None
    except OSError as exc:
        raise DiskError(f"cannot open the state database in {d}: {exc}; "
                        "check that the folder is writable") from None
    return conn


class _DB:
    SCHEMA = ""

    def __init__(self, folder: Path, create: bool = True) -> None:
        self.folder = folder
        self.conn = _connect(folder, create)
        try:
            self.conn.executescript(_COMMON + self.SCHEMA)
            self.conn.execute("SELECT count(*) FROM meta").fetchone()
            self.conn.execute("SELECT count(*) FROM manifests").fetchone()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise damaged(folder, exc) from None

    def set_durable(self, durable: bool) -> None:
        self.conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")

    def get(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else row[0]

    def set(self, key: str, value) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def latest_manifest(self) -> tuple[int, bytes, bytes] | None:
        row = self.conn.execute(
            "SELECT version, encoded, signature FROM manifests ORDER BY version DESC LIMIT 1").fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass


def entries_table(version: int) -> str:
    return f"entries_{int(version)}"


class ShareDB(_DB):
    SCHEMA = _SHARE

    def save_manifest(self, version: int, encoded: bytes, signature: bytes) -> None:
        """Store a version (its entries table written), then `prune`."""
        self.conn.execute("INSERT OR REPLACE INTO manifests VALUES (?, ?, ?)",
                          (version, encoded, signature))
        self.prune(version)

    def prune(self, version: int) -> None:
        """Versions (and their entry tables) older than the newest two go."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM manifests WHERE version < ?", (version - 1,))
            for v in self.entry_versions():
                if v < version - 1:
                    self.conn.execute(f"DROP TABLE {entries_table(v)}")

    def manifest_length(self, version: int) -> int:
        return self.conn.execute("SELECT length(encoded) FROM manifests WHERE version=?",
                                 (version,)).fetchone()[0]

    def signature(self, version: int) -> bytes:
        return self.conn.execute("SELECT signature FROM manifests WHERE version=?",
                                 (version,)).fetchone()[0]

    def latest_head(self) -> tuple[int, bytes] | None:
        """(version, the first bytes of its encoding) of the newest version,
        without reading the whole manifest (tens of MB for a million files)."""
        row = self.conn.execute("SELECT max(version) FROM manifests").fetchone()
        if row is None or row[0] is None:
            return None
        with self.conn.blobopen("manifests", "encoded", row[0], readonly=True) as blob:
            return row[0], blob.read(64)

    def entry_versions(self) -> list[int]:
        names = [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name GLOB 'entries_[0-9]*'")]
        return sorted(int(n.split("_", 1)[1]) for n in names)

    def has_entries(self, version: int) -> bool:
        return _has_table(self.conn, entries_table(version))

    def entry(self, version: int, idx: int) -> tuple | None:
        """(kind, path, mode, mtime_ns, size, root, leaves) of entry `idx` of a
        version, or None (no such entry, or the version's table is gone)."""
        try:
            return self.conn.execute(
                f"SELECT kind, path, mode, mtime_ns, size, root, leaves FROM {entries_table(version)} "
                "WHERE idx=?", (idx,)).fetchone()
        except sqlite3.OperationalError:
            return None

    def totals(self, version: int) -> tuple[int, int, int]:
        """(entries, files, bytes) of a version."""
        row = self.conn.execute(
            f"SELECT count(*), total(kind=1), total(size) FROM {entries_table(version)}").fetchone()
        return row[0], int(row[1]), int(row[2])

    def files(self, version: int):
        """(path, size) of every file of a version, in manifest order (a cursor)."""
        return self.conn.execute(
            f"SELECT path, size FROM {entries_table(version)} WHERE kind=1 ORDER BY idx")

    def scan_writer(self, previous: int | None) -> "ScanWriter":
        return ScanWriter(self.folder, previous if previous is not None and self.has_entries(previous)
                          else None)


class ScanWriter:
    """One scan's results, written while it runs, through a connection of its
    own (the scan runs on a thread while the share serves from the database).

    Files and folders go to a temporary table in walk order; `finish` copies them
    into `entries_<version>` in manifest order; `rows` reads them back in that
    order for encoding. Memory: a batch of rows and SQLite's page cache."""

    BATCH = 1000

    def __init__(self, folder: Path, previous: int | None) -> None:
        self.conn = _connect(folder, False)
        self.conn.execute("PRAGMA temp_store=FILE")
        self.previous = previous
        self.conn.execute("DROP TABLE IF EXISTS temp.scan_next")
        self.conn.execute("CREATE TEMP TABLE scan_next (kind INTEGER, path TEXT, mode INTEGER, "
                          "mtime_ns INTEGER, size INTEGER, root BLOB, leaves BLOB)")
        self._rows: list[tuple] = []

    def lookup(self, path: str) -> tuple[int, int, int, bytes, bytes] | None:
        """(size, mode, mtime_ns, leaves, root) of a file of the previous version."""
        if self.previous is None:
            return None
        return self.conn.execute(
            f"SELECT size, mode, mtime_ns, leaves, root FROM {entries_table(self.previous)} "
            "WHERE path=? AND kind=1", (path,)).fetchone()

    def same_dir(self, path: str, mode: int, mtime_ns: int) -> bool:
        """Whether the previous version has this folder, with this mode and mtime."""
        if self.previous is None:
            return False
        row = self.conn.execute(f"SELECT mode, mtime_ns FROM {entries_table(self.previous)} "
                                "WHERE path=? AND kind=2", (path,)).fetchone()
        return row == (mode, mtime_ns)

    def previous_count(self) -> int | None:
        if self.previous is None:
            return None
        return self.conn.execute(f"SELECT count(*) FROM {entries_table(self.previous)}").fetchone()[0]

    def add(self, kind: int, path: str, mode: int, mtime_ns: int, size: int, root: bytes,
            leaves: bytes | None) -> None:
        self._rows.append((kind, path, mode, mtime_ns, size, root, leaves))
        if len(self._rows) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany("INSERT INTO temp.scan_next VALUES (?, ?, ?, ?, ?, ?, ?)",
                                      self._rows)
            self._rows.clear()

    def finish(self, version: int) -> tuple[int, int, int]:
        """Write `entries_<version>` (folders first, then files, each by path:
        SQLite's BINARY order of UTF-8 is Python's order of str); its
        (entries, files, bytes)."""
        self._flush()
        table = entries_table(version)
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute(f"DROP TABLE IF EXISTS {table}")
            self.conn.execute(_ENTRIES.format(table=table))
            self.conn.execute(
                f"INSERT INTO {table} SELECT row_number() OVER (ORDER BY kind DESC, path) - 1, "
                "kind, path, mode, mtime_ns, size, root, leaves FROM temp.scan_next "
                "ORDER BY kind DESC, path")
            self.conn.execute("DROP TABLE temp.scan_next")
        row = self.conn.execute(
            f"SELECT count(*), total(kind=1), total(size) FROM {table}").fetchone()
        return row[0], int(row[1]), int(row[2])

    def write_manifest(self, version: int, block_size: int, name: str, previous: int | None,
                       sign: Callable[[bytes], bytes]) -> int | None:
        """Encode `entries_<version>` straight into the manifests table, in
        pieces, hashing as it goes, and sign it (`sign(digest)` -> signature),
        all in one transaction, so no other connection sees it unsigned. When
        its entries are those of the stored version `previous`, nothing is
        stored and None is returned; else the encoding's length."""
        from . import manifest as mf
        table = entries_table(version)
        head = mf.header(version, block_size, name)
        count, files, path_bytes = self.conn.execute(
            f"SELECT count(*), total(kind=1), total(length(CAST(path AS BLOB))) FROM {table}").fetchone()
        length = mf.encoded_size(len(head), int(path_bytes), count, int(files))
        rows = self.conn.execute(f"SELECT kind, path, mode, mtime_ns, size, root FROM {table} ORDER BY idx")
        whole, body = hashlib.blake2b(digest_size=32), hashlib.blake2b(digest_size=32)
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM manifests WHERE version=?", (version,))
            self.conn.execute("INSERT INTO manifests VALUES (?, zeroblob(?), zeroblob(?))",
                              (version, length, SIGNATURE_SIZE))
            with self.conn.blobopen("manifests", "encoded", version) as blob:
                for i, piece in enumerate(mf.encode_chunks(version, block_size, name, count, rows)):
                    blob.write(piece)
                    whole.update(piece)
                    if i:
                        body.update(piece)
            if previous is not None and self._body_digest(previous) == body.digest():
                self.conn.rollback()
                return None
            # written in place: an UPDATE would rewrite the row, manifest and all, in memory
            sig = sign(whole.digest())
            if len(sig) != SIGNATURE_SIZE:
                raise ValueError(f"a signature of {len(sig)} bytes")
            with self.conn.blobopen("manifests", "signature", version) as blob:
                blob.write(sig)
        return length

    def _body_digest(self, version: int) -> bytes | None:
        """BLAKE2b of a stored encoding past its header (which names the version)."""
        from .manifest import header_size
        try:
            blob = self.conn.blobopen("manifests", "encoded", version, readonly=True)
        except sqlite3.OperationalError:
            return None
        h = hashlib.blake2b(digest_size=32)
        with blob:
            blob.seek(header_size(blob.read(1 << 16)))
            while piece := blob.read(1 << 20):
                h.update(piece)
        return h.digest()

    def discard(self, version: int, keep_as: int) -> None:
        """Drop `entries_<version>` (its scan found nothing new), or keep it as
        `keep_as`'s when that version has no table (state of an older dattui)."""
        if _has_table(self.conn, entries_table(keep_as)):
            self.conn.execute(f"DROP TABLE {entries_table(version)}")
        else:
            self.conn.execute(f"ALTER TABLE {entries_table(version)} RENAME TO {entries_table(keep_as)}")

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass


class StoredManifest:
    """A version's encoding as stored, read in slices when it is sent (the
    only use of it a share has), so a million-file manifest is not held."""

    def __init__(self, conn: sqlite3.Connection, version: int, length: int) -> None:
        self.conn, self.version, self.length = conn, version, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, s: slice) -> bytes:
        start, stop, _ = s.indices(self.length)
        with self.conn.blobopen("manifests", "encoded", self.version, readonly=True) as blob:
            blob.seek(start)
            return blob.read(max(0, stop - start))

    def __bytes__(self) -> bytes:
        return self[:]

    def __bool__(self) -> bool:
        return self.length > 0


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                        (name,)).fetchone() is not None


class CloneDB(_DB):
    SCHEMA = _CLONE

    def __init__(self, folder: Path, create: bool = True) -> None:
        super().__init__(folder, create)
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(verified)")}
        if "proof" not in cols:  # state written before clones served partial files
            self.conn.execute("ALTER TABLE verified ADD COLUMN proof BLOB")

    def set_manifest(self, version: int, encoded: bytes, signature: bytes,
                     keep: dict[int, int]) -> None:
        """Store a newer manifest; `keep` maps old file index -> new index for
        files whose content did not change (their verified blocks carry over)."""
        with self.conn:
            self.conn.execute("BEGIN")
            old = self.conn.execute("SELECT file, block, leaf, proof FROM verified").fetchall()
            done = self.conn.execute("SELECT file, leaves FROM done_files").fetchall()
            self.conn.execute("DELETE FROM verified")
            self.conn.execute("DELETE FROM done_files")
            self.conn.executemany("INSERT INTO verified VALUES (?, ?, ?, ?)",
                                  [(keep[f], b, l, p) for f, b, l, p in old if f in keep])
            self.conn.executemany("INSERT INTO done_files VALUES (?, ?)",
                                  [(keep[f], l) for f, l in done if f in keep])
            self.conn.execute("DELETE FROM manifests")
            self.conn.execute("INSERT INTO manifests VALUES (?, ?, ?)", (version, encoded, signature))

    def verified(self) -> dict[int, dict[int, bytes]]:
        """file -> {block: leaf hash} for files not yet complete."""
        out: dict[int, dict[int, bytes]] = {}
        for f, b, leaf in self.conn.execute("SELECT file, block, leaf FROM verified"):
            out.setdefault(f, {})[b] = leaf
        return out

    def unprovable(self) -> set[tuple[int, int]]:
        """Verified blocks recorded without their proof (by an older dattui):
        kept, but not served until their file is complete."""
        return {(r[0], r[1]) for r in self.conn.execute(
            "SELECT file, block FROM verified WHERE proof IS NULL")}

    def done_files(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT file FROM done_files")}

    def leaves(self, file: int) -> bytes | None:
        row = self.conn.execute("SELECT leaves FROM done_files WHERE file=?", (file,)).fetchone()
        return None if row is None else row[0]

    def add_verified(self, file: int, block: int, leaf: bytes, proof: bytes | None = None) -> None:
        """`proof`: the sibling hashes the block was verified with, concatenated."""
        self.conn.execute("INSERT OR IGNORE INTO verified VALUES (?, ?, ?, ?)",
                          (file, block, leaf, proof))

    def proof(self, file: int, block: int) -> tuple[bytes, bytes | None] | None:
        """(leaf, proof) of a verified block of a file not yet complete."""
        row = self.conn.execute("SELECT leaf, proof FROM verified WHERE file=? AND block=?",
                                (file, block)).fetchone()
        return None if row is None else (row[0], row[1])

    def file_done(self, file: int, leaves: bytes, had_partial: bool = True) -> None:
        """Mark a file complete, keeping its leaf hashes so it can be served."""
        if not had_partial:  # one statement, one commit: the common case for small files
            self.conn.execute("INSERT OR REPLACE INTO done_files VALUES (?, ?)", (file, leaves))
            return
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("INSERT OR REPLACE INTO done_files VALUES (?, ?)", (file, leaves))
            self.conn.execute("DELETE FROM verified WHERE file=?", (file,))

    def record_batch(self, blocks: list[tuple[int, int, bytes, bytes | None]],
                     done: list[tuple[int, bytes]]) -> None:
        """One commit: verified blocks, then finished files (their block rows go)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT OR IGNORE INTO verified VALUES (?, ?, ?, ?)", blocks)
            self.conn.executemany("INSERT OR REPLACE INTO done_files VALUES (?, ?)", done)
            self.conn.executemany("DELETE FROM verified WHERE file=?", [(f,) for f, _ in done])

    def mark_unverified(self, file: int, good: dict[int, bytes]) -> None:
        """A file found damaged: only `good` blocks (block -> leaf) stay verified
        (without proof: served again once the file is whole)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM done_files WHERE file=?", (file,))
            self.conn.execute("DELETE FROM verified WHERE file=?", (file,))
            self.conn.executemany("INSERT INTO verified VALUES (?, ?, ?, NULL)",
                                  [(file, b, leaf) for b, leaf in good.items()])

    def file_undone(self, file: int) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM done_files WHERE file=?", (file,))
            self.conn.execute("DELETE FROM verified WHERE file=?", (file,))
