"""SQLite state in a share's or clone's `.dat/` folder (WAL mode).

ShareDB: the share's public key, every signed manifest version, and the scan
results (leaf hashes per file) that serve blocks and make rescans cheap.
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

import sqlite3
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
DB_NAME = "dattui.db"

_COMMON = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS manifests (
    version INTEGER PRIMARY KEY, encoded BLOB NOT NULL, signature BLOB NOT NULL);
"""
_SHARE = """
CREATE TABLE IF NOT EXISTS scanned (
    path TEXT PRIMARY KEY, size INTEGER, mode INTEGER, mtime_ns INTEGER,
    root BLOB, leaves BLOB);
"""
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


class ShareDB(_DB):
    SCHEMA = _SHARE

    def save_manifest(self, version: int, encoded: bytes, signature: bytes) -> None:
        self.conn.execute("INSERT OR REPLACE INTO manifests VALUES (?, ?, ?)",
                          (version, encoded, signature))
        # old versions are kept only as long as they are the newest two
        self.conn.execute("DELETE FROM manifests WHERE version < ?", (version - 1,))

    def scanned(self) -> dict[str, tuple[int, int, int, bytes, bytes]]:
        return {r[0]: tuple(r[1:]) for r in self.conn.execute(
            "SELECT path, size, mode, mtime_ns, root, leaves FROM scanned")}

    def replace_scanned(self, rows: list[tuple[str, int, int, int, bytes, bytes]]) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM scanned")
            self.conn.executemany("INSERT INTO scanned VALUES (?, ?, ?, ?, ?, ?)", rows)

    def leaves(self, path: str) -> bytes | None:
        row = self.conn.execute("SELECT leaves FROM scanned WHERE path=?", (path,)).fetchone()
        return None if row is None else row[0]


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
