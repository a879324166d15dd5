"""Every signed version a share published or a clone received, with when and
what changed, kept in the folder's state database (table `versions`), for
`dattui log`. Recorded from the engine's events (engine/api.py), so neither
the share nor the clone code knows of it."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from . import manifest as mf
from .store import db_path

SCHEMA = """CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY, seen_at REAL NOT NULL, files INTEGER NOT NULL,
    bytes INTEGER NOT NULL, added INTEGER NOT NULL, changed INTEGER NOT NULL,
    removed INTEGER NOT NULL, bytes_changed INTEGER NOT NULL)"""


@dataclass(frozen=True)
class VersionRecord:
    version: int
    seen_at: float      # seconds since the epoch, when this folder first had it
    files: int
    bytes: int
    added: int          # files, against the version before it here (all of them for the first)
    changed: int
    removed: int
    bytes_changed: int  # bytes of the files added or changed


def diff(old: mf.Manifest | None, new: mf.Manifest) -> tuple[int, int, int, int]:
    """(files added, changed, removed, bytes of those added or changed)."""
    before = {e.path: (e.size, e.root) for e in old.files} if old is not None else {}
    added = changed = nbytes = 0
    for e in new.files:
        was = before.pop(e.path, None)
        if was is None:
            added += 1
            nbytes += e.size
        elif was != (e.size, e.root):
            changed += 1
            nbytes += e.size
    return added, changed, len(before), nbytes


def record(conn: sqlite3.Connection, old: mf.Manifest | None, new: mf.Manifest,
           now: float | None = None) -> bool:
    """Note `new` (once per version). True when it was not known yet."""
    conn.execute(SCHEMA)
    added, changed, removed, nbytes = diff(old, new)
    cur = conn.execute("INSERT OR IGNORE INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (new.version, time.time() if now is None else now, len(new.files),
                        new.total_bytes, added, changed, removed, nbytes))
    return cur.rowcount == 1


def read(folder: Path) -> list[VersionRecord]:
    """The versions a folder's state records, oldest first (read-only)."""
    path = db_path(folder)
    if not path.is_file():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT * FROM versions ORDER BY version").fetchall()
    except sqlite3.OperationalError:  # no versions recorded yet (an older dattui)
        rows = []
    finally:
        conn.close()
    return [VersionRecord(*r) for r in rows]


class VersionRecorder:
    """Follows the engine's events; keeps the last version seen per transfer
    to tell what the next one changed."""

    def __init__(self) -> None:
        self._last: dict[str, mf.Manifest] = {}

    def known(self, tid: str, m: mf.Manifest | None) -> None:
        """The version a transfer starts from (a clone's state on disk)."""
        if m is not None:
            self._last[tid] = m

    def seen(self, swarm) -> None:
        """`swarm` (a share or clone) holds a new signed version."""
        m = swarm.manifest
        if m is None:
            return
        old = self._last.get(swarm.tid)
        if old is not None and old.version >= m.version:
            old = None
        try:
            if old is None:  # a share keeps the version before its newest
                row = swarm.db.conn.execute("SELECT encoded FROM manifests WHERE version=?",
                                            (m.version - 1,)).fetchone()
                old = mf.decode(row[0]) if row else None
            record(swarm.db.conn, old, m)
        except sqlite3.Error:
            return  # the log is a convenience: never a transfer's failure
        self._last[swarm.tid] = m

    def forget(self, tid: str) -> None:
        self._last.pop(tid, None)
