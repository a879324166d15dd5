"""Names from a manifest: refused, compared as a filesystem would, shown safely."""

from __future__ import annotations

import os

import pytest

from dattui.engine import manifest as mf
from dattui.engine import names
from dattui.engine.clonefs import TargetFolder
from dattui.engine.errors import UnsafeManifest


def encoded(*paths):
    return mf.Manifest(1, 262144, "d", tuple(
        mf.Entry(mf.Kind.FILE, p, 0o644, 0, 0, b"\0" * 32) for p in paths)).encode()


@pytest.mark.parametrize("path,words", [
    ("x" * 256, "longer than the 255 bytes"),
    ("a/" + "\u00e9" * 128, "longer than the 255 bytes"),  # 256 bytes in UTF-8
    ("/".join(["d"] * 257), "deeper than the 256 allowed"),
    ("a\nb", "control character"),
    ("a\x1b[31mb", "control character"),
    ("a\x7fb", "control character"),
    ("a\x85b", "control character"),  # C1
])
def test_hostile_names_are_refused_with_one_escaped_line(path, words):
    with pytest.raises(UnsafeManifest) as e:
        mf.decode(encoded(path))
    msg = str(e.value)
    assert words in msg and e.value.exit_code == 4
    assert msg.isprintable()  # no newline, escape or C1 reaches a terminal


def test_limits_themselves_are_fine():
    mf.decode(encoded("x" * 255, "/".join(["d"] * 256), "caf\u00e9 \u202e.txt"))


def test_shown_escapes_what_is_not_printable():
    assert names.shown("a\u202eb\nc\x1b") == "a\\u202eb\\nc\\x1b"
    assert names.shown("plain é") == "plain é"
    assert names.shown("x" * 100, 10) == "x" * 10 + "…"


def test_collisions_only_where_the_filesystem_folds():
    paths = ["Readme.txt", "README.txt", "caf\u00e9", "cafe\u0301"]
    assert names.collision(paths, False, False) is None
    assert names.collision(paths, True, False) == ("Readme.txt", "README.txt")
    assert names.collision(paths[2:], False, True) == ("caf\u00e9", "cafe\u0301")
    assert names.collision(["A/x", "a/X"], True, True) == ("A/x", "a/X")
    assert names.collision(["Straße", "STRASSE"], True, False) == ("Straße", "STRASSE")


def test_folding_probe_on_this_filesystem_leaves_nothing(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        got = names.folding(fd)
    finally:
        os.close(fd)
    assert got == (False, False)  # ext4, tmpfs, overlayfs: both case and form kept
    assert list(tmp_path.iterdir()) == []


def test_dir_fd_does_not_recurse_per_level(tmp_path):
    t = TargetFolder(tmp_path)
    try:
        deep = "/".join(["d"] * 1200)  # deeper than manifests may be: the loop copes anyway
        t.dir_fd(deep)
        assert (tmp_path / deep).is_dir()
        t.dir_fd(deep + "/e")  # from the cached parent
        assert (tmp_path / deep / "e").is_dir()
    finally:
        t.close()
        # removed here, bottom up: shutil.rmtree (pytest's clean-up of old
        # temporary folders) recurses per level and fails at this depth
        parts = (deep + "/e").split("/")
        for i in range(len(parts), 0, -1):
            os.rmdir(tmp_path.joinpath(*parts[:i]))


@pytest.mark.parametrize("folding,pair", [((True, False), ("Readme.txt", "README.txt")),
                                          ((False, True), ("caf\u00e9", "cafe\u0301"))])
async def test_names_one_file_on_a_folding_target_are_refused_before_anything_is_written(
        tmp_path, folding, pair):
    """This machine's filesystems keep both (see the probe test above); a
    case- or normalisation-insensitive target (macOS, Windows, ext4 casefold)
    is given to the clone as its probe would find it."""
    from dattui.engine import keys
    from dattui.engine.clone import CloneSwarm
    from dattui.engine.store import CloneDB
    key = keys.ShareKey.from_seed(b"\x05" * 32)
    m = mf.Manifest(2, 262144, "d", (mf.Entry(mf.Kind.DIR, "sub", 0o755, 0),) + tuple(
        mf.Entry(mf.Kind.FILE, "sub/" + p, 0o644, 0, 0, b"\0" * 32) for p in pair))
    enc, sig = mf.sign(m, key)
    folder = tmp_path / "dst"
    folder.mkdir()
    swarm = CloneSwarm(key.public, folder, CloneDB(folder), lambda e: None, folding=folding)
    try:
        with pytest.raises(UnsafeManifest) as e:
            swarm._apply_manifest(enc, sig)
        assert "would be one file" in str(e.value) and e.value.exit_code == 4
        assert sorted(os.listdir(folder)) == [".dat"]
        swarm_plain = CloneSwarm(key.public, tmp_path, CloneDB(tmp_path), lambda e: None,
                                 folding=(False, False))
        swarm_plain._apply_manifest(enc, sig)  # kept apart where the filesystem keeps them
        assert set(os.listdir(tmp_path / "sub")) == set(pair)
        await swarm_plain.close()
    finally:
        await swarm.close()
