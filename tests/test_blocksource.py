"""Serving blocks from disk: unchanged files go out as read, changed ones are
reported and not served."""

from __future__ import annotations

import os

from dattui.engine import blocksource, merkle, scan

BLOCK = 64 * 1024


def _source(tmp_path, changed):
    root = tmp_path / "share"
    root.mkdir()
    (root / "a.bin").write_bytes(os.urandom(3 * BLOCK + 100))
    result = scan.scan(root, BLOCK)
    m = scan.to_manifest(result, 1, BLOCK, "share")
    leaves = {f.path: f.leaves for f in result.files}
    src = blocksource.FileBlockSource(lambda p: os.open(root / p, os.O_RDONLY),
                                      lambda i, e: leaves[e.path], changed)
    return root, m, src


def test_unchanged_file_is_served_without_hashing_each_block(tmp_path, monkeypatch):
    calls = []
    root, m, src = _source(tmp_path, lambda: calls.append("changed"))
    hashed = []
    real = merkle.leaf_hash
    monkeypatch.setattr(merkle, "leaf_hash", lambda d: hashed.append(len(d)) or real(d))
    data = (root / "a.bin").read_bytes()
    for block in range(4):
        got, proof = src.read(m, 0, block)
        assert got == data[block * BLOCK:(block + 1) * BLOCK]
        assert merkle.verify_proof(real(got), block, 4, proof, m.entries[0].root)
    assert hashed == [] and calls == []


def test_file_rewritten_on_disk_is_reported_not_served(tmp_path):
    calls = []
    root, m, src = _source(tmp_path, lambda: calls.append("changed"))
    assert src.read(m, 0, 0) is not None
    path = root / "a.bin"
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(BLOCK + 5)
        f.write(b"edited in place")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a later mtime
    assert src.read(m, 0, 1) is None  # the edited block: hashed, refused
    assert calls == ["changed"]
    assert src.read(m, 0, 2) is not None  # an untouched block still matches its leaf


def test_truncated_file_is_reported(tmp_path):
    calls = []
    root, m, src = _source(tmp_path, lambda: calls.append("changed"))
    os.truncate(root / "a.bin", BLOCK)
    assert src.read(m, 0, 2) is None
    assert calls == ["changed"]
