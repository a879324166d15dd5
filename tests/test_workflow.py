"""The researcher's workflow, both sides, with real processes on loopback."""

from __future__ import annotations

import time

import pytest

from cli import ShareProcess, run_clone
from helpers import make_tree


def wait_line(lines: list[dict], pred, timeout: float = 20.0) -> dict:
    """The first line of a growing list that satisfies `pred` (a condition,
    polled until `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in list(lines):
            if pred(line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no such line in {lines[-20:]}")
        time.sleep(0.05)


@pytest.fixture
def shared(tmp_path):
    src = make_tree(tmp_path / "src")
    sp = ShareProcess(src, tmp_path / "home-share", "--port", "0")
    yield src, sp
    sp.stop()


def test_share_json_carries_the_clones_progress_and_completion(shared, tmp_path):
    src, sp = shared
    p, lines = run_clone(sp.link, tmp_path / "dst", tmp_path / "home-clone",
                         "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    total = lines[-1]["bytes"]
    completed = wait_line(sp.lines, lambda l: l["event"] == "peer_completed")
    assert completed["bytes"] == total and completed["files"] == lines[-1]["files"]
    progressed = [l for l in sp.lines if l["event"] == "peer_progressed"]
    assert progressed and progressed[-1]["bytes_have"] == progressed[-1]["bytes_total"] == total
    assert all(l["peer_id"] == completed["peer_id"] for l in progressed)
    left = wait_line(sp.lines, lambda l: l["event"] == "peer_disconnected")
    assert left["reason"] == "left with the whole version"
    assert not any("stopped" in l.get("reason", "") for l in sp.lines)
