"""The researcher's workflow, both sides, with real processes on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli import ShareProcess, cmd, env, run_clone
from helpers import make_tree, tree, visible


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


def _clone_in(cwd: Path, link: str, home: Path, *extra, timeout=60):
    """`dattui clone LINK --json` run in `cwd`, without a folder unless `extra` has one."""
    cwd.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(cmd("clone", link, "--json", "--no-lan", *extra), cwd=cwd,
                       capture_output=True, text=True, env=env(home), timeout=timeout)
    return p, [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def test_clone_without_a_folder_is_named_after_the_share(shared, tmp_path):
    src, sp = shared
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "src" / "mine.txt").write_text("not the share's")  # taken: the clone goes beside
    p, lines = _clone_in(work, sp.link, tmp_path / "hc", "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in work.iterdir()) == ["src", "src-2"]
    assert visible(tree(work / "src-2")) == visible(tree(src))
    assert lines[-1]["event"] == "done" and lines[-1]["path"] == str(work / "src-2")
    assert not lines[-1]["up_to_date"]
    # the same command again: the same folder, and it says it is up to date
    p, lines = _clone_in(work, sp.link, tmp_path / "hc", "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in work.iterdir()) == ["src", "src-2"]
    assert lines[-1]["up_to_date"] and lines[-1]["bytes_received"] == 0
    p = subprocess.run(cmd("clone", sp.link, "--no-lan", "--peer", f"127.0.0.1:{sp.port}"),
                       cwd=work, capture_output=True, text=True, env=env(tmp_path / "hc"), timeout=60)
    assert p.returncode == 0 and "already up to date: version 1" in p.stdout


def test_safe_names():
    from dattui.tui.clone_target import safe_name
    key = bytes(range(32))
    assert safe_name("frog-genomes", key) == "frog-genomes"
    assert safe_name("../../etc", key) == "_.._etc"
    assert safe_name("a\x1b[31mb", key) == "a_[31mb"
    assert safe_name("..", key) == safe_name("", key) == "dattui-00010203"


def test_a_typo_in_the_link_leaves_nothing_behind_and_the_right_link_then_works(shared, tmp_path):
    src, sp = shared
    typo = sp.link[:-1] + ("0" if sp.link[-1] != "0" else "1")
    for dst in (tmp_path / "new", tmp_path / "empty"):
        if dst.name == "empty":
            dst.mkdir()
        p, _ = run_clone(typo, dst, tmp_path / "hc", "--timeout", "1.5",
                         "--peer", f"127.0.0.1:{sp.port}")
        assert p.returncode == 3 and p.stderr.count("\n") == 1
        assert typo[6:14] + "…" + typo[-8:] in p.stderr  # tells it from the right link
        assert not (dst / ".dat").exists() and (dst.exists() == (dst.name == "empty"))
        p, lines = run_clone(sp.link, dst, tmp_path / "hc", "--peer", f"127.0.0.1:{sp.port}")
        assert p.returncode == 0, p.stderr
        assert visible(tree(dst)) == visible(tree(src))


def _start_clone(link: str, dst: Path, home: Path, *extra) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(cmd("clone", link, dst, "--json", "--no-lan", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(home))
    first = json.loads(proc.stdout.readline())
    return proc, first


def test_a_second_process_on_one_folder_is_refused_naming_the_first(shared, tmp_path):
    src, sp = shared
    dst = tmp_path / "dst"
    first, line = _start_clone(sp.link, dst, tmp_path / "h1", "--sync", "--peer",
                               f"127.0.0.1:{sp.port}")
    try:
        assert line["event"] == "cloning"  # it owns the folder from here on
        p, _ = run_clone(sp.link, dst, tmp_path / "h2", "--peer", f"127.0.0.1:{sp.port}")
        assert p.returncode == 2 and p.stderr.count("\n") == 1
        assert f"pid {first.pid}" in p.stderr and "clone" in p.stderr and "--sync" in p.stderr
        # a share of that folder too
        p = subprocess.run(cmd("share", dst, "--no-lan"), capture_output=True, text=True,
                           env=env(tmp_path / "h2"), timeout=60)
        assert p.returncode == 2
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(20) in (0, 130)
    # the owner gone, the folder is free again
    p, lines = run_clone(sp.link, dst, tmp_path / "h2", "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr


def test_ctrl_c_says_what_is_kept(tmp_path):
    dst = tmp_path / "dst"
    proc, line = _start_clone("dat://" + "ab" * 32, dst, tmp_path / "h", "--peer", "127.0.0.1:9",
                              "--timeout", "60")
    assert line["event"] == "cloning"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    stopped = [json.loads(l) for l in out.splitlines() if l.startswith("{")][-1]
    assert stopped["event"] == "stopped" and stopped["bytes_have"] == 0
    assert not dst.exists()  # it received nothing: nothing is left


def test_a_clone_moving_to_its_named_folder_is_one_connection_to_the_share(shared, tmp_path):
    src, sp = shared
    p, lines = _clone_in(tmp_path / "work", sp.link, tmp_path / "hc", "--peer",
                         f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    assert [l["event"] for l in lines].count("peer_connected") == 1
    assert lines[-1]["bytes_received"] == lines[-1]["bytes"]  # counted in both folders
    wait_line(sp.lines, lambda l: l["event"] == "peer_disconnected")
    events = [l["event"] for l in sp.lines]
    assert events.count("peer_connected") == events.count("peer_disconnected") == 1


def test_resume_is_announced_once(shared, tmp_path):
    src, sp = shared
    dst = tmp_path / "dst"
    p, lines = run_clone(sp.link, dst, tmp_path / "hc", "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    total = lines[-1]["bytes"]
    gone = (dst / "big.bin").stat().st_size
    (dst / "big.bin").unlink()  # what is left of the clone is still verified
    p, lines = run_clone(sp.link, dst, tmp_path / "hc", "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    resuming = [l for l in lines if l["event"] == "resuming"]
    assert len(resuming) == 1
    assert resuming[0]["bytes_have"] == total - gone and resuming[0]["bytes_total"] == total
    assert lines[-1]["bytes_received"] == gone and not lines[-1]["up_to_date"]
    p = subprocess.run(cmd("clone", sp.link, dst, "--no-lan", "--peer", f"127.0.0.1:{sp.port}"),
                       capture_output=True, text=True, env=env(tmp_path / "hc"), timeout=60)
    assert p.returncode == 0 and p.stdout.count("already up to date") == 1
    assert "resuming" not in p.stdout
