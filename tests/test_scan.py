"""engine.scan: walking rules, hashing correctness, reuse, threading, memory."""

from __future__ import annotations

import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from dattui.engine import manifest, merkle, scan

BS = 4096


def write(path: Path, data: bytes | str = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def expected(data: bytes, bs: int = BS) -> tuple[bytes, bytes]:
    """Leaves and root computed independently of engine.scan."""
    leaves = [merkle.leaf_hash(data[i:i + bs]) for i in range(0, len(data), bs)]
    return b"".join(leaves), merkle.root(leaves)


def paths(result: scan.ScanResult) -> set[str]:
    return {f.path for f in result.files}


def dir_paths(result: scan.ScanResult) -> set[str]:
    return {d[0] for d in result.dirs}


# --------------------------------------------------------------------------- walking rules


def test_hidden_excluded_by_default(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "a")
    write(tmp_path / ".hidden", "h")
    write(tmp_path / ".hdir" / "inner.txt", "i")
    write(tmp_path / "sub" / ".secret", "s")
    write(tmp_path / ".datignore", "nothing\n")
    r = scan.scan(tmp_path, BS)
    assert paths(r) == {"a.txt"}
    assert dir_paths(r) == {"sub"}


def test_hidden_included_on_request(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "a")
    write(tmp_path / ".hidden", "h")
    write(tmp_path / ".hdir" / "inner.txt", "i")
    write(tmp_path / ".datignore", "nothing\n")
    r = scan.scan(tmp_path, BS, include_hidden=True)
    assert paths(r) == {"a.txt", ".hidden", ".hdir/inner.txt", ".datignore"}
    assert dir_paths(r) == {".hdir"}


def test_datignore_patterns(tmp_path: Path) -> None:
    write(tmp_path / ".datignore", "# comment\n*.log\n!keep.log\nbuild/\n/top.txt\nraw/**/*.tmp\n")
    for p in ["a.log", "sub/b.log", "keep.log", "sub/keep.log", "data.csv",
              "build/out.bin", "sub/build/x", "other/build", "top.txt", "sub/top.txt",
              "raw/x/y/z.tmp", "raw/x/y/z.dat"]:
        write(tmp_path / p, p)
    os.mkfifo(tmp_path / "build" / "fifo")  # would be reported if build/ were descended
    r = scan.scan(tmp_path, BS)
    assert paths(r) == {"keep.log", "sub/keep.log", "data.csv", "other/build",
                        "sub/top.txt", "raw/x/y/z.dat"}
    assert dir_paths(r) == {"sub", "other", "raw", "raw/x", "raw/x/y"}
    assert r.skipped == []


def test_load_ignore_matcher(tmp_path: Path) -> None:
    assert scan.load_ignore(tmp_path)("anything", False) is False
    write(tmp_path / ".datignore", "cache/\n*.pyc\n")
    ignored = scan.load_ignore(tmp_path)
    assert ignored("cache", True) and ignored("a/cache", True)
    assert not ignored("cache", False)
    assert ignored("x/y.pyc", False) and not ignored("x/y.py", False)


def test_dat_folder_always_skipped(tmp_path: Path) -> None:
    write(tmp_path / ".dat" / "state.db", "x")
    write(tmp_path / "sub" / ".dat" / "kept", "k")  # only the root one is reserved
    write(tmp_path / "f", "f")
    r = scan.scan(tmp_path, BS, include_hidden=True)
    assert paths(r) == {"f", "sub/.dat/kept"}
    assert dir_paths(r) == {"sub", "sub/.dat"}


def test_symlinks_reported_not_followed(tmp_path: Path) -> None:
    write(tmp_path / "real" / "inside.txt", "x")
    write(tmp_path / "file.txt", "y")
    outside = write(tmp_path.parent / f"{tmp_path.name}-outside" / "secret.txt", "s")
    (tmp_path / "to_file").symlink_to("file.txt")
    (tmp_path / "to_dir").symlink_to("real", target_is_directory=True)
    (tmp_path / "to_outside").symlink_to(outside.parent, target_is_directory=True)
    (tmp_path / "dangling").symlink_to("nowhere")
    r = scan.scan(tmp_path, BS)
    assert r.symlinks == ["dangling", "to_dir", "to_file", "to_outside"]
    assert paths(r) == {"real/inside.txt", "file.txt"}
    assert dir_paths(r) == {"real"}


def test_empty_files_and_dirs(tmp_path: Path) -> None:
    write(tmp_path / "empty.bin")
    (tmp_path / "void" / "deeper").mkdir(parents=True)
    r = scan.scan(tmp_path, BS)
    (f,) = r.files
    assert (f.path, f.size, f.leaves, f.root) == ("empty.bin", 0, b"", merkle.EMPTY_ROOT)
    assert dir_paths(r) == {"void", "void/deeper"}


def test_modes_and_mtimes(tmp_path: Path) -> None:
    f = write(tmp_path / "d" / "x", "x")
    os.chmod(f, 0o640)
    os.chmod(tmp_path / "d", 0o750)
    os.utime(f, ns=(1, 1_234_567_890_123))
    r = scan.scan(tmp_path, BS)
    assert (r.files[0].mode, r.files[0].mtime_ns) == (0o640, 1_234_567_890_123)
    assert r.dirs[0][:2] == ("d", 0o750)


def test_fifo_skipped(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    write(tmp_path / "ok", "ok")
    r = scan.scan(tmp_path, BS)
    assert paths(r) == {"ok"}
    assert r.skipped == [("pipe", "is a fifo (named pipe)")]


def test_bad_names_skipped(tmp_path: Path) -> None:
    write(tmp_path / "ok", "ok")
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff"), "wb"):
        pass
    write(tmp_path / "back\\slash", "b")
    r = scan.scan(tmp_path, BS)
    assert paths(r) == {"ok"}
    assert dict(r.skipped) == {"bad\\xff": "name is not UTF-8",
                               "back\\slash": "name contains a backslash"}


def test_unreadable_file_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "ok", "ok")
    write(tmp_path / "locked", "no")
    real_open = scan._open_regular

    def fake_open(path: str) -> int:
        if path.endswith("locked"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path)

    monkeypatch.setattr(scan, "_open_regular", fake_open)
    r = scan.scan(tmp_path, BS)
    assert paths(r) == {"ok"}
    assert r.skipped == [("locked", "permission denied")]


def test_unreadable_dir_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "closed" / "x", "x")
    write(tmp_path / "open" / "y", "y")
    real_scandir = os.scandir

    def fake_scandir(path: str) -> object:
        if str(path).endswith("closed"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    r = scan.scan(tmp_path, BS)
    assert dir_paths(r) == {"open"} and paths(r) == {"open/y"}
    assert r.skipped == [("closed", "permission denied")]


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan.scan(tmp_path / "nope", BS)


# --------------------------------------------------------------------------- hashing


@pytest.mark.parametrize("size", [0, 1, BS - 1, BS, BS + 1, 5 * BS, 7 * BS + 3])
def test_roots_match_merkle(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    write(tmp_path / "f", data)
    r = scan.scan(tmp_path, BS)
    leaves, root = expected(data)
    assert (r.files[0].size, r.files[0].leaves, r.files[0].root) == (size, leaves, root)
    assert scan.hash_file(tmp_path / "f", BS) == (leaves, root)


def test_root_for_many_leaf_counts(tmp_path: Path) -> None:
    """Odd and even levels: the streaming root agrees with merkle.root."""
    bs = 64
    for blocks in range(0, 40):
        data = os.urandom(blocks * bs - (blocks > 0) * 7)
        write(tmp_path / "f", data)
        assert scan.hash_file(tmp_path / "f", bs) == expected(data, bs)


def test_big_file_split_across_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(2 * scan.RANGE_TARGET + BS + 5)
    write(tmp_path / "big", data)
    calls: list[tuple[int, int]] = []
    real = scan._Reader.hash_range

    def spy(self: scan._Reader, path: str, offset: int, length: int) -> tuple[bytes, bool]:
        calls.append((offset, length))
        return real(self, path, offset, length)

    monkeypatch.setattr(scan._Reader, "hash_range", spy)
    many = scan.scan(tmp_path, BS, workers=4)
    assert len(calls) == 3 and all(o % BS == 0 for o, _ in calls)
    one = scan.scan(tmp_path, BS, workers=1)
    assert many == one
    assert (many.files[0].leaves, many.files[0].root) == expected(data)
    assert scan.hash_file(tmp_path / "big", BS, workers=4) == expected(data)


def test_many_small_ranges_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "RANGE_TARGET", 3 * BS)
    monkeypatch.setattr(scan, "READ_TARGET", BS)
    data = os.urandom(100 * BS + 17)
    write(tmp_path / "f", data)
    for i in range(20):
        write(tmp_path / f"small{i}", os.urandom(i * 1000))
    r = scan.scan(tmp_path, BS, workers=8)
    by_path = {f.path: f for f in r.files}
    assert (by_path["f"].leaves, by_path["f"].root) == expected(data)
    assert r == scan.scan(tmp_path, BS, workers=1)


def test_hash_file_memory_bounded(tmp_path: Path) -> None:
    size = 64 << 20
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(size)
    bs = manifest.DEFAULT_BLOCK_SIZE
    tracemalloc.start()
    try:
        leaves, root = scan.hash_file(path, bs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    zero_leaf = merkle.leaf_hash(bytes(bs))
    assert leaves == zero_leaf * (size // bs)
    assert root == merkle.root([zero_leaf] * (size // bs))


# --------------------------------------------------------------------------- rescan and changes


def test_previous_reused_without_reading(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"A" * 5000)
    write(tmp_path / "g", b"G" * 10)
    first = scan.scan(tmp_path, BS)
    old = {s.path: s for s in first.files}
    st = f.stat()
    f.write_bytes(b"B" * 5000)  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = scan.scan(tmp_path, BS, previous=old)
    assert again.files == first.files  # old root kept: the file was not read
    fresh = scan.scan(tmp_path, BS)
    assert {s.path: s.root for s in fresh.files}["f"] == expected(b"B" * 5000)[1]


def test_previous_ignored_when_metadata_differs(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"A" * 5000)
    old = {s.path: s for s in scan.scan(tmp_path, BS).files}
    st = f.stat()
    f.write_bytes(b"B" * 5000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert scan.scan(tmp_path, BS, previous=old).files[0].root == expected(b"B" * 5000)[1]
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(f, 0o600)
    assert scan.scan(tmp_path, BS, previous=old).files[0].root == expected(b"B" * 5000)[1]
    # a previous scan made with another block size is not trusted
    other = {s.path: s for s in scan.scan(tmp_path, 2 * BS).files}
    write(tmp_path / "f", b"C" * 5000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert scan.scan(tmp_path, BS, previous=other).files[0].root == expected(b"C" * 5000)[1]


def _grow_on_read(monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """Append to the file each time it is read, for the first `times` reads."""
    real = scan._Reader.hash_range
    count = {"n": 0}

    def grow(self: scan._Reader, path: str, offset: int, length: int) -> tuple[bytes, bool]:
        out = real(self, path, offset, length)
        if count["n"] < times:
            count["n"] += 1
            with open(path, "ab") as f:
                f.write(b"more")
        return out

    monkeypatch.setattr(scan._Reader, "hash_range", grow)


def test_file_changing_once_is_rescanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "f", b"x" * 5000)
    _grow_on_read(monkeypatch, 1)
    r = scan.scan(tmp_path, BS)
    assert r.files[0].size == 5004
    assert r.files[0].root == expected(b"x" * 5000 + b"more")[1]


def test_file_always_changing_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "f", b"x" * 5000)
    _grow_on_read(monkeypatch, 100)
    r = scan.scan(tmp_path, BS)
    assert r.files == []
    assert r.skipped == [("f", "kept changing while being read")]
    with pytest.raises(scan.FileChanged):
        scan.hash_file(tmp_path / "f", BS)


# --------------------------------------------------------------------------- progress, cancel


def test_progress_reports_final_totals(tmp_path: Path) -> None:
    for i in range(5):
        write(tmp_path / f"f{i}", os.urandom(1000 * i))
    seen: list[tuple[int, int]] = []
    scan.scan(tmp_path, BS, progress=lambda n, b: seen.append((n, b)))
    assert seen[-1] == (5, sum(1000 * i for i in range(5)))


def test_cancel(tmp_path: Path) -> None:
    write(tmp_path / "f", os.urandom(3 * BS))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(scan.ScanCancelled):
        scan.scan(tmp_path, BS, cancel=cancel)


def test_cancel_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "RANGE_TARGET", BS)
    write(tmp_path / "f", os.urandom(200 * BS))
    cancel = threading.Event()

    def progress(files: int, done: int) -> None:
        cancel.set()

    monkeypatch.setattr(scan, "PROGRESS_INTERVAL", 0.0)
    with pytest.raises(scan.ScanCancelled):
        scan.scan(tmp_path, BS, cancel=cancel, progress=progress, workers=2)


# --------------------------------------------------------------------------- manifest


def test_to_manifest_round_trip(tmp_path: Path) -> None:
    write(tmp_path / "b" / "z.txt", "zz")
    write(tmp_path / "a.txt", "a" * 9000)
    write(tmp_path / "empty")
    (tmp_path / "c" / "d").mkdir(parents=True)
    r = scan.scan(tmp_path, BS)
    m = scan.to_manifest(r, version=3, block_size=BS, name="data")
    assert [(e.kind, e.path) for e in m.entries] == [
        (manifest.Kind.DIR, "b"), (manifest.Kind.DIR, "c"), (manifest.Kind.DIR, "c/d"),
        (manifest.Kind.FILE, "a.txt"), (manifest.Kind.FILE, "b/z.txt"), (manifest.Kind.FILE, "empty"),
    ]
    assert m.files[0].root == expected(b"a" * 9000)[1] and m.files[0].size == 9000
    assert manifest.decode(m.encode()) == m
