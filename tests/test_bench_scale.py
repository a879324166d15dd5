"""bench/bench_scale.py runs end to end on a small tree and prints every figure
(no timing is asserted: this checks the harness, not the speed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_scale.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tar"),
                                reason="needs root, iproute2 and tar (network namespaces)")

NUM = r"[\d,.]+"


def test_bench_scale_prints_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    cp = subprocess.run([sys.executable, str(BENCH), "--files", "2000", "--large-mb", "2",
                         "--tmp", str(tmp_path), "--json-out", str(out)],
                        capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    text = cp.stdout
    assert "2,001 files" in text
    assert re.search(rf"share: scan {NUM} s .* peak RSS {NUM} MB, CPU {NUM} s", text), text
    assert re.search(rf"clone: first byte {NUM} s, total {NUM} s, {NUM} files/s, {NUM} MB/s, "
                     rf"peak RSS {NUM} MB, CPU {NUM} s", text), text
    assert re.search(rf"tar c \| tar x over TCP: total {NUM} s, {NUM} files/s, {NUM} MB/s; "
                     rf"dattui / tar {NUM}", text), text
    report = json.loads(out.read_text())
    assert report["files"] == 2001 and not report["dattui"]["problems"] and not report["tar"]["problems"]
    assert report["dattui"]["share_rss_mb"] > 0 and report["dattui"]["clone_rss_mb"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["scale.json"]  # its work dir is gone
