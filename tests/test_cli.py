"""The real command line, in subprocesses, on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cli import ShareProcess, cmd, env, run_clone
from helpers import make_tree, tree, visible


@pytest.fixture
def shared(tmp_path):
    src = make_tree(tmp_path / "src")
    sp = ShareProcess(src, tmp_path / "home-share", "--port", "0")
    yield src, sp
    sp.stop()


def test_share_prints_link_first_and_clone_ends_with_done(shared, tmp_path):
    src, sp = shared
    assert sp.link.startswith("dat://") and len(sp.link) == 6 + 64
    dst = tmp_path / "dst"
    p, lines = run_clone(sp.link, dst, tmp_path / "home-clone", "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    done = lines[-1]
    assert done["event"] == "done" and done["files"] == 5
    assert done["bytes_received"] == done["bytes"] == sum(
        v[3].__len__() for v in visible(tree(src)).values() if v[0] == "file")
    connected = [l for l in lines if l["event"] == "peer_connected"]
    assert connected and connected[0]["path"] == "direct" and connected[0]["connect_seconds"] < 5
    assert visible(tree(dst)) == visible(tree(src))
    # the same command again: nothing left to fetch
    p2, lines2 = run_clone(sp.link, dst, tmp_path / "home-clone", "--peer", f"127.0.0.1:{sp.port}")
    assert p2.returncode == 0 and lines2[-1]["bytes_received"] == 0


def test_clone_of_a_clone_of_a_changed_file_refetches_only_that_file(shared, tmp_path):
    src, sp = shared
    dst = tmp_path / "dst"
    home = tmp_path / "home-clone"
    p, _ = run_clone(sp.link, dst, home, "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0
    (dst / "sub" / "a.txt").write_text("local edit!")  # size and mtime change
    p, lines = run_clone(sp.link, dst, home, "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0 and lines[-1]["bytes_received"] == len("hello\n")
    assert visible(tree(dst)) == visible(tree(src))


@pytest.mark.parametrize("link", ["dat://nothex", "https://example.org/x", "dat://" + "a" * 63])
def test_malformed_link_is_one_line_error(tmp_path, link):
    p = subprocess.run(cmd("clone", link, tmp_path / "dst", "--no-lan"), capture_output=True,
                       text=True, env=env(tmp_path / "h"))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "64 hex" in p.stderr
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("args,code,words", [
    (("--lanes", "9"), 2, "invalid choice"),
    (("--lanes", "2", "--background"), 2, "transfer.lanes"),
])
def test_lanes_flag_errors_say_what_to_do(tmp_path, args, code, words):
    p = subprocess.run(cmd("clone", "dat://" + "ab" * 32, tmp_path / "dst", "--no-lan", *args),
                       capture_output=True, text=True, env=env(tmp_path / "h"))
    assert p.returncode == code and words in p.stderr.splitlines()[-1]
    assert not (tmp_path / "dst").exists()


def test_share_not_found_is_one_line_error(tmp_path):
    p, _ = run_clone("dat://" + "cd" * 32, tmp_path / "dst", tmp_path / "h", "--timeout", "1.5",
                     "--peer", "127.0.0.1:9")
    assert p.returncode == 3
    assert p.stderr.count("\n") == 1 and "dattui doctor" in p.stderr


def test_share_of_missing_folder_is_one_line_error(tmp_path):
    p = subprocess.run(cmd("share", tmp_path / "nope", "--no-lan"), capture_output=True, text=True,
                       env=env(tmp_path / "h"))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not a folder" in p.stderr


def test_target_folder_not_writable(shared, tmp_path):
    src, sp = shared
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p, _ = run_clone(sp.link, blocker / "dst", tmp_path / "h", "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 5 and p.stderr.count("\n") == 1 and "cannot create" in p.stderr
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_is_found_before_writing_and_the_same_command_resumes(tmp_path):
    """A version larger than the free space stops before a byte is written,
    with one line naming both numbers (exit 5); nothing is lost."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3_000_000))
    (src / "b.bin").write_bytes(os.urandom(3_000_000))
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", small], check=True)
    sp = ShareProcess(src, tmp_path / "hs", "--port", "0")
    try:
        home = tmp_path / "hc"
        p, lines = run_clone(sp.link, small / "dst", home, "--peer", f"127.0.0.1:{sp.port}")
        assert p.returncode == 5 and "disk full" in p.stderr and p.stderr.count("\n") == 1
        import re
        free = int(re.search(r"(\d+) bytes \([\d.]+ MiB\) are free", p.stderr).group(1))
        assert "needs 6000000 more bytes" in p.stderr and 3_000_000 < free <= 4 * 2**20
        assert "Traceback" not in p.stderr
        # not a byte written, and a clone that took no version leaves no folder it made
        assert not (small / "dst").exists()
        # the same command on a roomier disk finishes
        p, lines = run_clone(sp.link, tmp_path / "dst", home, "--peer", f"127.0.0.1:{sp.port}")
        assert p.returncode == 0, p.stderr
        assert lines[-1]["bytes_received"] == 6_000_000
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        sp.stop()
        subprocess.run(["umount", "-l", small])


def test_keys_show_export_import(shared, tmp_path):
    src, sp = shared
    p = subprocess.run(cmd("keys", "show", src), capture_output=True, text=True,
                       env=env(tmp_path / "home-share"))
    assert p.returncode == 0 and p.stdout.strip() == sp.link
    out = tmp_path / "exported.key"
    p = subprocess.run(cmd("keys", "export", src, "-o", out), capture_output=True, text=True,
                       env=env(tmp_path / "home-share"))
    assert p.returncode == 0 and oct(out.stat().st_mode & 0o777) == "0o600"
    p = subprocess.run(cmd("keys", "import", out), capture_output=True, text=True,
                       env=env(tmp_path / "other-machine"))
    assert p.returncode == 0 and p.stdout.strip() == sp.link
    keyfiles = list((tmp_path / "other-machine" / "keys").iterdir())
    assert len(keyfiles) == 1 and keyfiles[0].stat().st_mode & 0o777 == 0o600
    # the secret key is never inside the shared folder
    secret_hex = out.read_text().split()[-1]
    for f in src.rglob("*"):
        if f.is_file():
            assert secret_hex.encode() not in f.read_bytes()
            assert bytes.fromhex(secret_hex) not in f.read_bytes()


def test_sigint_stops_share_cleanly(tmp_path):
    src = make_tree(tmp_path / "src")
    sp = ShareProcess(src, tmp_path / "h", "--port", "0")
    sp.proc.send_signal(signal.SIGINT)
    assert sp.proc.wait(10) == 0
