"""Selective download: --include/--exclude (gitignore-style) fetch only the
matching files, the selection is remembered for `pull`, and a wider one
later fetches only what is new (real share and clone processes)."""

from __future__ import annotations

import json
import os
import subprocess

from cli import ShareProcess, cmd, env, run_clone
from dattui.engine.selection import Selection


def test_selection_rules():
    s = Selection(("*.csv",), ("raw/",))
    assert [p for p in ("a.csv", "x/b.csv", "raw/c.csv", "d.txt") if s.wants(p)] == ["a.csv", "x/b.csv"]
    assert Selection().everything and Selection().wants("anything")
    assert Selection.from_json(s.to_json()) == s
    assert Selection.from_json(b"{not json") == Selection()
    assert Selection(exclude=("/top.txt",)).wants("sub/top.txt")
    assert not Selection(exclude=("/top.txt",)).wants("top.txt")


def _tree(src):
    (src / "sub").mkdir(parents=True)
    (src / "raw").mkdir()
    (src / "a.csv").write_text("a\n")
    (src / "sub" / "b.csv").write_text("bb\n")
    (src / "raw" / "big.bin").write_bytes(os.urandom(2_000_000))
    (src / "notes.txt").write_text("notes\n")


def _done(lines):
    return [line for line in lines if line["event"] == "done"][-1]


def test_include_exclude_then_a_wider_pull_fetches_only_the_rest(tmp_path):
    src, dst, hc = tmp_path / "src", tmp_path / "dst", tmp_path / "hc"
    _tree(src)
    sp = ShareProcess(src, tmp_path / "hs", "--port", "0")
    peer = ["--peer", f"127.0.0.1:{sp.port}"]
    try:
        p, lines = run_clone(sp.link, dst, hc, *peer, "--include", "*.csv", "--exclude", "raw/")
        assert p.returncode == 0, p.stderr
        got = sorted(str(f.relative_to(dst)) for f in dst.rglob("*") if ".dat" not in f.parts)
        assert got == ["a.csv", "sub", "sub/b.csv"]           # no raw/, no notes.txt
        assert _done(lines)["files"] == 2 and _done(lines)["bytes_received"] < 100_000

        # `pull` with no pattern keeps the selection: nothing new to fetch
        p = subprocess.run(cmd("pull", dst, "--json", "--no-lan", *peer), capture_output=True,
                           text=True, env=env(hc), timeout=90)
        assert p.returncode == 0, p.stderr
        assert not (dst / "notes.txt").exists() and not (dst / "raw").exists()

        # a wider selection fetches only what it adds
        p = subprocess.run(cmd("pull", dst, "--json", "--no-lan", *peer, "--include", "*.csv",
                               "--include", "*.txt"), capture_output=True, text=True, env=env(hc),
                           timeout=90)
        assert p.returncode == 0, p.stderr
        done = _done([json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")])
        assert (dst / "notes.txt").read_text() == "notes\n" and not (dst / "raw").exists()
        assert done["files"] == 3 and done["bytes_received"] == len("notes\n")
        st = json.loads(subprocess.run(cmd("status", dst, "--json"), capture_output=True, text=True,
                                       env=env(hc), timeout=60).stdout)
        assert st["files_done"] == 3 and st["files_total"] == 4   # the manifest's four files
    finally:
        sp.stop()


def test_a_pattern_that_spans_lines_is_one_line_error(tmp_path):
    p = subprocess.run(cmd("clone", "dat://" + "ab" * 32, tmp_path / "x", "--include", "a\nb"),
                       capture_output=True, text=True, env=env(tmp_path / "h"), timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
