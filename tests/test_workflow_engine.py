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
