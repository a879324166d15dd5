"""A clone taking a huge signed manifest: its peak memory and how long the
file list takes, against a share (tests/evil_share.py, holding the key) that
signs N synthetic one-byte files and then serves nothing.

    python bench/bench_big_manifest.py [--entries 1997000]   # ~2,000,000 entries

Prints the manifest's size, the time until the clone has it whole, the
clone's peak RSS (getrusage of the child) and how the clone ended (it waits
for blocks nobody sends and gives up after [clone] stall_timeout, here 15 s)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROG = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import runpy; "
        "runpy.run_module('dattui', run_name='__main__')")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_997_000,
                    help="synthetic files (with their N/1000 folders the manifest holds ~N*1.001 entries; "
                         "the cap is 2,000,000)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "src").mkdir()
        (t / "src" / "a.txt").write_text("a\n")
        t0 = time.monotonic()
        share = subprocess.Popen([sys.executable, str(ROOT / "tests" / "evil_share.py"), "07" * 32,
                                  str(t / "src"), "--mode", "stall", "--synthetic", str(a.entries)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            first = json.loads(share.stdout.readline())
            signed = time.monotonic() - t0
            home = t / "hc"
            home.mkdir()
            (home / "config.toml").write_text("[discovery]\ndht = false\n[clone]\nstall_timeout = 15\n")
            t1 = time.monotonic()
            clone = subprocess.Popen([sys.executable, "-P", "-c", PROG, "clone", first["link"],
                                      str(t / "dst"), "--json", "--no-lan", "--peer",
                                      f"127.0.0.1:{first['port']}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, DATTUI_HOME=str(home)))
            got_list = None
            total = None
            for line in clone.stdout:
                ev = json.loads(line)
                if ev["event"] == "manifest_progressed":
                    total = ev["total"]
                if ev["event"] == "manifest_received" and got_list is None:
                    got_list = time.monotonic() - t1
            _, status, usage = os.wait4(clone.pid, 0)
            err = clone.stderr.read().strip()
        finally:
            share.terminate()
            share.wait(60)
    print(f"{a.entries:,} entries, manifest {total / 2**20 if total else 0:.1f} MiB "
          f"(signed by the share in {signed:.1f} s)")
    print(f"clone: file list whole after {got_list or float('nan'):.1f} s, peak RSS "
          f"{usage.ru_maxrss / 1024:.0f} MB, exit {os.waitstatus_to_exitcode(status)}: {err[-200:]}")


if __name__ == "__main__":
    main()
