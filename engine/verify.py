"""Re-hash a clone or a share against its signed manifest.

Every file is read block by block: BLAKE2b leaves (the Merkle tree the
manifest signs) and a SHA-256 of the whole file (for receipts) in one pass.
A file whose root matches is ok; otherwise the blocks whose leaf differs from
the leaf recorded when the block was verified (clone) or hashed (share) are
named. Files that are not in the manifest are "extra" (clones only: a share
leaves out hidden and ignored files by design). In a clone, damaged and missing blocks are marked unverified, so the
next `dattui clone` fetches exactly those.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from . import keys, manifest as mf, merkle
from .errors import UsageError
from .store import DB_DIR, CloneDB, ShareDB, db_path

OK, DAMAGED, MISSING, EXTRA, INCOMPLETE = "ok", "damaged", "missing", "extra", "incomplete"


@dataclass(frozen=True)
class FileResult:
    path: str
    status: str
    size: int = 0
    blocks: tuple[int, ...] = ()  # damaged or missing blocks
    root: bytes = b""             # the signed Merkle root (files of the manifest)
    sha256: str = ""              # of the bytes on disk, when they match


@dataclass(frozen=True)
class VerifyResult:
    folder: Path
    role: str
    link: str
    version: int
    signature: bytes
    files: tuple[FileResult, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(f.status == OK for f in self.files)


def hash_file(fd: int, block_size: int) -> tuple[list[bytes], str, int]:
    """(leaves, sha256 hex, size) of an open file, read once."""
    leaves, sha, size = [], hashlib.sha256(), 0
    while True:
        data = os.read(fd, block_size)
        if not data:
            break
        while len(data) < block_size:  # a short read mid-file
            more = os.read(fd, block_size - len(data))
            if not more:
                break
            data += more
        leaves.append(merkle.leaf_hash(data))
        sha.update(data)
        size += len(data)
    return leaves, sha.hexdigest(), size


def open_in(folder: Path, rel: str) -> int | None:
    """A read-only fd of `rel` inside `folder`, never through a symlink; None if absent."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        parts = rel.split("/")
        for name in parts[:-1]:
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        out = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        if not stat.S_ISREG(os.fstat(out).st_mode):
            os.close(out)
            return None
        return out
    except OSError:
        return None
    finally:
        os.close(fd)


def check_file(folder: Path, e: mf.Entry, block_size: int,
               expected: dict[int, bytes] | None) -> tuple[FileResult, list[bytes] | None]:
    """Hash one file of the manifest; `expected`: block -> leaf known good
    (None: nothing known beyond the root). Also returns the leaves read."""
    n = e.blocks(block_size)
    fd = open_in(folder, e.path)
    if fd is None:
        return FileResult(e.path, MISSING, e.size, tuple(range(n)), e.root), None
    try:
        leaves, sha, size = hash_file(fd, block_size)
    except OSError:
        return FileResult(e.path, MISSING, e.size, tuple(range(n)), e.root), None
    finally:
        os.close(fd)
    if size == e.size and merkle.root(leaves) == e.root:
        return FileResult(e.path, OK, e.size, (), e.root, sha), leaves
    if expected is None:
        bad = tuple(range(n))
    else:
        bad = tuple(b for b in range(n) if b >= len(leaves) or expected.get(b, leaves[b]) != leaves[b]
                    or (b == n - 1 and size != e.size))
        if not bad and size != e.size:
            bad = (n - 1,) if n else ()
    return FileResult(e.path, DAMAGED, e.size, bad, e.root), leaves


def files_on_disk(folder: Path) -> list[str]:
    """Every file (and symlinked folder) under `folder` but its .dat/, as
    relative paths: what a clone folder holds, to hold against a manifest."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        rel = "" if rel == "." else rel + "/"
        if not rel:
            dirnames[:] = [d for d in dirnames if d != DB_DIR]
        out.extend(rel + n for n in filenames)
        out.extend(rel + d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
    return out


def _extra(folder: Path, m: mf.Manifest) -> list[str]:
    named = {e.path for e in m.entries}
    return sorted(p for p in files_on_disk(folder) if p not in named)


def _load(folder: Path):
    if not db_path(folder).exists():
        raise UsageError(f"{folder} holds no dattui state (.dat/): give a folder that "
                         "`dattui share` or `dattui clone` wrote")
    db = CloneDB(folder, create=False)
    role = db.get("role")
    if role == "share":
        db.close()
        db = ShareDB(folder, create=False)
    public = db.get("public_key")
    latest = db.latest_manifest()
    if public is None or latest is None:
        db.close()
        raise UsageError(f"{folder} has no signed version yet: run the clone (or share) first")
    version, encoded, sig = latest
    if not mf.verify(public, encoded, sig):
        db.close()
        raise UsageError(f"the manifest recorded in {folder} does not carry the share's "
                         "signature: run `dattui clone LINK DIR` again to fetch it")
    return db, role or "clone", public, mf.decode(encoded), sig


def verify_folder(folder: Path, *, mark: bool = True, on_file=None) -> VerifyResult:
    """Check every file of the folder's signed version; `on_file(FileResult)` as
    each is done. With `mark`, a clone's damaged and missing blocks are marked
    unverified in its state."""
    folder = folder.absolute()
    db, role, public, m, sig = _load(folder)
    results = []
    try:
        bs = m.block_size
        done = db.done_files() if role == "clone" else set()
        partial = db.verified() if role == "clone" else {}
        scanned = db.scanned() if role == "share" else {}
        for idx, e in enumerate(m.entries):
            if e.kind != mf.Kind.FILE:
                continue
            if role == "clone":
                blob = db.leaves(idx) if idx in done else None
                expected = dict(enumerate(merkle.split_leaves(blob))) if blob else dict(partial.get(idx, {}))
            else:
                row = scanned.get(e.path)
                expected = dict(enumerate(merkle.split_leaves(row[4]))) \
                    if row and row[3] == e.root else None
            res, leaves = check_file(folder, e, bs, expected)
            if role == "clone" and idx not in done and res.status != OK:
                # a clone in progress: blocks not fetched yet are not damage
                got = partial.get(idx, {})
                bad = tuple(b for b in res.blocks if b in got)
                missing = tuple(b for b in range(e.blocks(bs)) if b not in got)
                res = FileResult(e.path, DAMAGED if bad else INCOMPLETE, e.size,
                                 tuple(sorted(set(bad) | set(missing))), e.root)
            if mark and role == "clone" and res.status != OK and (idx in done or res.status == DAMAGED):
                good = {b: leaves[b] for b in range(e.blocks(bs))
                        if leaves and b < len(leaves) and b not in res.blocks
                        and (expected is None or expected.get(b) == leaves[b])}
                if expected is None:
                    good = {}
                db.mark_unverified(idx, good)
            results.append(res)
            if on_file:
                on_file(res)
        # a share decides itself what it leaves out (hidden files, .datignore)
        for rel in _extra(folder, m) if role == "clone" else ():
            res = FileResult(rel, EXTRA)
            results.append(res)
            if on_file:
                on_file(res)
    finally:
        db.close()
    return VerifyResult(folder, role, keys.format_link(public), m.version, sig, tuple(results))
