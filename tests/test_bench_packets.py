"""bench/bench_packets.py runs, and the fast paths put the same number of
packets on the wire as aioquic's own (they change what a packet costs, not
what is sent)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_packets.py"


def _run(*args: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, str(BENCH), "4", *args], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    m = re.search(r"(\d+) packets, (\d+) ACK datagrams; sender [\d.]+ us/packet", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def test_fast_and_plain_send_the_same_packets():
    fast, plain = _run(), _run("1452", "--plain")
    assert fast[0] == plain[0] > 4 * 1024 * 1024 // 1452
    assert fast[1] > 0 and plain[1] > 0
