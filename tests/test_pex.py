"""Peer exchange in one process over real UDP sockets on loopback: clones that
know only the share are introduced to each other by it, punch at its word and
connect; introductions are bounded whatever peers send."""

from __future__ import annotations

import asyncio

from dattui.engine import wire
from dattui.engine.events import PathKind
from dattui.engine.traversal import pex as pexmod
from helpers import engine, tree, until, visible
from test_swarm import PacedServer, close_all, make_files

MiB = 1 << 20


def peer_with(swarm, node_id: bytes):
    return next((p for p in swarm.peers if p.remote_id == node_id), None)


async def test_two_clones_that_know_only_the_share_connect_through_it_and_trade(tmp_path):
    src = make_files(tmp_path / "data", 32, 256 * 1024)  # 8 MiB
    s = await engine(tmp_path / "hs")
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    qa = a.subscribe()
    try:
        share = s.transfer(await s.share(src))
        share.server = PacedServer(share, 2 * MiB)  # slow: the clones trade what they have
        ta = await a.clone(share.link, tmp_path / "a", peers=[f"127.0.0.1:{s.port}"])
        tb = await b.clone(share.link, tmp_path / "b", peers=[f"127.0.0.1:{s.port}"])
        ca, cb = a.transfer(ta), b.transfer(tb)
        await until(lambda: peer_with(ca, b.node.identity.public) and peer_with(cb, a.node.identity.public))
        ab, ba = peer_with(ca, b.node.identity.public), peer_with(cb, a.node.identity.public)
        assert ab.path is PathKind.PUNCHED and ba.path is PathKind.PUNCHED
        dialler = ab if a.node.identity.public < b.node.identity.public else ba
        assert dialler.source == "pex" and dialler.link.initiator
        await asyncio.wait_for(asyncio.gather(a.wait(ta), b.wait(tb)), 30)
        assert ab.blocks_down > 0 and ba.blocks_down > 0  # they traded
        assert share.server.bytes_sent < 1.6 * 32 * 256 * 1024
        assert visible(tree(tmp_path / "a")) == visible(tree(src)) == visible(tree(tmp_path / "b"))
        assert s.pex.introductions == 1 and a.pex.punches == b.pex.punches == 1
        events = []
        while not qa.empty():
            events.append(qa.get_nowait())
        steps = [e.step for e in events if type(e).__name__ == "PathAttempted"]
        assert steps[:2] == ["punch", "punched"]
        assert any(type(e).__name__ == "PeerFound" and e.source == "pex" for e in events)
    finally:
        await close_all(s, a, b)


async def test_introductions_from_a_hostile_peer_are_bounded(tmp_path):
    src = make_files(tmp_path / "data", 4, 64 * 1024)
    s = await engine(tmp_path / "hs")
    c = await engine(tmp_path / "hc")
    try:
        share = s.transfer(await s.share(src))
        t = await c.clone(share.link, tmp_path / "dst", peers=[f"127.0.0.1:{s.port}"], sync=True)
        await until(lambda: share.peers)
        (to_clone,) = share.peers
        bad = [("239.1.2.3", 4000), ("0.0.0.0", 4000), ("127.0.0.1", 0), ("255.255.255.255", 9),
               ("::1", 4000)]  # multicast, unspecified, port 0, broadcast, another family
        to_clone.send(wire.PunchIntro(b"\x01" * 16, b"\x02" * 32, tuple(bad[:4])))
        to_clone.send(wire.PunchIntro(b"\x01" * 16, b"\x03" * 32, (bad[4],)))
        # then 50 introductions to as many nodes, each with 4 loopback candidates nobody uses
        for i in range(50):
            node = bytes([0x10 + i]) * 32
            cands = tuple((f"127.0.0.{k + 2}", 9) for k in range(4))
            to_clone.send(wire.PunchIntro(bytes([i]) * 16, node, cands))
        # and introductions of itself and of the introducer: never punched
        to_clone.send(wire.PunchIntro(b"\x07" * 16, c.node.identity.public, (("127.0.0.9", 9),)))
        to_clone.send(wire.PunchIntro(b"\x08" * 16, s.node.identity.public, (("127.0.0.9", 9),)))
        await asyncio.sleep(0.5)
        attempts = list(c.pex.attempts.values())
        assert len(attempts) == pexmod.ATTEMPTS_PER_PEER  # one introducer's share of punches
        assert all(len(x.puncher.candidates) <= wire.MAX_PEX_ADDRS for x in attempts)
        assert {x.node_id[0] for x in attempts} == {0x10, 0x11, 0x12, 0x13}
        assert c.pex.punches == pexmod.ATTEMPTS_PER_PEER
        await asyncio.sleep(pexmod.PUNCH_DEADLINE + 1)  # they give up, and stop
        assert not c.pex.attempts
        probes = sum(x.puncher.probes_sent for x in attempts)
        # a low-TTL probe, the schedule, then one a second until the deadline, per candidate
        assert probes <= pexmod.ATTEMPTS_PER_PEER * 4 * (2 + 6 + pexmod.PUNCH_DEADLINE)
        assert not c.pex.router.sessions
        # requests to be introduced to nodes that are not the introducer's peers,
        # or to the asker itself: nothing is sent to anyone
        before = s.pex.introductions
        (to_share,) = c.transfer(t).peers
        for i in range(40):
            to_share.send(wire.PunchRequest(bytes([0x40 + i]) * 32))
        to_share.send(wire.PunchRequest(c.node.identity.public))
        await asyncio.sleep(0.3)
        assert s.pex.introductions == before == 0 and to_share.state.value == "ready"
    finally:
        await close_all(s, c)


def test_token_bucket_and_usable_addresses():
    b = pexmod.TokenBucket(rate=1.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(0.5) and b.take(1.0) and not b.take(1.1)
    assert pexmod.usable(("10.1.0.2", 3282), ipv6=False)
    assert pexmod.usable(("203.0.113.7", 1), ipv6=False)
    for bad in [("224.0.0.1", 9), ("0.0.0.0", 9), ("255.255.255.255", 9), ("240.0.0.1", 9),
                ("10.0.0.1", 0), ("::1", 9), ("not an ip", 9)]:
        assert not pexmod.usable(bad, ipv6=False), bad
    assert pexmod.usable(("2001:db8::1", 9), ipv6=True) and not pexmod.usable(("10.0.0.1", 9), ipv6=True)
