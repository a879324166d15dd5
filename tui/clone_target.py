"""Where `dattui clone LINK` (no folder given) puts the data, and what a
clone that got nothing leaves behind: nothing.

Without a folder, a clone first looks in the current folder for a clone of
the same link (the same command run again resumes there). Otherwise it starts
in a hidden staging folder, `.dattui-clone-<16 hex>`, and once the signed
manifest has arrived renames it after the share's name (made safe, never an
existing non-empty folder: `name-2`, `name-3`, ... then).
"""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

from dattui.engine.store import DB_DIR, CloneDB, db_path

STAGING_PREFIX = ".dattui-clone-"
MAX_NAME = 100


def staging_dir(parent: Path, public: bytes) -> Path:
    return parent / f"{STAGING_PREFIX}{public.hex()[:16]}"


def safe_name(name: str, public: bytes) -> str:
    """A share's name as one harmless folder name: no separators, no control
    characters, no leading dot, bounded; the key's first 8 hex when nothing is left."""
    out = []
    for ch in unicodedata.normalize("NFC", name):
        if ch in "/\\" or unicodedata.category(ch)[0] == "C":
            out.append("_")
        else:
            out.append(ch)
    s = "".join(out).strip().lstrip(".").strip()
    s = s[:MAX_NAME].rstrip()
    return s or f"dattui-{public.hex()[:8]}"


def _clone_of(folder: Path) -> bytes | None:
    if not db_path(folder).is_file():
        return None
    try:
        db = CloneDB(folder, create=False)
    except Exception:
        return None
    try:
        return db.get("public_key") if db.get("role") == "clone" else None
    except Exception:
        return None
    finally:
        db.close()


def existing_clone(parent: Path, public: bytes) -> Path | None:
    """A folder in `parent` (not the staging one) that is a clone of this link."""
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return None
    for d in entries:
        if d.name.startswith(STAGING_PREFIX) or d.is_symlink() or not d.is_dir():
            continue
        if (d / DB_DIR).is_dir() and _clone_of(d) == public:
            return d
    return None


def free_target(parent: Path, name: str) -> Path:
    """`parent/name`, or `name-2`, `name-3`, ... : the first that does not
    exist or is an empty folder."""
    for i in range(1, 10_000):
        p = parent / (name if i == 1 else f"{name}-{i}")
        if not p.exists() and not p.is_symlink():
            return p
        if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
            return p
    raise FileExistsError(f"no free folder name like {name} in {parent}")


def move_staging(staging: Path, target: Path) -> None:
    """The staging folder becomes `target` (which is absent or an empty folder)."""
    if target.is_dir():
        target.rmdir()
    staging.rename(target)


def remove_if_nothing_received(folder: Path, folder_existed: bool, state_existed: bool) -> None:
    """A clone that received no manifest wrote no data: take back what it made
    (its .dat/, and the folder itself when this command created it)."""
    if state_existed:
        return
    shutil.rmtree(folder / DB_DIR, ignore_errors=True)
    if not folder_existed:
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass
