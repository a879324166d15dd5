"""Swarm downloads in one process over real UDP sockets on loopback: a clone
fetches from every peer that has the data, rarest first, with an endgame, and
serves what it has verified to other clones (unless --no-upload).

Where speed matters, every node's upload is paced (PacedServer below), as on a
network where each machine's uplink is the bottleneck. Unpaced, everything in
one process on loopback is bound by the one CPU running it, and no swarm can
beat that: five downloads cost five times the work however they are spread.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from pathlib import Path

import pytest

from dattui.engine import keystore, wire
from dattui.engine.errors import NotFound
from dattui.engine.serve import BlockServer
from dattui.engine.store import ShareDB
from helpers import engine, tree, visible

MiB = 1 << 20


class PacedServer(BlockServer):
    """A BlockServer whose upload, over all its peers together, is held to
    `rate` bytes per second (a token bucket): requests wait in its queue."""

    def __init__(self, source, rate: float, burst: int = 64 * 1024) -> None:
        super().__init__(source)
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), time.monotonic()
        self._waiting: dict = {}
        self.requests: list[tuple[int, int]] = []  # (file, block) of every request received
        self.cancels = 0

    def request(self, peer, req) -> None:
        self.requests.append((req.file, req.block))
        super().request(peer, req)

    def cancel(self, peer, req) -> None:
        self.cancels += 1
        super().cancel(peer, req)

    def may_send(self, peer, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens > 0:
            return True
        if peer not in self._waiting:
            def again() -> None:
                self._waiting.pop(peer, None)
                self.pump(peer)
            delay = -self.tokens / self.rate + 0.002
            self._waiting[peer] = asyncio.get_running_loop().call_later(delay, again)
        return False

    def sent(self, peer, nbytes: int, now: float) -> None:
        self.tokens -= nbytes


def make_files(root: Path, count: int, size: int, seed: int = 7) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"d{i % 4}").mkdir(exist_ok=True)
        (root / f"d{i % 4}" / f"f{i:03d}.bin").write_bytes(rng.randbytes(size))
    return root


async def seeders(tmp_path: Path, src: Path, n: int, paced: list[float | None]):
    """`n` shares of the same data under the same key, each in its own engine,
    each serving its own copy of the folder (same name, modes and mtimes, so
    every copy signs the very same manifest)."""
    engines, swarms = [], []
    key = None
    for i in range(n):
        e = await engine(tmp_path / f"seed{i}")
        folder = src if i == 0 else tmp_path / f"copy{i}" / src.name
        if i:
            shutil.copytree(src, folder, ignore=shutil.ignore_patterns(".dat"))
            keystore.save(key, e.state_dir)
            db = ShareDB(folder)
            db.set("public_key", key.public)
            db.set("role", "share")
            db.close()
        tid = await e.share(folder)
        swarm = e.transfer(tid)
        key = swarm.key
        if paced[i] is not None:
            swarm.server = PacedServer(swarm, paced[i])
        engines.append(e)
        swarms.append(swarm)
    assert len({s.signature for s in swarms}) == 1  # one and the same signed manifest
    return engines, swarms


def by_address(clone) -> dict[str, object]:
    return {p.address: p for p in clone.peers}


async def close_all(*engines) -> None:
    for e in reversed(engines):
        await e.close()


async def test_a_clone_with_three_seeders_receives_blocks_from_all_three(tmp_path):
    src = make_files(tmp_path / "data", 24, 256 * 1024)  # 24 blocks
    es, shares = await seeders(tmp_path, src, 3, [2 * MiB] * 3)
    c = await engine(tmp_path / "hc")
    try:
        tid = await c.clone(shares[0].link, tmp_path / "dst",
                            peers=[f"127.0.0.1:{e.port}" for e in es])
        done = await asyncio.wait_for(c.wait(tid, find_timeout=10), 30)
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
        assert done.bytes_received == done.bytes  # nothing fetched twice
        peers = by_address(c.transfer(tid))
        got = {e.port: peers[f"127.0.0.1:{e.port}"].blocks_down for e in es}
        print("blocks from each seeder:", got)
        assert all(n > 0 for n in got.values()), got
        assert sum(got.values()) == 24
        statuses = {p.address: p for p in c.status()[0].peers}
        assert all(statuses[f"127.0.0.1:{e.port}"].blocks_down > 0 for e in es)
    finally:
        await close_all(*es, c)


def make_big_file(root: Path, size: int, seed: int = 9) -> Path:
    root.mkdir(parents=True)
    (root / "big.bin").write_bytes(random.Random(seed).randbytes(size))
    return root


@pytest.mark.parametrize("dataset", ["many-files", "one-big-file"])
async def test_five_clones_finish_together_and_the_share_uploads_less_than_twice(tmp_path, dataset):
    if dataset == "many-files":
        rate, size = 1 * MiB, 64 * 64 * 1024
        src = make_files(tmp_path / "data", 64, 64 * 1024)
    else:  # one file: clones trade the blocks they have verified before it is complete
        rate, size = 2 * MiB, 8 * MiB
        src = make_big_file(tmp_path / "data", size)
    es, (share,) = await seeders(tmp_path, src, 1, [rate])
    link, share_addr = share.link, f"127.0.0.1:{es[0].port}"
    clones = []
    try:
        # one clone alone
        solo = await engine(tmp_path / "solo")
        clones.append(solo)
        t0 = time.monotonic()
        tid = await solo.clone(link, tmp_path / "alone", peers=[share_addr])
        solo.transfer(tid).server = PacedServer(solo.transfer(tid), rate)
        await asyncio.wait_for(solo.wait(tid, find_timeout=10), 30)
        alone = time.monotonic() - t0
        await solo.close()
        clones.remove(solo)

        # five at once, each told of the share and of the four others
        sent_before = share.server.bytes_sent
        five = [await engine(tmp_path / f"c{i}") for i in range(5)]
        clones += five
        t0 = time.monotonic()
        tids = []
        for i, e in enumerate(five):
            others = [f"127.0.0.1:{o.port}" for o in five if o is not e]
            tid = await e.clone(link, tmp_path / f"dst{i}", peers=[share_addr] + others)
            e.transfer(tid).server = PacedServer(e.transfer(tid), rate)
            tids.append(tid)

        async def finish(e, tid) -> float:
            await e.wait(tid, find_timeout=10)
            return time.monotonic() - t0

        times = await asyncio.wait_for(
            asyncio.gather(*(finish(e, t) for e, t in zip(five, tids))), 60)
        together = max(times)
        uploaded = share.server.bytes_sent - sent_before
        swarms = [e.transfer(t) for e, t in zip(five, tids)]
        print(f"\none clone alone: {alone:.2f} s; five clones: {together:.2f} s "
              f"({together / alone:.2f}x; each {', '.join(f'{t:.2f}' for t in times)} s)")
        print(f"share uploaded {uploaded / size:.2f}x the dataset; clones uploaded "
              f"{', '.join(f'{s.server.bytes_sent / size:.2f}' for s in swarms)}x; "
              f"moved {[s.blocks_moved for s in swarms]}, endgame copies "
              f"{[s.blocks_duplicated for s in swarms]}")
        for i in range(5):
            assert visible(tree(tmp_path / f"dst{i}")) == visible(tree(src))
        assert uploaded < 2 * size
        assert together < 2.5 * alone
        assert sum(s.server.bytes_sent for s in swarms) > size  # the clones served each other
    finally:
        await close_all(*es, *clones)


async def test_a_slow_seeder_does_not_stall_the_end(tmp_path):
    src = make_files(tmp_path / "data", 16, 256 * 1024)  # 16 blocks, 4 MiB
    slow_rate = 32 * 1024  # a block every 8 s
    es, (fast, slow) = await seeders(tmp_path, src, 2, [None, slow_rate])
    c = await engine(tmp_path / "hc")
    try:
        t0 = time.monotonic()
        tid = await c.clone(fast.link, tmp_path / "dst",
                            peers=[f"127.0.0.1:{e.port}" for e in es])
        await asyncio.wait_for(c.wait(tid, find_timeout=10), 30)
        took = time.monotonic() - t0
        swarm = c.transfer(tid)
        peers = by_address(swarm)
        from_fast = peers[f"127.0.0.1:{es[0].port}"].blocks_down
        from_slow = peers[f"127.0.0.1:{es[1].port}"].blocks_down
        print(f"\ndone in {took:.2f} s: {from_fast} blocks from the fast seeder, {from_slow} from "
              f"the slow one ({len(slow.server.requests)} asked of it, {slow.server.cancels} "
              f"cancelled); {swarm.blocks_duplicated} endgame copies")
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
        assert len(slow.server.requests) > 1  # it was asked (and sat on its requests) ...
        assert took < 5  # ... but the end did not wait for it (that would be 8 s a block)
        assert from_fast > from_slow
        assert swarm.blocks_duplicated > 0 and slow.server.cancels > 0
        await asyncio.sleep(0.2)
        assert not any(p.app.get("serve_queue") for p in slow.peers)  # cancelled there
    finally:
        await close_all(*es, c)


class RefusingShare:
    """Makes a share answer NO_DATA for some files although it said HAVE_ALL."""

    def __init__(self, swarm, refused: set[str]) -> None:
        self.swarm, self.refused = swarm, refused
        self.inner = swarm.read_block
        swarm.read_block = self.read_block

    def read_block(self, version, file, block):
        if self.swarm.manifest.entries[file].path in self.refused:
            return None
        return self.inner(version, file, block)


async def test_a_peer_that_answers_no_data_is_not_asked_again_for_that_file(tmp_path):
    src = make_files(tmp_path / "data", 24, 100 * 1024)  # one block each
    es, (good, bad) = await seeders(tmp_path, src, 2, [2 * MiB, 2 * MiB])
    refused = {f"d{i % 4}/f{i:03d}.bin" for i in range(0, 24, 3)}
    RefusingShare(bad, refused)
    c = await engine(tmp_path / "hc")
    try:
        tid = await c.clone(good.link, tmp_path / "dst",
                            peers=[f"127.0.0.1:{e.port}" for e in es])
        await asyncio.wait_for(c.wait(tid, find_timeout=10), 30)
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
        m = good.manifest
        asked = [m.entries[f].path for f, _ in bad.server.requests]
        refused_asks = [p for p in asked if p in refused]
        assert len(refused_asks) == len(set(refused_asks))  # never twice
        assert len(asked) > len(refused_asks)  # it served the others
    finally:
        await close_all(*es, c)


async def test_after_no_data_a_file_is_asked_again_once_the_peer_says_have(tmp_path):
    src = make_files(tmp_path / "data", 8, 100 * 1024)
    es, (share,) = await seeders(tmp_path, src, 1, [64 * MiB])  # paced only to count requests
    missing = "d1/f001.bin"
    refusing = RefusingShare(share, {missing})
    c = await engine(tmp_path / "hc")
    try:
        tid = await c.clone(share.link, tmp_path / "dst", peers=[f"127.0.0.1:{es[0].port}"])
        clone = c.transfer(tid)
        for _ in range(200):  # everything but the refused file
            st = c.status()[0]
            if st.files_total and st.files_done == st.files_total - 1:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.6)  # a few ticks: it is not asked again meanwhile
        idx = next(i for i, e in enumerate(share.manifest.entries) if e.path == missing)
        assert share.server.requests.count((idx, 0)) == 1 and not clone.completed
        refusing.refused.clear()  # the file is back, and the share says so
        share.peers[0].send(wire.Have(share.version, idx))
        await asyncio.wait_for(c.wait(tid), 10)
        assert share.server.requests.count((idx, 0)) == 2
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        await close_all(*es, c)


async def test_no_upload_clone_serves_nothing(tmp_path):
    src = make_files(tmp_path / "data", 8, 256 * 1024)
    es, (share,) = await seeders(tmp_path, src, 1, [None])
    b = await engine(tmp_path / "hb", upload=False)
    c = await engine(tmp_path / "hc")
    d = await engine(tmp_path / "hd", stall_timeout=1.5)
    try:
        t1 = await b.clone(share.link, tmp_path / "b", peers=[f"127.0.0.1:{es[0].port}"], sync=True)
        await asyncio.wait_for(b.wait(t1, find_timeout=10), 30)
        quiet = b.transfer(t1)
        assert not quiet.upload
        # a clone told of both fetches everything from the share, nothing from b
        t2 = await c.clone(share.link, tmp_path / "c",
                           peers=[f"127.0.0.1:{es[0].port}", f"127.0.0.1:{b.port}"])
        for _ in range(100):  # both connections up before it finishes
            if len(c.transfer(t2).peers) == 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.wait_for(c.wait(t2, find_timeout=10), 30)
        assert by_address(c.transfer(t2))[f"127.0.0.1:{b.port}"].blocks_down == 0
        assert quiet.server.blocks_sent == 0
        # with the share gone, a clone pointed only at b finds nobody to fetch from
        await es.pop().close()
        t3 = await d.clone(share.link, tmp_path / "d", peers=[f"127.0.0.1:{b.port}"])
        started = time.monotonic()
        with pytest.raises(NotFound) as e:  # b authenticates (first contact), sends nothing
            await d.wait(t3, find_timeout=1.5)
        assert time.monotonic() - started < 10
        assert "sent no manifest" in str(e.value)
        assert quiet.server.blocks_sent == 0 and d.transfer(t3).contacted
    finally:
        await close_all(*es, b, c, d)


def test_no_upload_flag_reaches_the_engine_options():
    from dattui import config as config_mod
    from dattui.tui.main import build_parser
    from dattui.tui.transfer_cmds import engine_options
    cfg = config_mod.load()
    link = "dat://" + "ab" * 32
    on = build_parser().parse_args(["clone", link, "dir"])
    off = build_parser().parse_args(["clone", link, "dir", "--no-upload"])
    assert engine_options(on, cfg).upload is cfg.transfer.upload
    assert engine_options(off, cfg).upload is False



def test_pipeline_is_twice_the_bandwidth_delay_product_within_bounds():
    from dattui.engine.clone import MIN_PIPELINE_BLOCKS, pipeline_bytes
    bs, cap = 256 * 1024, 16 * MiB
    floor = MIN_PIPELINE_BLOCKS * bs
    assert pipeline_bytes(0, 0.05, bs, cap) == floor  # nothing measured yet
    assert pipeline_bytes(100_000, 0.05, bs, cap) == floor  # a slow peer: a few blocks
    assert pipeline_bytes(20 * MiB, 0.1, bs, cap) == 4 * MiB  # a fast one far away: many
    assert pipeline_bytes(1000 * MiB, 0.2, bs, cap) == cap
    # a pipeline shorter than the path lets rate = pipeline / RTT through: it doubles
    short = floor
    assert pipeline_bytes(short / 0.2, 0.2, bs, cap) == 2 * short
