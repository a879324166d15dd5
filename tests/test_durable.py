"""The durability contract of a clone's records (engine/durable.py), the size
of files across versions (engine/clonefs.py) and the free-space check
(engine/space.py), in-process on a real folder and a real state database."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from dattui.engine import durable, manifest as mf
from dattui.engine.clonefs import TargetFolder
from dattui.engine.durable import DurableRecords
from dattui.engine.errors import DiskError
from dattui.engine.space import check_free_space
from dattui.engine.store import CloneDB


@pytest.fixture
def parts(tmp_path):
    target, db = TargetFolder(tmp_path), CloneDB(tmp_path)
    yield tmp_path, target, db
    target.close()
    db.close()


def test_a_block_is_recorded_only_after_its_file_is_synced(parts, monkeypatch):
    folder, target, db = parts
    order = []
    real_sync = durable.sync_jobs
    monkeypatch.setattr(durable, "sync_jobs",
                        lambda jobs, d=True: (order.append(("sync", sorted((r, h) for _, h, r in jobs))),
                                              real_sync(jobs, d)))
    real_commit = db.record_batch
    monkeypatch.setattr(db, "record_batch",
                        lambda b, d: (order.append(("commit", len(b), len(d))), real_commit(b, d)))
    rec = DurableRecords(db, target)
    target.write("a.bin", 8192, 0, b"x" * 4096)
    rec.add_verified(0, 0, b"L" * 32, b"P" * 32, 4096)
    assert db.verified() == {} and rec.pending_bytes == 4096  # queued, not recorded
    assert rec.proof(0, 0) == (b"L" * 32, b"P" * 32)          # but served from the queue
    rec.flush()
    assert order == [("sync", [("", "full"), ("a.bin", "data")]), ("commit", 1, 0)]  # the file and its folder first
    assert db.verified() == {0: {0: b"L" * 32}} and rec.pending_bytes == 0


def test_a_finished_file_is_synced_and_recorded_complete(parts):
    folder, target, db = parts
    rec = DurableRecords(db, target)
    target.write("b.bin", 3, 0, b"abc")
    target.finish_file("b.bin", 3, 0o640, 1_000_000_000)
    rec.file_done(0, b"L" * 32, 3)
    rec.flush()
    assert db.done_files() == {0}
    st = os.stat(folder / "b.bin")
    assert st.st_size == 3 and st.st_mode & 0o777 == 0o640 and st.st_mtime_ns == 1_000_000_000


def test_a_file_reopened_for_a_new_version_takes_its_size(parts):
    folder, target, db = parts
    target.write("a.bin", 10 * 2**20, 0, b"v1" * 100)
    target.sync()
    target.forget_files()
    target.write("a.bin", 3 * 2**20, 0, b"v2")
    assert os.stat(folder / "a.bin").st_size == 3 * 2**20


def test_forget_files_refuses_what_is_not_synced(parts):
    folder, target, db = parts
    target.write("a.bin", 10, 0, b"x")
    with pytest.raises(RuntimeError):
        target.forget_files()


def test_free_space_is_checked_against_what_is_left_to_fetch(parts):
    folder, target, db = parts
    m = mf.Manifest(1, 262144, "t", (mf.Entry(mf.Kind.FILE, "a", 0o644, 0, 5_000_000, b"r" * 32),
                                     mf.Entry(mf.Kind.FILE, "b", 0o644, 0, 1_000_000, b"s" * 32)))
    fs = lambda fd: SimpleNamespace(f_bavail=1000, f_frsize=4096)  # 4,096,000 bytes free
    with pytest.raises(DiskError) as e:
        check_free_space(target, m, set(), statvfs=fs)
    assert e.value.exit_code == 5
    assert "needs 6000000 more bytes" in str(e.value) and "4096000 bytes" in str(e.value)
    check_free_space(target, m, {0}, statvfs=fs)  # a.bin complete: 1,000,000 left, fits


def test_many_finished_files_are_not_kept_open_one_syncfs_covers_them(parts):
    from dattui.engine import clonefs
    folder, target, db = parts
    for i in range(clonefs.SYNCFS_OVER + 1):
        target.write(f"f{i}", 1, 0, b"x")
        target.finish_file(f"f{i}", 1, 0o644, 0)
    assert target.finished_open == 0  # closed: the syncfs needs no fd of theirs
    jobs = target.take_dirty()
    assert [how for _, how, _ in jobs] == ["fs"]
    clonefs.sync_jobs(jobs)
    assert target.take_dirty() == []
