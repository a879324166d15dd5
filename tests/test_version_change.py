"""A version change while a clone pulls: the clone ends equal to the last
signed version, sizes and bytes (no byte of an older version left behind)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from cli import TEST_CONFIG, ShareProcess, cmd, env
from helpers import tree, visible


def test_truncate_and_rewrite_during_a_transfer_ends_equal_to_the_last_version(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(40 * 2**20))
    (src / "b.bin").write_bytes(os.urandom(4 * 2**20))
    (src / "gone.txt").write_text("only in version 1\n")
    sp = ShareProcess(src, tmp_path / "hs", "--port", "0")
    dst, home = tmp_path / "dst", tmp_path / "hc"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(TEST_CONFIG + "\n[node]\npath_mtu_discovery = false\n")
    proc = subprocess.Popen(cmd("clone", sp.link, dst, "--json", "--no-lan", "--peer",
                                f"127.0.0.1:{sp.port}", "--lanes", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(home))
    lines: list[dict] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(l) for l in proc.stdout))
    try:
        reader.start()
        # stopped as soon as the first file is being written: mid version 1
        deadline = time.monotonic() + 60
        while not (dst / "a.bin").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGSTOP)
        assert proc.poll() is None, "the clone finished before version 2 could be made"
        assert (dst / "a.bin").stat().st_size == 40 * 2**20
        # version 2: a.bin truncated to 3 MiB of other bytes, b.bin rewritten, gone.txt deleted
        (src / "a.bin").write_bytes(os.urandom(3 * 2**20))
        (src / "b.bin").write_bytes(os.urandom(4 * 2**20))
        (src / "gone.txt").unlink()
        deadline = time.monotonic() + 30
        while not any(l.get("event") == "version_published" and l.get("version", 0) >= 2
                      for l in sp.lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(l.get("version", 0) >= 2 for l in sp.lines if l.get("event") == "version_published")
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(120) == 0, proc.stderr.read()
        reader.join()
        done = lines[-1]
        assert done["event"] == "done" and done["version"] >= 2
        assert (dst / "a.bin").stat().st_size == 3 * 2**20
        assert visible(tree(dst)) == visible(tree(src))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
        sp.stop()
