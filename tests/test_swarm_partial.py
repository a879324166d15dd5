"""Clones serve the blocks they have verified before their file is complete:
each with the Merkle proof it was verified with, kept in the clone's state
database, so also after a restart. A peer that sends a block whose proof does
not verify is disconnected, whoever it is."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

from dattui.engine import events as ev
from dattui.engine import merkle, wire
from dattui.engine.clone import _new_bits, ranges_mask
from dattui.engine.store import CloneDB
from helpers import engine, tree, until, visible
from test_swarm import PacedServer, close_all

MiB = 1 << 20
BS = 256 * 1024
NBLOCKS = 16


def big_file(root: Path) -> bytes:
    root.mkdir(parents=True)
    data = random.Random(3).randbytes(NBLOCKS * BS - 1000)
    (root / "big.bin").write_bytes(data)
    return data


async def partial_clone(tmp_path: Path, src: Path, at_least: int):
    """A share, and a clone of it stopped once it holds `at_least` blocks of
    big.bin, then started again with no peer: (share engine, share swarm,
    clone engine, clone tid, blocks the clone holds)."""
    s = await engine(tmp_path / "hs")
    tid = await s.share(src)
    share = s.transfer(tid)
    share.server = PacedServer(share, 1 * MiB)
    a = await engine(tmp_path / "ha")
    t = await a.clone(share.link, tmp_path / "a", peers=[f"127.0.0.1:{s.port}"])
    swarm = a.transfer(t)
    await until(lambda: len(swarm.verified.get(0, ())) >= at_least)
    await a.close()  # mid-file: what it holds is in its state database
    a = await engine(tmp_path / "ha")
    t = await a.clone(share.link, tmp_path / "a")
    held = set(a.transfer(t).verified[0])
    assert at_least <= len(held) < NBLOCKS and not a.transfer(t).done
    return s, share, a, t, held


async def test_a_clone_serves_the_blocks_it_holds_of_an_incomplete_file_after_a_restart(tmp_path):
    src = tmp_path / "src"
    data = big_file(src)
    s, share, a, ta, held = await partial_clone(tmp_path, src, 5)
    b = await engine(tmp_path / "hb")
    try:
        tb = await b.clone(share.link, tmp_path / "b", peers=[f"127.0.0.1:{a.port}"])
        other = b.transfer(tb)
        # the share is not among b's peers: b gets exactly what a holds, from a
        await until(lambda: set(other.verified.get(0, ())) == held)
        await asyncio.sleep(0.5)
        assert set(other.verified.get(0, ())) == held and not other.completed
        assert a.transfer(ta).server.blocks_sent == len(held)
        with open(tmp_path / "b" / "big.bin", "rb") as f:
            for blk in held:
                f.seek(blk * BS)
                assert f.read(BS) == data[blk * BS:(blk + 1) * BS]
        # the rest comes from the share; a, which gets the rest too, is told of it
        b.add_peer(tb, f"127.0.0.1:{s.port}")
        a.add_peer(ta, f"127.0.0.1:{s.port}")
        await asyncio.wait_for(asyncio.gather(b.wait(tb), a.wait(ta)), 30)
        assert visible(tree(tmp_path / "b")) == visible(tree(src))
        assert visible(tree(tmp_path / "a")) == visible(tree(src))
    finally:
        await close_all(s, a, b)


async def test_a_clone_sending_a_bad_proof_for_a_partial_block_is_disconnected(tmp_path):
    src = tmp_path / "src"
    big_file(src)
    s, share, a, ta, held = await partial_clone(tmp_path, src, 3)
    liar = a.transfer(ta)
    honest_read = liar.read_block

    def bad_proof(version, file, block):
        got = honest_read(version, file, block)
        if got is None:
            return None
        data, proof = got
        return data, [bytes([proof[0][0] ^ 1]) + proof[0][1:]] + proof[1:]

    liar.read_block = bad_proof
    b = await engine(tmp_path / "hb")
    q = b.subscribe()
    try:
        tb = await b.clone(share.link, tmp_path / "b", peers=[f"127.0.0.1:{a.port}"])
        bad = None
        for _ in range(500):
            while not q.empty():
                e = q.get_nowait()
                if isinstance(e, ev.BadBlockReceived):
                    bad = e
            if bad:
                break
            await asyncio.sleep(0.02)
        assert bad is not None and bad.path == "big.bin" and bad.block in held
        await asyncio.sleep(0.2)
        assert not b.transfer(tb).peers  # disconnected
        assert not b.transfer(tb).verified.get(0)  # nothing it sent was kept
        b.node.sources[0].remove(b.transfer(tb).dkey)  # stop redialling the liar
        b.add_peer(tb, f"127.0.0.1:{s.port}")
        await asyncio.wait_for(b.wait(tb), 30)
        assert visible(tree(tmp_path / "b")) == visible(tree(src))
    finally:
        await close_all(s, a, b)


async def test_block_ranges_beyond_the_file_close_the_connection(tmp_path):
    src = tmp_path / "src"
    big_file(src)
    s = await engine(tmp_path / "hs")
    c = await engine(tmp_path / "hc")
    try:
        tid = await s.share(src)
        share = s.transfer(tid)
        share.server = PacedServer(share, 256 * 1024)  # still fetching when the frame comes
        t = await c.clone(share.link, tmp_path / "dst", peers=[f"127.0.0.1:{s.port}"])
        await until(lambda: c.transfer(t).verified.get(0))
        (peer,) = share.peers
        (theirs,) = c.transfer(t).peers
        peer.send(wire.HaveBlocks(share.version, 0, ((0, NBLOCKS + 1),)))
        await until(lambda: peer.link.closed, 5)
        assert "outside the file" in theirs.closed_reason
    finally:
        await close_all(s, c)


def test_ranges_mask_and_new_bits():
    assert ranges_mask([(0, 3), (9, 1)], 12) == bytearray(b"\xe0\x40")
    assert ranges_mask([(3, 10)], 16) == bytearray(b"\x1f\xf8")
    assert ranges_mask([(0, 16)], 16) == bytearray(b"\xff\xff")
    assert ranges_mask([(5, 1), (2, 1)], 16) is None  # backwards
    assert ranges_mask([(0, 4), (3, 1)], 16) is None  # overlapping
    assert ranges_mask([(15, 2)], 16) is None  # beyond the file
    assert list(_new_bits(b"\xa0\x00", b"\xe0\x40")) == [1, 9]
    big = ranges_mask([(0, 100_000)], 1 << 20)
    assert sum(1 for _ in _new_bits(big, big)) == 0
    assert sum(1 for _ in _new_bits(bytes(len(big)), big)) == 100_000


def test_state_from_before_proofs_were_kept_is_migrated_and_not_served(tmp_path):
    d = tmp_path / "clone" / ".dat"
    d.mkdir(parents=True)
    conn = sqlite3.connect(d / "dattui.db")
    conn.executescript("""
        CREATE TABLE verified (file INTEGER NOT NULL, block INTEGER NOT NULL, leaf BLOB NOT NULL,
            PRIMARY KEY (file, block)) WITHOUT ROWID;
        INSERT INTO verified VALUES (0, 3, x'00');""")
    conn.commit()
    conn.close()
    db = CloneDB(tmp_path / "clone")
    try:
        assert db.unprovable() == {(0, 3)}
        leaf = merkle.leaf_hash(b"x")
        db.add_verified(0, 4, leaf, b"\x11" * 64)
        assert db.proof(0, 4) == (leaf, b"\x11" * 64)
        assert db.proof(0, 3) == (b"\x00", None)
        assert db.verified() == {0: {3: b"\x00", 4: leaf}}
        db.set_manifest(2, b"m", b"s", {0: 5})  # carried over to the new index, proof and all
        assert db.proof(5, 4) == (leaf, b"\x11" * 64) and db.unprovable() == {(5, 3)}
    finally:
        db.close()
