"""A clone folder without usable state (damaged database, deleted .dat/) is
recovered: the files already there are checked against the signed manifest
and only what is missing is fetched; someone else's folder is still refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from cli import ShareProcess, run_clone
from helpers import tree, visible

BS = 262144


@pytest.fixture
def half_cloned(tmp_path):
    """A finished clone of three files, then one file deleted: 2 of 3 on disk."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(5 * BS + 7))
    (src / "d" / "b.bin").write_bytes(os.urandom(3 * BS))
    (src / "c.txt").write_text("c\n")
    sp = ShareProcess(src, tmp_path / "hs", "--port", "0")
    dst, home = tmp_path / "dst", tmp_path / "hc"
    p, _ = run_clone(sp.link, dst, home, "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    (dst / "d" / "b.bin").unlink()
    yield src, sp, dst, home
    sp.stop()


def _resume(sp, dst, home):
    p, lines = run_clone(sp.link, dst, home, "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return lines


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_state_db_is_set_aside_and_only_what_is_missing_is_fetched(half_cloned, damage):
    src, sp, dst, home = half_cloned
    db = dst / ".dat" / "dattui.db"
    for extra in ("-wal", "-shm"):
        (dst / ".dat" / ("dattui.db" + extra)).unlink(missing_ok=True)
    if damage == "truncated":
        with open(db, "r+b") as f:
            f.truncate(100)
    else:
        db.write_bytes(os.urandom(8192))
    lines = _resume(sp, dst, home)
    adopting = [l for l in lines if l["event"] == "adopting"]
    assert adopting and adopting[0]["reason"] == "damaged"
    assert lines[-1]["bytes_received"] == 3 * BS  # only d/b.bin
    assert visible(tree(dst)) == visible(tree(src))
    assert any(p.name.startswith("damaged-") for p in (dst / ".dat").iterdir())


def test_a_deleted_dat_folder_fetches_only_what_is_missing(half_cloned):
    src, sp, dst, home = half_cloned
    shutil.rmtree(dst / ".dat")
    # one file damaged in place too: it is fetched again, whole
    with open(dst / "c.txt", "r+b") as f:
        f.write(b"X")
    lines = _resume(sp, dst, home)
    assert [l["reason"] for l in lines if l["event"] == "adopting"] == ["missing"]
    assert lines[-1]["bytes_received"] == 3 * BS + 2
    assert visible(tree(dst)) == visible(tree(src))


def test_someone_elses_folder_is_still_refused_and_left_as_it_was(half_cloned, tmp_path):
    src, sp, dst, home = half_cloned
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    (other / "a.bin").write_text("same name, other content")
    p, lines = run_clone(sp.link, other, home, "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not in this share" in p.stderr
    assert sorted(x.name for x in other.iterdir()) == ["a.bin", "precious.txt"]
    assert (other / "a.bin").read_text() == "same name, other content"


def test_a_damaged_share_db_is_one_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    (src / ".dat").mkdir()
    (src / ".dat" / "dattui.db").write_bytes(os.urandom(4096))
    from cli import cmd, env
    p = subprocess.run(cmd("share", src, "--json", "--no-lan", "--port", "0"), capture_output=True,
                       text=True, env=env(tmp_path / "h"), timeout=30)
    assert p.returncode != 0 and p.stderr.count("\n") == 1 and "damaged" in p.stderr
    assert "Traceback" not in p.stderr
