"""The researcher's workflow inside the engine: two engines in one process on loopback."""

from __future__ import annotations

import asyncio

from dattui.engine import events as ev
from helpers import engine, make_tree, until


def _live_links(e) -> int:
    return len({id(l) for l in e.node.endpoint._links.values() if not l.closed})


def _drain(q) -> list:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


async def test_peers_that_find_each_other_keep_one_connection_and_say_nothing_of_the_other(tmp_path):
    src = make_tree(tmp_path / "src")
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    qa, qb = a.subscribe(), b.subscribe()
    try:
        tid = await a.share(src)
        share = a.transfer(tid)
        ctid = await b.clone(share.link, tmp_path / "dst", sync=True)
        clone = b.transfer(ctid)
        # as on a LAN: each finds the other at once and dials
        a.node.peer_found(share.dkey, ("127.0.0.1", b.port), "lan")
        b.node.peer_found(share.dkey, ("127.0.0.1", a.port), "lan")
        await asyncio.wait_for(b.wait(ctid), 20)
        await until(lambda: _live_links(a) == _live_links(b) == 1
                    and len(share.peers) == len(clone.peers) == 1)
        # the other side's LAN announces keep coming (every 5 s): no new connection
        for _ in range(3):
            a.node.peer_found(share.dkey, ("127.0.0.1", b.port), "lan")
            b.node.peer_found(share.dkey, ("127.0.0.1", a.port), "lan")
            assert _live_links(a) == _live_links(b) == 1
        seen_a, seen_b = _drain(qa), _drain(qb)
        for seen in (seen_a, seen_b):
            assert [type(e) for e in seen if isinstance(e, ev.PeerConnected)] == [ev.PeerConnected]
            assert not [e for e in seen if isinstance(e, ev.PeerDisconnected)]
    finally:
        await b.close()
        await a.close()


async def test_versions_are_recorded_on_both_sides_for_dattui_log(tmp_path):
    import json
    import subprocess

    from cli import cmd, env
    from dattui.engine.versionlog import read

    src = make_tree(tmp_path / "src")
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    try:
        tid = await a.share(src)
        share = a.transfer(tid)
        dst = tmp_path / "dst"
        ctid = await b.clone(share.link, dst, peers=[f"127.0.0.1:{a.port}"], sync=True)
        clone = b.transfer(ctid)
        await asyncio.wait_for(b.wait(ctid), 20)
        (src / "added.txt").write_text("new")
        (src / "big.bin").write_bytes(b"changed")
        assert await share.publish()
        await until(lambda: clone.version == 2 and clone.completed)
    finally:
        await b.close()
        await a.close()
    for folder in (src, dst):
        v1, v2 = read(folder)
        assert (v1.version, v2.version) == (1, 2)
        assert v1.added == v1.files == 5 and v1.changed == v1.removed == 0
        assert (v2.added, v2.changed, v2.removed, v2.files) == (1, 1, 0, 6)
        assert v2.bytes_changed == len("new") + len("changed") and v2.seen_at >= v1.seen_at
    p = subprocess.run(cmd("log", dst, "--json"), capture_output=True, text=True,
                       env=env(tmp_path / "hl"))
    assert p.returncode == 0, p.stderr
    assert [json.loads(l)["version"] for l in p.stdout.splitlines()] == [1, 2]
    p = subprocess.run(cmd("log", share.link), cwd=tmp_path, capture_output=True, text=True,
                       env=env(tmp_path / "hl"))
    assert p.returncode == 0 and p.stdout.splitlines()[1].startswith("v2 ")
    assert "+1 ~1 -0 files" in p.stdout.splitlines()[1]


async def test_a_peer_that_said_it_reconnects_and_does_not_is_reported_gone(tmp_path, monkeypatch):
    from dattui.engine import node as node_mod
    monkeypatch.setattr(node_mod, "RECONNECT_GRACE", 0.2)
    src = make_tree(tmp_path / "src")
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    qa = a.subscribe()
    try:
        tid = await a.share(src)
        share = a.transfer(tid)
        ctid = await b.clone(share.link, tmp_path / "dst", peers=[f"127.0.0.1:{a.port}"])
        await asyncio.wait_for(b.wait(ctid), 20)
        await b.stop(ctid, reconnecting=True)  # says it comes back, then never does
        await until(lambda: any(isinstance(e, ev.PeerDisconnected) for e in list(qa._queue)))
        gone = [e for e in _drain(qa) if isinstance(e, ev.PeerDisconnected)]
        assert len(gone) == 1 and "whole version" in gone[0].reason
    finally:
        await b.close()
        await a.close()
