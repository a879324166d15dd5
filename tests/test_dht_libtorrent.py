"""Interop with an independent BEP 5 implementation: libtorrent (PyPI
`libtorrent`), run fully offline on 127.0.0.1 next to DhtService on real
UDP sockets (a UdpSocket + Demux, as in the node)."""

import asyncio
import random
import time

import pytest

lt = pytest.importorskip("libtorrent")

from dattui.engine.dht import info_hash_for  # noqa: E402
from dattui.engine.dht.service import DhtService  # noqa: E402
from dattui.engine.transport.udp import Demux, UdpSocket, bind_udp  # noqa: E402

LT_NODES = 5
LOCAL = "127.0.0.1"


class LtNode:
    def __init__(self) -> None:
        self.session = lt.session({
            "listen_interfaces": f"{LOCAL}:0",
            "enable_dht": True,
            "dht_bootstrap_nodes": "",           # its default reaches the internet
            "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
            "enable_outgoing_tcp": False, "enable_incoming_tcp": False,
            "dht_restrict_routing_ips": False,   # every node shares 127.0.0.1
            "dht_restrict_search_ips": False,
            "dht_ignore_dark_internet": False,
            "dht_block_ratelimit": 100000,
            "alert_mask": (lt.alert.category_t.dht_notification
                           | lt.alert.category_t.dht_operation_notification
                           | lt.alert.category_t.error_notification),
        })
        self.log: list = []

    @property
    def addr(self) -> tuple[str, int]:
        return LOCAL, self.session.listen_port()

    def poll(self) -> list:
        alerts = self.session.pop_alerts()
        self.log += alerts
        return alerts

    def announces(self) -> list[tuple[str, int, bytes]]:
        self.poll()
        return [(a.ip, a.port, bytes(a.info_hash.to_bytes())) for a in self.log if isinstance(a, lt.dht_announce_alert)]

    async def find(self, info_hash: bytes, want: tuple[str, int], timeout: float) -> set:
        """Poll dht_get_peers every 0.5 s until `want` shows up."""
        sha1 = lt.sha1_hash(info_hash)
        found: set = set()
        end = time.monotonic() + timeout
        while time.monotonic() < end and want not in found:
            self.session.dht_get_peers(sha1)
            await asyncio.sleep(0.5)
            for a in self.poll():
                if isinstance(a, lt.dht_get_peers_reply_alert) and a.info_hash == sha1:
                    found |= {(ip, port) for ip, port in a.peers()}
        return found


@pytest.fixture
def lt_dht():
    nodes = [LtNode() for _ in range(LT_NODES)]
    deadline = time.monotonic() + 5
    while any(n.session.listen_port() == 0 for n in nodes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for n in nodes:
        assert n.session.is_dht_running()
        for other in nodes:
            if other is not n:
                n.session.add_dht_node(other.addr)  # routers never enter its table: add nodes
    time.sleep(1.0)
    yield nodes
    for n in nodes:
        n.session.pause()
    del nodes[:]


class Dattui:
    """dattui's DHT on a real UDP socket, routed by a Demux before QUIC."""

    def __init__(self, seed: int, bootstrap) -> None:
        loop = asyncio.get_running_loop()
        self.found: dict[bytes, set] = {}
        self.demux = Demux()
        self.udp = UdpSocket(bind_udp(LOCAL, 0), self.demux, loop)
        self.dht = DhtService(
            self.udp.sendto, random.Random(seed).randbytes(20), bootstrap=bootstrap, loop=loop,
            rng=random.Random(seed), lookup_interval=1.0,
            on_peers=lambda dkey, peers: self.found.setdefault(dkey, set()).update(peers),
            # libtorrent nodes all share 127.0.0.1: lift the per-IP request cap
            node_options={"request_rate": 10000, "request_burst": 10000},
        )
        self.demux.add(lambda d: len(d) >= 20 and bool(d[0] & 0x40), lambda d, a: None)  # "QUIC"
        self.demux.add(self.dht.accepts, self.dht.datagram, first=True)
        self.dht.start()

    @property
    def addr(self) -> tuple[str, int]:
        return LOCAL, self.udp.port

    def close(self) -> None:
        self.dht.close()
        self.udp.close()
        assert self.dht.core.stats["internal_errors"] == 0, self.dht.core.stats


async def _until(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.1)
    return pred()


async def _joined(d: Dattui, lt_nodes, n: int = 3) -> None:
    assert await _until(lambda: len(d.dht.core.routing) >= n, 10), d.dht.core.stats


async def test_libtorrent_finds_what_dattui_announced(lt_dht):
    d = Dattui(1, [n.addr for n in lt_dht])
    try:
        lt_dht[0].session.add_dht_node(d.addr)
        await _joined(d, lt_dht)
        dkey = bytes(range(32))
        d.dht.announce(dkey, d.udp.port)
        found = await lt_dht[-1].find(info_hash_for(dkey), d.addr, timeout=30)
        assert d.addr in found
        # implied_port: libtorrent stored the very socket's source port
        assert any(port == d.udp.port and ih == info_hash_for(dkey)
                   for n in lt_dht for _, port, ih in n.announces())
    finally:
        d.close()


async def test_dattui_finds_what_libtorrent_announced(lt_dht):
    d = Dattui(2, [n.addr for n in lt_dht])
    try:
        await _joined(d, lt_dht)
        dkey = bytes(range(1, 33))
        ih = info_hash_for(dkey)
        lt_dht[2].session.dht_announce(lt.sha1_hash(ih), 6000, 0)
        want = (LOCAL, 6000)
        d.dht.lookup(dkey)
        assert await _until(lambda: want in d.found.get(dkey, ()), 30), d.dht.last_done
    finally:
        d.close()


async def test_libtorrent_dht_connects_two_dattui_nodes(lt_dht):
    boot = [n.addr for n in lt_dht]
    a, b = Dattui(3, boot[:2]), Dattui(4, boot[3:])
    try:
        await _joined(a, lt_dht)
        await _joined(b, lt_dht)
        dkey = bytes(range(2, 34))
        a.dht.announce(dkey, a.udp.port)
        b.dht.lookup(dkey)
        assert await _until(lambda: a.addr in b.found.get(dkey, ()), 30), b.dht.last_done
        # the address B got was stored by libtorrent nodes (A stores nothing of its own,
        # B never asks itself)
        assert a.dht.core.peer_count() == 0
        assert any(port == a.udp.port for n in lt_dht for _, port, _ in n.announces())
    finally:
        a.close()
        b.close()
