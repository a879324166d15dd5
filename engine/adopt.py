"""A clone folder without usable state: recovered, not thrown away.

`open_state` opens a clone's state database; one SQLite cannot read
(truncated, overwritten) is set aside in `.dat/damaged-<time>/` and a new one
started, and a folder with files but no `.dat/` at all gets a new one too.
Either way the state is marked "adopt": once the signed manifest arrives,
`adopt_files` checks the folder against it. Files the manifest does not name
mean someone else's folder: refused, and the `.dat/` made for it removed.
Otherwise every file whose bytes hash to its signed Merkle root is recorded
complete (mode and mtime set as signed), and only the rest is fetched.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

from . import manifest as mf
from .clonefs import TargetFolder
from .durable import DurableRecords
from .errors import UsageError
from .store import DB_DIR, DB_NAME, CloneDB, StateDamaged, db_path
from .verify import OK, check_file, files_on_disk

DAMAGED = "damaged"   # the database could not be read
MISSING = "missing"   # files, but no .dat/


def _readable(db: CloneDB) -> None:
    for table in ("meta", "manifests", "verified", "done_files"):
        db.conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    db.latest_manifest()


def set_aside(folder: Path) -> Path:
    """Move the damaged database (and its WAL) out of the way, kept for inspection."""
    d = folder / DB_DIR
    aside = d / f"damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        p = d / (DB_NAME + suffix)
        if p.exists():
            os.replace(p, aside / p.name)
    return aside


def open_state(folder: Path) -> tuple[CloneDB, str | None]:
    """The clone's database, and why it must adopt what is on disk (or None)."""
    reason = None
    if db_path(folder).exists():
        try:
            db = CloneDB(folder, create=False)
            try:
                _readable(db)
            except sqlite3.DatabaseError as exc:
                db.close()
                raise StateDamaged(str(exc)) from None
        except StateDamaged:
            set_aside(folder)
            reason = DAMAGED
        else:
            reason = db.get("adopt")
            if reason:  # an adoption that did not finish: from the manifest again
                db.conn.execute("DELETE FROM manifests")
            return db, reason
    elif any(p.name != DB_DIR for p in folder.iterdir()):
        reason = MISSING
    db = CloneDB(folder)
    if reason:
        db.set("adopt", reason)
    return db, reason


def describe(reason: str, folder: Path) -> str:
    what = (f"the state database in {folder / DB_DIR} was damaged (set aside there)"
            if reason == DAMAGED else f"{folder} has files but no {DB_DIR}/ state")
    return (f"{what}: checking the files already there against the share's signed version; "
            "only what differs is fetched")


def adopt_files(folder: Path, m: mf.Manifest, target: TargetFolder, records: DurableRecords,
                reason: str) -> dict[int, bytes]:
    """Check the files on disk against `m`; returns file index -> leaves of
    the files that match (recorded complete). Raises UsageError for a folder
    holding files the share does not have."""
    files = {e.path for e in m.entries if e.kind == mf.Kind.FILE}
    foreign = sorted(p for p in files_on_disk(folder) if p not in files)
    if foreign:
        if reason == MISSING:  # the .dat/ made for it: gone again, the folder as it was
            records.db.close()
            forget_state(folder)
        raise UsageError(f"{folder} holds {len(foreign)} files that are not in this share "
                         f"(first: {foreign[0]!r}): choose a new or empty folder (nothing in it "
                         "was changed)")
    kept: dict[int, bytes] = {}
    for idx, e in enumerate(m.entries):
        if e.kind != mf.Kind.FILE or e.size == 0 or target.stat_file(e.path) is None:
            continue
        res, leaves = check_file(folder, e, m.block_size, None)
        if res.status == OK:
            target.finish_file(e.path, e.size, e.mode, e.mtime_ns)
            records.file_done(idx, b"".join(leaves), 0)
            kept[idx] = b"".join(leaves)
    records.flush()
    records.db.conn.execute("DELETE FROM meta WHERE key='adopt'")
    return kept


def forget_state(folder: Path) -> None:
    """Remove the .dat/ made for a folder that was never adopted."""
    shutil.rmtree(folder / DB_DIR, ignore_errors=True)
