"""A clone killed with SIGKILL and started again fetches only what it had not verified."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time

from cli import TEST_CONFIG, ShareProcess, cmd, env, run_clone
from dattui.engine.store import CloneDB
from helpers import tree, visible

TOTAL = 160 * 1024 * 1024 + 12345
KILL_AT = 8 * 1024 * 1024
SIZES = {0: TOTAL, 1: 6}  # the manifest is sorted by path: big.bin (0), small.txt (1)


def recorded_bytes(folder, sizes: dict[int, int], bs: int) -> int:
    db = CloneDB(folder, create=False)
    try:
        done = db.done_files()
        partial = db.verified()
    finally:
        db.close()
    n = sum(sizes[f] for f in done)
    for f, blocks in partial.items():
        n += sum(min(bs, sizes[f] - b * bs) for b in blocks)
    return n


def test_sigkill_then_same_command_fetches_only_unverified(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big.bin", "wb") as f:
        for _ in range(160):
            f.write(os.urandom(1024 * 1024))
        f.write(os.urandom(12345))
    (src / "small.txt").write_text("small\n")
    sp = ShareProcess(src, tmp_path / "hs", "--port", "0")
    dst, home = tmp_path / "dst", tmp_path / "hc"
    try:
        # 1,452-byte datagrams (no path MTU discovery): on loopback the clone then
        # takes seconds, not a fraction of one, so the kill lands mid-transfer
        home.mkdir(mode=0o700)
        (home / "config.toml").write_text(TEST_CONFIG + "\n[node]\npath_mtu_discovery = false\n")
        args = cmd("clone", sp.link, dst, "--json", "--no-lan", "--peer", f"127.0.0.1:{sp.port}")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env(home))
        reported = []  # bytes_have of its progress lines (one a second)

        def read() -> None:
            for line in proc.stdout:
                obj = json.loads(line)
                if obj["event"] == "progress":
                    reported.append(obj["bytes_have"])

        reader = threading.Thread(target=read)
        reader.start()
        # killed as soon as its state records 8 MiB: a loopback transfer may take
        # less than the second between two progress lines
        seen = 0
        deadline = time.monotonic() + 60
        while seen < KILL_AT and proc.poll() is None and time.monotonic() < deadline:
            if (dst / ".dat" / "dattui.db").exists():
                try:
                    seen = recorded_bytes(dst, SIZES, 262144)
                except sqlite3.Error:
                    pass
            time.sleep(0.002)
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it finished first: the assertion below says so
        proc.wait()
        reader.join()
        assert KILL_AT <= seen < TOTAL + 6, "the clone finished before it could be killed"
        rec = recorded_bytes(dst, SIZES, 262144)
        assert rec >= max([seen, *reported])  # everything recorded or reported survived the kill
        assert rec < TOTAL + 6
        p, lines = run_clone(sp.link, dst, home, "--peer", f"127.0.0.1:{sp.port}")
        assert p.returncode == 0, p.stderr
        done = lines[-1]
        assert done["event"] == "done"
        # only what was not verified is fetched again
        assert done["bytes_received"] == TOTAL + 6 - rec
        assert visible(tree(dst)) == visible(tree(src))
    finally:
        sp.stop()
