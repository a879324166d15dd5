"""Lanes: one transfer spread over worker processes on both sides, each with a
QUIC connection of its own, over real UDP sockets on loopback.

The share's own connection is held to a few blocks (its block server's pacing
hook) so that the lanes must carry the rest: whether they do is then not a
matter of timing. Lanes start only when a side is CPU-bound: these transfers,
held back, never are, so the threshold is 0 here except where that rule itself
is tested."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest

from dattui.engine import events as ev
from dattui.engine.lanes import cpu, share_lanes
from dattui.engine.peer import PeerState
from helpers import engine, tree, until

MAIN_BLOCKS = 4  # blocks the share's own connection serves in each test


@pytest.fixture(autouse=True)
def small_transfers_take_lanes(monkeypatch, request):
    monkeypatch.setattr(share_lanes, "MIN_BYTES", 1 << 20)
    if "real_cpu_rule" not in request.keywords:
        monkeypatch.setattr(cpu, "CPU_BOUND", 0.0)


def dataset(root: Path, files: int = 4, size: int = 3 * 1024 * 1024 + 12345) -> Path:
    rng = random.Random(7)
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"part{i}.bin").write_bytes(rng.randbytes(size))
    return root


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def pair(tmp_path: Path, src: Path, *, share_lanes_n=2, clone_lanes_n=2, sync=False):
    a = await engine(tmp_path / "ha", lanes=share_lanes_n)
    b = await engine(tmp_path / "hb", lanes=clone_lanes_n)
    tid = await a.share(src)
    share = a.transfer(tid)
    share.server.may_send = lambda peer, now: peer.blocks_up < MAIN_BLOCKS
    q = b.subscribe()
    ctid = await b.clone(share.link, tmp_path / "dst", peers=[f"127.0.0.1:{a.port}"], sync=sync)
    return a, b, share, b.transfer(ctid), q


def drain(q: asyncio.Queue) -> list:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


async def test_lanes_carry_the_transfer_and_stop_with_both_sides(tmp_path):
    src = dataset(tmp_path / "src")
    a, b, share, clone, q = await pair(tmp_path, src)
    try:
        done = await asyncio.wait_for(b.wait(clone.tid, find_timeout=10), 60)
        assert tree(tmp_path / "dst") == tree(src)
        total_blocks = sum(e.blocks(clone.manifest.block_size) for e in clone.manifest.files)
        await until(lambda: len(clone.peers) == 3, 20)  # the later lane may come after the end
        lanes = [p for p in clone.peers if p.peer_id.startswith("lane")]
        main = [p for p in clone.peers if not p.peer_id.startswith("lane")]
        assert len(lanes) == 2 and len(main) == 1
        assert main[0].blocks_down <= MAIN_BLOCKS
        assert sum(p.blocks_down for p in lanes) >= total_blocks - MAIN_BLOCKS
        assert done.bytes_received == done.bytes
        # the share counts what its lanes served, and lists their peers
        await until(lambda: share.status().bytes_sent >= done.bytes, 5)
        await until(lambda: len(share.status().peers) == 3, 5)  # lanes report 4 times a second
        logs = [e.message for e in drain(q) if isinstance(e, ev.Logged)]
        assert sum("connected to 127.0.0.1:" in m for m in logs) == 2
        clone_pids = [lp.process.pid for lp in clone.lane_peers]
        share_pids = [p.pid for p in share.lanes.procs]
        assert len(clone_pids) == 2 and len(share_pids) == 2
        assert all(alive(p) for p in clone_pids + share_pids)
    finally:
        await b.close()
        await a.close()
    assert not any(alive(p) for p in clone_pids + share_pids)


async def test_a_lane_killed_mid_transfer_costs_only_its_requests(tmp_path):
    src = dataset(tmp_path / "src", files=6)
    a, b, share, clone, q = await pair(tmp_path, src)
    try:
        await until(lambda: any(lp.state is PeerState.READY for lp in clone.lane_peers), 20)
        victim = next(lp for lp in clone.lane_peers if lp.state is PeerState.READY)
        os.kill(victim.process.pid, signal.SIGKILL)
        await asyncio.wait_for(b.wait(clone.tid, find_timeout=10), 60)
        assert tree(tmp_path / "dst") == tree(src)
        assert victim not in clone.peers and victim not in clone.lane_peers
        assert victim.state is PeerState.CLOSED
        assert not any(victim in holders for holders in clone.inflight.values())
        assert not any(isinstance(e, ev.BadBlockReceived) for e in drain(q))
    finally:
        await b.close()
        await a.close()


@pytest.mark.parametrize("share_n,clone_n", [(2, 0), (0, 2)])
async def test_lanes_need_both_sides(tmp_path, share_n, clone_n):
    src = dataset(tmp_path / "src", files=2)
    a, b, share, clone, q = await pair(tmp_path, src, share_lanes_n=share_n, clone_lanes_n=clone_n)
    share.server.may_send = lambda peer, now: True
    try:
        await asyncio.wait_for(b.wait(clone.tid, find_timeout=10), 60)
        assert tree(tmp_path / "dst") == tree(src)
        assert clone.lane_peers == [] and len(clone.peers) == 1
        if share_n:
            await until(lambda: len(share.lanes.ports) == 2, 20)  # offered, and ignored
            assert clone.lane_peers == []
    finally:
        await b.close()
        await a.close()


async def test_a_new_version_gets_new_lanes_that_serve_it(tmp_path):
    src = dataset(tmp_path / "src", files=2)
    a, b, share, clone, q = await pair(tmp_path, src, sync=True)
    try:
        await until(lambda: clone.completed, 60)
        first = list(clone.lane_peers)
        assert len(first) == 2
        rng = random.Random(9)
        (src / "part1.bin").write_bytes(rng.randbytes(2 * 1024 * 1024 + 1))
        (src / "new.bin").write_bytes(rng.randbytes(1024 * 1024 + 7))
        assert await share.publish()
        await until(lambda: clone.version == 2 and clone.completed, 60)
        assert tree(tmp_path / "dst") == tree(src)
        assert all(lp.state is PeerState.CLOSED for lp in first)
        assert all(lp.index > 2 for lp in clone.lane_peers) and len(clone.lane_peers) == 2
        again = [p for p in clone.peers if p.peer_id in ("lane3", "lane4")]
        assert sum(p.blocks_down for p in again) > 0  # the share's lanes serve version 2
    finally:
        await b.close()
        await a.close()


@pytest.mark.real_cpu_rule
async def test_no_lanes_while_neither_side_is_cpu_bound(tmp_path):
    src = dataset(tmp_path / "src", files=2)
    a, b, share, clone, q = await pair(tmp_path, src)
    try:
        await until(lambda: len(share.lanes.ports) == 2, 20)
        await until(lambda: clone.peers and clone.peers[0].app.get("lane_ports"), 20)
        await asyncio.sleep(1.5)  # the share's connection is held: both sides idle
        assert clone.cpu.load() < cpu.CPU_BOUND and clone.lane_peers == []
        share.server.may_send = lambda peer, now: True
        share.server.pump(share.peers[0])
        await asyncio.wait_for(b.wait(clone.tid, find_timeout=10), 60)
        assert tree(tmp_path / "dst") == tree(src)
        assert clone.lane_peers == [] and len(clone.peers) == 1
    finally:
        await b.close()
        await a.close()


async def test_pause_stops_the_lanes_of_both_sides_and_resume_goes_on(tmp_path):
    src = dataset(tmp_path / "src")
    a, b, share, clone, q = await pair(tmp_path, src)
    try:
        await until(lambda: any(lp.state is PeerState.READY for lp in clone.lane_peers), 20)
        pids = [lp.process.pid for lp in clone.lane_peers] + [p.pid for p in share.lanes.procs]
        await until(lambda: share.lanes.bytes_sent > 0, 10)  # a lane's report came in
        sent = share.status().bytes_sent
        b.pause(clone.tid)
        a.pause(share.tid)
        await until(lambda: not any(alive(p) for p in pids), 10)
        assert clone.lane_peers == [] and not any(p.peer_id.startswith("lane") for p in clone.peers)
        assert share.lanes.procs == [] and share.lanes.ports == {}
        assert share.status().bytes_sent >= sent  # what the stopped lanes served still counts
        share.server.may_send = lambda peer, now: True
        a.resume(share.tid)
        b.resume(clone.tid)
        await asyncio.wait_for(b.wait(clone.tid, find_timeout=10), 60)
        assert tree(tmp_path / "dst") == tree(src)
    finally:
        await b.close()
        await a.close()


async def test_a_lane_port_serves_nobody_without_the_link(tmp_path):
    from dattui.engine.keys import ShareKey, format_link
    src = dataset(tmp_path / "src", files=2)
    a, b, share, clone, q = await pair(tmp_path, src)
    c = await engine(tmp_path / "hc", lanes=0)
    try:
        await until(lambda: len(share.lanes.ports) == 2, 20)
        port = next(iter(share.lanes.ports.values()))
        other = format_link(ShareKey.generate().public)
        ctid = await c.clone(other, tmp_path / "other", peers=[f"127.0.0.1:{port}"])
        await asyncio.sleep(2.0)
        st = c.status()[0]
        assert st.peers == () and st.bytes_have == 0 and not c.transfer(ctid).contacted
        await until(lambda: share.status().peers and all(
            p.peer_id != c.node.identity.short_id for p in share.status().peers), 5)
    finally:
        await c.close()
        await b.close()
        await a.close()
