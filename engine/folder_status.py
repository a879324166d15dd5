"""What a folder is to dattui: a share, a clone, or neither; its link, its
newest signed version and how much of it is verified here.

Read from the folder's `.dat/dattui.db` without writing to it (SQLite opened
read-only), so `dattui status` is safe beside a running share or clone.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from . import keys
from . import manifest as mf
from .errors import UsageError
from .store import db_path


@dataclass(frozen=True, slots=True)
class FolderStatus:
    folder: Path
    role: str                 # "share" or "clone"
    link: str
    version: int | None       # newest signed version recorded, None before the first
    name: str                 # the share's name in its manifest ("" before the first)
    files_total: int
    files_done: int
    bytes_total: int
    bytes_have: int

    @property
    def complete(self) -> bool:
        return self.version is not None and self.bytes_have == self.bytes_total \
            and self.files_done == self.files_total


def read_status(folder: Path) -> FolderStatus:
    """The status of `folder`. UsageError when it is not a share or clone, or
    its state cannot be read."""
    folder = folder.absolute()
    path = db_path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    if not path.exists():
        raise UsageError(f"{folder} is neither shared nor cloned (no .dat/ state): "
                         "`dattui share DIR` shares it, `dattui clone LINK DIR` clones into it")
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta"))
            row = conn.execute("SELECT version, encoded FROM manifests "
                               "ORDER BY version DESC LIMIT 1").fetchone()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            verified: dict[int, tuple[int, int]] = {}
            done: set[int] = set()
            if "verified" in tables:
                verified = {f: (n, last) for f, n, last in conn.execute(
                    "SELECT file, COUNT(*), MAX(block) FROM verified GROUP BY file")}
                done = {r[0] for r in conn.execute("SELECT file FROM done_files")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise UsageError(f"cannot read the state of {folder} ({exc}); "
                         "`dattui verify` checks the files, a clone re-run recovers") from None
    public = meta.get("public_key")
    role = meta.get("role") or "share"
    if not isinstance(public, bytes) or len(public) != 32:
        raise UsageError(f"{folder} has no link recorded yet: run `dattui share` or `dattui clone` on it")
    if role not in ("share", "clone"):
        raise UsageError(f"{folder}: unknown role {role!r} in its state")
    if row is None:
        return FolderStatus(folder, role, keys.format_link(public), None, "", 0, 0, 0, 0)
    m = mf.decode(row[1])
    files = [(i, e) for i, e in enumerate(m.entries) if e.kind == mf.Kind.FILE]
    total = sum(e.size for _, e in files)
    if role == "share":
        return FolderStatus(folder, role, keys.format_link(public), row[0], m.name,
                            len(files), len(files), total, total)
    have = 0
    for i, e in files:
        if i in done:
            have += e.size
        elif i in verified:  # every block is whole but the file's last one
            n, last = verified[i]
            have += n * m.block_size
            if last == e.blocks(m.block_size) - 1:
                have -= last * m.block_size + m.block_size - e.size
    return FolderStatus(folder, role, keys.format_link(public), row[0], m.name,
                        len(files), len(done & {i for i, _ in files}), total, have)
