"""A share's scan kept in SQLite (engine/share.scan_version, store.ScanWriter):
the same manifest as an in-memory scan, reuse of unchanged files' leaves from
the database, serving a version's entries by index, and memory that does not
grow with the number of files."""

from __future__ import annotations

import gc
import os
import sqlite3
import tracemalloc
from pathlib import Path

from dattui.engine import manifest as mf
from dattui.engine import merkle, scan
from dattui.engine.share import scan_version
from dattui.engine.keys import ShareKey
from dattui.engine.store import ShareDB, StoredManifest, entries_table

BS = 4096


def make_tree(root: Path, files: int, per_dir: int = 100, size: int = 1000) -> Path:
    for i in range(files):
        d = root / f"d{i // per_dir:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.bin").write_bytes(i.to_bytes(4, "big") * (size // 4))
    (root / "big.bin").write_bytes(os.urandom(5 * BS + 17))
    (root / "empty-dir").mkdir()
    (root / "empty.txt").write_bytes(b"")
    return root


KEY = ShareKey.generate()


def publish(db: ShareDB, folder: Path, block_size: int = BS):
    """(version, its encoding as stored or b"" when unchanged, changed)"""
    summary, pub, changed = scan_version(db, folder, block_size, db.latest_head(), KEY.sign)
    if not changed:
        return pub, b"", False
    db.prune(pub.version)
    version, encoded, sig = db.latest_manifest()
    assert version == pub.version and mf.verify(KEY.public, encoded, sig)
    assert len(encoded) == pub.encoded_length
    assert bytes(StoredManifest(db.conn, version, len(encoded))[100:300]) == encoded[100:300]
    return pub, encoded, True


def test_scan_into_sqlite_gives_the_in_memory_manifest(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "data", 250)
    expected = scan.to_manifest(scan.scan(src, BS), 1, BS, "data")
    db = ShareDB(src)
    pub, encoded, changed = publish(db, src)
    assert changed and pub.version == 1
    assert encoded == expected.encode()
    assert (pub.files, pub.total_bytes) == (len(expected.files), expected.total_bytes)
    # every entry is served by its manifest index, with the leaves the scan found
    for i, e in enumerate(expected.entries):
        kind, path, mode, mtime_ns, size, root, leaves = db.entry(1, i)
        assert mf.Entry(mf.Kind(kind), path, mode, mtime_ns, size, root) == e
        if e.kind == mf.Kind.FILE:
            assert merkle.root(merkle.split_leaves(leaves)) == e.root
    assert db.entry(1, len(expected.entries)) is None
    assert db.entry(7, 0) is None  # no such version


def test_rescan_reuses_leaves_from_the_database_and_keeps_the_version(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "data", 30)
    db = ShareDB(src)
    pub, first, _ = publish(db, src)
    # same size and mtime, other bytes: an unchanged file is not read again
    f = src / "d000" / "f000003.bin"
    st = f.stat()
    f.write_bytes(b"X" * st.st_size)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    pub2, encoded, changed = publish(db, src)
    assert not changed and encoded == b"" and pub2.version == 2  # candidate, dropped
    assert db.entry_versions() == [1] and db.latest_head()[0] == 1
    # a real change makes version 2 with a fresh hash of the changed file only
    (src / "d000" / "f000004.bin").write_bytes(b"new")
    pub3, encoded, changed = publish(db, src)
    assert changed and pub3.version == 2 and db.entry_versions() == [1, 2]
    m = mf.decode(encoded)
    byname = {e.path: e for e in m.entries}
    assert byname["d000/f000004.bin"].size == 3
    assert byname["d000/f000003.bin"].root == mf.decode(first).entries[
        [e.path for e in mf.decode(first).entries].index("d000/f000003.bin")].root
    # versions older than the newest two lose their table with their manifest
    (src / "new.txt").write_bytes(b"n")
    publish(db, src)
    assert db.entry_versions() == [2, 3]
    # what no file's hash shows is a change too: a file gone, a folder added
    (src / "d000" / "f000005.bin").unlink()
    assert publish(db, src)[0].version == 4
    (src / "another-empty-dir").mkdir()
    pub, encoded, changed = publish(db, src)
    assert changed and pub.version == 5 and "another-empty-dir" in {e.path for e in mf.decode(encoded).entries}
    assert not publish(db, src)[2]


def test_state_of_an_older_dattui_is_rescanned_once(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "data", 5)
    m = scan.to_manifest(scan.scan(src, BS), 1, BS, "data")
    (src / ".dat").mkdir()
    conn = sqlite3.connect(src / ".dat" / "dattui.db")
    conn.executescript("CREATE TABLE manifests (version INTEGER PRIMARY KEY, encoded BLOB NOT NULL, "
                       "signature BLOB NOT NULL); CREATE TABLE scanned (path TEXT PRIMARY KEY, "
                       "size INTEGER, mode INTEGER, mtime_ns INTEGER, root BLOB, leaves BLOB);")
    conn.execute("INSERT INTO manifests VALUES (1, ?, ?)", (m.encode(), b"sig"))
    conn.commit()
    conn.close()
    db = ShareDB(src)
    assert not db.conn.execute("SELECT 1 FROM sqlite_master WHERE name='scanned'").fetchone()
    pub, encoded, changed = publish(db, src)
    assert not changed and db.entry_versions() == [1]  # same entries: the table becomes version 1's
    assert db.entry(1, 0) is not None


def _scan_peak(tmp_path: Path, files: int) -> tuple[int, int]:
    src = make_tree(tmp_path / f"t{files}", files, per_dir=500, size=64)
    db = ShareDB(src)
    gc.collect()
    tracemalloc.start()
    try:
        _, pub, _ = scan_version(db, src, BS, None, KEY.sign, progress=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pub.files == files + 2
    return peak


def test_share_scan_memory_does_not_grow_with_files(tmp_path: Path) -> None:
    """A scan, its entries table and its signed encoding hold nothing per file
    in Python (an in-memory scan with its manifest objects and encoding took
    about 350 bytes a file in the same measure)."""
    small = _scan_peak(tmp_path, 2000)
    large = _scan_peak(tmp_path, 10000)
    per_file = (large - small) / 8000  # what remains is the hashing pipeline's bounded fill
    assert per_file < 50, f"{per_file:.0f} bytes per file"


def test_entries_table_name_is_a_number() -> None:
    assert entries_table(12) == "entries_12"


async def test_a_manifest_larger_than_the_backlog_reaches_the_clone_in_paced_parts(
        tmp_path: Path, monkeypatch) -> None:
    """Over a megabyte of manifest (8,000 long names) goes out as the connection
    drains (share.MANIFEST_BACKLOG), not queued whole, and the clone gets it all."""
    import asyncio

    from dattui.engine import share as share_mod
    from helpers import engine

    src = tmp_path / "src"
    long = "x" * 120
    for d in range(8):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(1000):
            (src / f"d{d}" / f"{long}-{i:04d}").write_bytes(b"")
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    try:
        tid = await a.share(src)
        swarm = a.transfer(tid)
        assert len(swarm.encoded) > share_mod.MANIFEST_BACKLOG
        most = [0]
        orig = share_mod.ShareServer._push_manifest

        def push(self, peer):  # the unsent bytes never exceed the backlog by more than a part
            orig(self, peer)
            most[0] = max(most[0], peer.backlog)
        monkeypatch.setattr(share_mod.ShareServer, "_push_manifest", push)
        ctid = await b.clone(swarm.link, tmp_path / "dst", peers=[f"127.0.0.1:{a.port}"])
        done = await asyncio.wait_for(b.wait(ctid, find_timeout=10), 60)
        assert done.files == 8000
        assert 0 < most[0] <= share_mod.MANIFEST_BACKLOG + share_mod.MANIFEST_CHUNK + 1024
    finally:
        await b.close()
        await a.close()
