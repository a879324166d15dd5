"""LAN discovery: the sans-IO core with a fake clock, and the asyncio layer on
real sockets inside network namespaces created by the tests (multicast never
touches the root namespace's interfaces)."""

from __future__ import annotations

import itertools
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dattui.engine.discovery.lan import (
    ANNOUNCE,
    GROUP,
    GROUP_PORT,
    HEADER_SIZE,
    MAGIC,
    MAX_KEYS_PER_PACKET,
    QUERY,
    Found,
    LanDiscovery,
    encode,
)

ROOT = Path(__file__).resolve().parents[1]

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
OTHER = b"\xaa" * 8  # another node's nonce
PEER = ("192.168.1.20", 3283)


def core(seed: int = 1, port: int = 4433, interval: float = 5.0, nonce: bytes = b"\x01" * 8) -> LanDiscovery:
    return LanDiscovery(port=port, rng=random.Random(seed), interval=interval, node_nonce=nonce)


def parse(pkt: bytes) -> tuple[int, bytes, int, list[bytes]]:
    magic, kind, nonce, port, count = struct.unpack_from("!4sB8sHB", pkt)
    assert magic == MAGIC
    assert len(pkt) == HEADER_SIZE + 32 * count
    keys = [pkt[16 + 32 * i:48 + 32 * i] for i in range(count)]
    return kind, nonce, port, keys


def kinds(pkts: list[bytes]) -> list[int]:
    return [parse(p)[0] for p in pkts]


def announced(pkts: list[bytes]) -> list[bytes]:
    return [k for p in pkts for k in parse(p)[3] if parse(p)[0] == ANNOUNCE]


def query(keys: list[bytes], nonce: bytes = OTHER, port: int = 5000) -> bytes:
    return encode(QUERY, nonce, port, keys)[0]


def announce(keys: list[bytes], nonce: bytes = OTHER, port: int = 5000) -> bytes:
    return encode(ANNOUNCE, nonce, port, keys)[0]


# ---- wire format ---------------------------------------------------------------

def test_add_sends_announce_and_query_at_once():
    c = core()
    assert c.next_timer() is None
    assert c.datagrams_to_send(0.0) == []
    c.add(K1, 10.0)
    assert c.next_timer() == 10.0
    pkts = c.datagrams_to_send(10.0)
    assert kinds(pkts) == [ANNOUNCE, QUERY]
    for p in pkts:
        kind, nonce, port, keys = parse(p)
        assert nonce == b"\x01" * 8 and port == 4433 and keys == [K1]
    assert pkts[0] == MAGIC + b"\x01" + b"\x01" * 8 + struct.pack("!H", 4433) + b"\x01" + K1
    assert c.datagrams_to_send(10.0) == []
    c.add(K1, 11.0)  # already there: nothing new
    assert c.datagrams_to_send(11.0) == []


def test_more_than_16_keys_are_split():
    c = core()
    keys = [bytes([i]) * 32 for i in range(40)]
    for k in keys:
        c.add(k, 0.0)
    pkts = c.datagrams_to_send(0.0)
    assert kinds(pkts) == [ANNOUNCE] * 3 + [QUERY] * 3
    assert [len(parse(p)[3]) for p in pkts] == [16, 16, 8, 16, 16, 8]
    assert all(len(p) <= HEADER_SIZE + 32 * MAX_KEYS_PER_PACKET for p in pkts)
    assert announced(pkts) == keys
    assert [k for p in pkts[3:] for k in parse(p)[3]] == keys


def test_validation():
    with pytest.raises(ValueError):
        LanDiscovery(port=0, rng=random.Random(0))
    with pytest.raises(ValueError):
        LanDiscovery(port=70000, rng=random.Random(0))
    with pytest.raises(ValueError):
        LanDiscovery(port=1, rng=random.Random(0), node_nonce=b"short")
    with pytest.raises(ValueError):
        core().add(b"x" * 31, 0.0)
    # nonce drawn from the injected rng: deterministic
    a = LanDiscovery(port=1, rng=random.Random(7))
    b = LanDiscovery(port=1, rng=random.Random(7))
    assert a.node_nonce == b.node_nonce and len(a.node_nonce) == 8


# ---- timing --------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_periodic_announce_with_jitter_bounds(seed):
    c = core(seed=seed, interval=5.0)
    c.add(K1, 0.0)
    c.datagrams_to_send(0.0)
    sent = [0.0]
    now = 0.0
    while len(sent) < 200:
        t = c.next_timer()
        assert t is not None
        assert 4.0 - 1e-9 <= t - sent[-1] <= 6.0 + 1e-9
        # nothing is due a moment before the timer
        assert c.datagrams_to_send(t - 0.001) == []
        now = t
        pkts = c.datagrams_to_send(now)
        assert kinds(pkts) == [ANNOUNCE]  # the query went out once, with the add
        assert announced(pkts) == [K1]
        sent.append(now)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 4.0 - 1e-9 and max(gaps) <= 6.0 + 1e-9
    assert len({round(g, 6) for g in gaps}) > 50  # jitter is really drawn
    assert min(gaps) < 4.3 and max(gaps) > 5.7   # and covers the range


def test_keys_added_at_different_times_are_each_announced_on_time():
    c = core(interval=5.0)
    c.add(K1, 0.0)
    c.datagrams_to_send(0.0)
    c.add(K2, 2.0)
    assert announced(c.datagrams_to_send(2.0)) == [K2]
    last = {K1: 0.0, K2: 2.0}
    now = 2.0
    for _ in range(100):
        now = c.next_timer()
        for k in announced(c.datagrams_to_send(now)):
            assert now - last[k] <= 6.0 + 1e-9
            assert now - last[k] >= 1.0 - 1e-9
            last[k] = now
    assert min(last.values()) > 300


# ---- queries -------------------------------------------------------------------

def test_query_makes_a_prompt_announce():
    c = core()
    c.add(K1, 0.0)
    c.datagrams_to_send(0.0)
    assert c.receive(query([K1]), PEER, 3.0) == []  # a query reveals nobody
    t = c.next_timer()
    assert 3.0 <= t <= 3.1
    pkts = c.datagrams_to_send(t)
    assert kinds(pkts) == [ANNOUNCE] and announced(pkts) == [K1]
    # the periodic schedule restarts from that announce
    assert 4.0 <= c.next_timer() - t <= 6.0


def test_query_for_unknown_key_is_ignored():
    c = core()
    c.add(K1, 0.0)
    c.datagrams_to_send(0.0)
    before = c.next_timer()
    assert c.receive(query([K2]), PEER, 1.5) == []
    assert c.next_timer() == before


def test_query_rate_limit_once_per_second_per_key():
    c = core()
    c.add(K1, 0.0)
    c.datagrams_to_send(0.0)
    c.receive(query([K1]), PEER, 0.3)
    assert c.next_timer() >= 1.0  # announced at 0.0: not again before 1.0
    assert c.datagrams_to_send(0.9) == []
    assert announced(c.datagrams_to_send(1.0)) == [K1]

    # a flood of queries from many peers, every 10 ms for 30 s
    times = []
    now = 1.0
    for step in range(3000):
        now = 1.0 + step * 0.01
        c.receive(query([K1], nonce=bytes([step % 256]) * 8), (f"10.0.{step % 200}.1", 3283), now)
        while (t := c.next_timer()) is not None and t <= now:
            if announced(c.datagrams_to_send(now)):
                times.append(now)
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise([1.0] + times))
    assert 20 <= len(times) <= 31  # answered, but about once a second


def test_two_cores_find_each_other():
    """A holds the key; B adds it later: B's announce tells A, and B's query
    makes A answer, so B learns of A in well under a second."""
    a = core(seed=1, port=1111, nonce=b"A" * 8)
    b = core(seed=2, port=2222, nonce=b"B" * 8)
    a_ip, b_ip = ("10.0.0.1", 3283), ("10.0.0.2", 3283)
    a.add(K1, 0.0)
    a.datagrams_to_send(0.0)  # lost: B is not there yet
    b.add(K1, 3.0)
    found_a, found_b = [], []
    now = 3.0
    while now < 4.0:
        for p in a.datagrams_to_send(now):
            found_b += b.receive(p, a_ip, now)
            found_a += a.receive(p, a_ip, now)  # its own loopback copy
        for p in b.datagrams_to_send(now):
            found_a += a.receive(p, b_ip, now)
            found_b += b.receive(p, b_ip, now)
        now = round(now + 0.01, 2)
    assert found_a == [Found(K1, "10.0.0.2", 2222)]
    assert found_b == [Found(K1, "10.0.0.1", 1111)]


# ---- receiving -----------------------------------------------------------------

def test_announce_for_held_key_is_found():
    c = core()
    c.add(K1, 0.0)
    c.add(K2, 0.0)
    got = c.receive(announce([K2, b"\x07" * 32, K1], port=40001), ("192.168.7.9", 3283), 1.0)
    assert got == [Found(K2, "192.168.7.9", 40001), Found(K1, "192.168.7.9", 40001)]
    assert c.receive(announce([b"\x07" * 32]), PEER, 1.0) == []


def test_same_peer_reported_once_per_second():
    c = core()
    c.add(K1, 0.0)
    pkt = announce([K1], port=40001)
    assert c.receive(pkt, PEER, 1.0) == [Found(K1, PEER[0], 40001)]
    assert c.receive(pkt, PEER, 1.5) == []  # the copy from a second interface
    assert c.receive(announce([K1], port=40002), PEER, 1.5) == [Found(K1, PEER[0], 40002)]
    assert c.receive(pkt, ("192.168.1.21", 3283), 1.5) == [Found(K1, "192.168.1.21", 40001)]
    assert c.receive(pkt, PEER, 2.0) == [Found(K1, PEER[0], 40001)]
    # a key listed twice in one packet is reported once
    assert c.receive(announce([K1, K1], port=9), PEER, 9.0) == [Found(K1, PEER[0], 9)]


def test_own_packets_are_ignored():
    c = core()
    c.add(K1, 0.0)
    for p in c.datagrams_to_send(0.0):  # announce and query, looped back
        assert c.receive(p, ("10.0.0.1", 3283), 2.0) == []
    assert c.next_timer() >= 4.0  # our own query did not schedule an announce
    other = core(nonce=b"\x02" * 8)
    other.add(K1, 0.0)
    assert [f.port for p in c.datagrams_to_send(c.next_timer())
            for f in other.receive(p, ("10.0.0.1", 3283), 9.0)] == [4433]


def test_removed_key():
    c = core()
    c.add(K1, 0.0)
    c.remove(K1)
    assert c.datagrams_to_send(0.0) == []
    assert c.next_timer() is None
    assert c.receive(announce([K1]), PEER, 1.0) == []
    c.remove(K1)  # twice is fine
    c.add(K1, 2.0)
    assert kinds(c.datagrams_to_send(2.0)) == [ANNOUNCE, QUERY]
    assert c.receive(announce([K1]), PEER, 2.1) == [Found(K1, PEER[0], 5000)]


def test_network_changed_announces_and_queries_again():
    c = core()
    c.add(K1, 0.0)
    c.datagrams_to_send(0.0)
    c.network_changed(0.5)  # too soon after the last announce and query
    assert c.next_timer() >= 1.0
    assert c.datagrams_to_send(0.5) == []
    assert kinds(c.datagrams_to_send(1.0)) == [ANNOUNCE]
    c.network_changed(3.0)
    assert c.next_timer() == 3.0
    assert kinds(c.datagrams_to_send(3.0)) == [ANNOUNCE, QUERY]


def test_bad_packets_are_ignored():
    c = core()
    c.add(K1, 0.0)
    good = announce([K1])
    assert c.receive(good, PEER, 0.0) != []
    bad = [
        b"",
        b"DTL1",
        good[:-1],                                   # truncated
        good + b"\0",                                # trailing byte
        b"DTL2" + good[4:],                          # wrong magic
        good[:4] + b"\x03" + good[5:],               # unknown type
        good[:4] + b"\x00" + good[5:],
        good[:13] + b"\0\0" + good[15:],             # port 0
        good[:15] + b"\x00" + good[16:16],           # count 0, no keys
        good[:15] + b"\x00" + good[16:],             # count 0 with a key
        good[:15] + b"\x02" + good[16:],             # count says 2, one key
        good[:15] + b"\x11" + good[16:] + K1 * 16,   # count 17 with 17 keys
        good[:15] + b"\xff" + good[16:] * 255,       # count 255
        good[:16],                                   # header only
        good * 2,
    ]
    for i, pkt in enumerate(bad):
        assert c.receive(pkt, PEER, 10.0 + i * 2) == [], i
    before = c.next_timer()
    assert c.receive(good[:4] + bytes([QUERY]) + good[5:13] + b"\0\0" + good[15:], PEER, 40.0) == []
    assert c.next_timer() == before  # a port-0 query schedules nothing
    # odd sources and payload types do not raise either
    for src in (None, (), ("",), (1234, 5), "x"):
        c.receive(good, src, 50.0)
    for data in (None, 123, "DTL1", bytearray(good), memoryview(good)):
        c.receive(data, PEER, 60.0)


def test_fuzz_never_raises():
    rng = random.Random(1234)
    c = core()
    c.add(K1, 0.0)
    c.add(K2, 0.0)
    c.datagrams_to_send(0.0)
    valid = [announce([K1]), announce([K2, K1] + [b"z" * 32] * 14), query([K1]), query([K2] * 16)]
    now = 1.0
    for i in range(20000):
        now += 0.001
        if i % 3 == 0:
            data = rng.randbytes(rng.choice([0, 1, 15, 16, 47, 48, 80, rng.randrange(0, 700)]))
            if i % 2:
                data = MAGIC + data[4:]
        else:
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(4)
                if op == 0 and data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                elif op == 1:
                    del data[rng.randrange(len(data) + 1):]
                elif op == 2:
                    data += rng.randbytes(rng.randrange(1, 64))
                elif len(data) > 15:
                    data[15] = rng.choice([0, 1, 2, 16, 17, 255])
            data = bytes(data)
        got = c.receive(data, (f"10.1.{rng.randrange(256)}.{rng.randrange(256)}", rng.randrange(65536)), now)
        assert isinstance(got, list)
        for f in got:
            assert f.dkey in (K1, K2) and 1 <= f.port <= 65535
        # the core keeps working and its timers stay sane
        t = c.next_timer()
        assert t is not None and t <= now + 6.0
        if t <= now:
            for p in c.datagrams_to_send(now):
                parse(p)


def test_state_is_bounded():
    c = core()
    c.add(K1, 0.0)
    c.datagrams_to_send(0.0)
    for i in range(20000):
        # many distinct senders, all within one second
        c.receive(announce([K1], port=1 + i % 65535), (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 1), 1.0 + i * 1e-5)
        c.receive(query([bytes([i & 255, i >> 8]) * 16]), PEER, 1.0)
    assert len(c._recent) <= 1024
    assert c.keys == [K1]
    assert len(c._to_query) == 0


# ---- real sockets in network namespaces ---------------------------------------

NODE_SCRIPT = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
from dattui.engine.discovery.lan import LanAnnouncer

cfg = json.loads(sys.argv[2])

def emit(obj):
    print(json.dumps(obj), flush=True)

async def main():
    # Runs until its stdin is closed (the test has what it waited for) or
    # until cfg["timeout"]: a node that found its peer keeps answering it.
    loop = asyncio.get_running_loop()
    dkey = bytes.fromhex(cfg["dkey"])
    found = {}
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.readline() or stop.set())
    nodes = []
    for i, port in enumerate(cfg["ports"]):
        def on_found(f, i=i):
            if i not in found:
                found[i] = {"node": i, "dkey": f.dkey.hex(), "host": f.host, "port": f.port,
                            "elapsed": time.monotonic() - t0}
                emit(found[i])
        nodes.append(LanAnnouncer(port=port, on_found=on_found, group=cfg["group"],
                                  group_port=cfg["group_port"], interval=cfg["interval"],
                                  interfaces=cfg["interfaces"]))
    for n in nodes:
        await n.start()
    t0 = time.monotonic()
    for n in nodes:
        n.add(dkey)
    emit({"started": True, "interfaces": [n.interfaces for n in nodes]})
    try:
        await asyncio.wait_for(stop.wait(), cfg["timeout"])
    except asyncio.TimeoutError:
        pass
    for n in nodes:
        n.close()
        n.close()
    emit({"done": True, "found": len(found)})

asyncio.run(main())
"""

_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=20)


class Netns:
    """Two fresh namespaces joined by a veth pair; everything is removed after."""

    def __init__(self) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.ns = (f"dtl-lan-{pid}-{n}-a", f"dtl-lan-{pid}-{n}-b")
        self.veth = (f"la{pid}x{n}", f"lb{pid}x{n}")  # < 16 characters
        self.addr = ("10.77.0.1", "10.77.0.2")
        self.procs: list[subprocess.Popen] = []
        self.created: list[str] = []

    def setup(self, *, address_a: bool = True) -> None:
        for ns in self.ns:
            _ip("netns", "add", ns)
            self.created.append(ns)
        # Made inside namespace a, peer moved straight into b: the pair never
        # exists in the root namespace.
        self.exec(0, "ip", "link", "add", self.veth[0], "type", "veth",
                  "peer", "name", self.veth[1], "netns", self.ns[1])
        for i in (0, 1):
            self.exec(i, "ip", "link", "set", "lo", "up")
            if i == 1 or address_a:
                self.exec(i, "ip", "addr", "add", f"{self.addr[i]}/24", "dev", self.veth[i])
            self.exec(i, "ip", "link", "set", self.veth[i], "up")

    def exec(self, i: int, *cmd: str) -> subprocess.CompletedProcess:
        return _ip("netns", "exec", self.ns[i], *cmd)

    def start_node(self, i: int, dkey: bytes, ports: list[int], *, interfaces: list[str] | None,
                   group_port: int = GROUP_PORT, interval: float = 5.0, timeout: float = 8.0) -> subprocess.Popen:
        cfg = {"dkey": dkey.hex(), "ports": ports, "group": GROUP, "group_port": group_port,
               "interval": interval, "interfaces": interfaces, "timeout": timeout}
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[i], sys.executable, "-c", NODE_SCRIPT, str(ROOT), json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        p.lines = []  # everything read from its stdout so far
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.communicate(timeout=5)
            except Exception:
                pass
        for ns in self.created:
            _ip("netns", "del", ns, check=False)


@pytest.fixture
def netns(request):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    assert shutil.which("ip"), "iproute2 is needed for the netns tests"
    env = Netns()
    request.addfinalizer(env.cleanup)
    return env


def _read(procs: list[subprocess.Popen], until, timeout: float) -> None:
    """Read the nodes' JSON lines into p.lines until until() or timeout."""
    deadline = time.monotonic() + timeout
    while not until():
        left = deadline - time.monotonic()
        open_ = [p.stdout for p in procs if not p.stdout.closed]
        if left <= 0 or not open_:
            return
        ready, _, _ = select.select(open_, [], [], left)
        for f in ready:
            p = next(p for p in procs if p.stdout is f)
            line = f.readline()
            if not line:
                f.close()
                continue
            p.lines.append(json.loads(line))


def _started(p: subprocess.Popen, timeout: float = 10.0) -> dict:
    _read([p], lambda: any("started" in x for x in p.lines), timeout)
    got = [x for x in p.lines if "started" in x]
    assert got, p.stderr.read() if p.poll() is not None else "node did not start"
    return got[0]


def _found(p: subprocess.Popen) -> list[dict]:
    return [x for x in p.lines if "node" in x]


def _finish(procs: list[subprocess.Popen], expect: list[int], timeout: float = 10.0) -> list[list[dict]]:
    """Wait until procs[i] reported expect[i] peers (or timeout), stop all,
    and return what each found."""
    _read(procs, lambda: all(len(_found(p)) >= n for p, n in zip(procs, expect)), timeout)
    for p in procs:
        p.stdin.close()  # stop
    for p in procs:
        p.wait(timeout=10)
        _read([p], lambda: False, 5)
        assert p.returncode == 0, p.stderr.read()
        assert p.lines and p.lines[-1].get("done"), p.lines
    return [_found(p) for p in procs]


@pytest.mark.netns
def test_two_namespaces_find_each_other(netns):
    netns.setup()
    dkey = os.urandom(32)
    pa = netns.start_node(0, dkey, [40001], interfaces=[netns.veth[0]])
    pb = netns.start_node(1, dkey, [40002], interfaces=[netns.veth[1]])
    ra, rb = _finish([pa, pb], [1, 1])
    assert len(ra) == 1 and len(rb) == 1, (ra, rb)
    assert (ra[0]["host"], ra[0]["port"], ra[0]["dkey"]) == ("10.77.0.2", 40002, dkey.hex())
    assert (rb[0]["host"], rb[0]["port"], rb[0]["dkey"]) == ("10.77.0.1", 40001, dkey.hex())
    assert ra[0]["elapsed"] < 5.0 and rb[0]["elapsed"] < 5.0


@pytest.mark.netns
def test_two_nodes_on_one_host_find_each_other(netns):
    """Multicast loopback: two announcers in one namespace (one process here,
    but each with its own socket on the shared group port)."""
    netns.setup()
    dkey = os.urandom(32)
    p = netns.start_node(0, dkey, [41001, 41002], interfaces=[netns.veth[0]])
    (res,) = _finish([p], [2])
    got = {r["node"]: r for r in res}
    assert got[0]["host"] == got[1]["host"] == "10.77.0.1"
    assert got[0]["port"] == 41002 and got[1]["port"] == 41001
    assert max(r["elapsed"] for r in got.values()) < 5.0


@pytest.mark.netns
def test_default_interfaces_and_unrelated_keys(netns):
    """Without an interface list every usable interface is used (only the
    veth here; lo is not); a node with another key finds nothing."""
    netns.setup()
    dkey = os.urandom(32)
    pa = netns.start_node(0, dkey, [40001], interfaces=None)
    pb = netns.start_node(1, dkey, [40002], interfaces=None)
    pc = netns.start_node(1, os.urandom(32), [40003], interfaces=None)
    assert _started(pa)["interfaces"] == [[netns.veth[0]]]
    assert _started(pc)["interfaces"] == [[netns.veth[1]]]
    ra, rb, rc = _finish([pa, pb, pc], [1, 1, 0])
    assert [(r["host"], r["port"]) for r in ra] == [("10.77.0.2", 40002)]
    assert [(r["host"], r["port"]) for r in rb] == [("10.77.0.1", 40001)]
    assert rc == []


@pytest.mark.netns
def test_interface_that_appears_later_is_used(netns):
    """A node that starts with no usable interface finds nothing, without
    error; once its interface gets an address it is picked up within an
    interval and the peers meet."""
    netns.setup(address_a=False)
    dkey = os.urandom(32)
    pa = netns.start_node(0, dkey, [40001], interfaces=None, interval=1.0, timeout=20.0)
    pb = netns.start_node(1, dkey, [40002], interfaces=None, interval=1.0, timeout=20.0)
    assert _started(pa)["interfaces"] == [[]]
    assert _started(pb)["interfaces"] == [[netns.veth[1]]]
    time.sleep(1.5)
    assert pa.poll() is None and pb.poll() is None
    assert _found(pa) == [] and _found(pb) == []
    netns.exec(0, "ip", "addr", "add", f"{netns.addr[0]}/24", "dev", netns.veth[0])
    t_addr = time.monotonic()
    ra, rb = _finish([pa, pb], [1, 1])
    assert [(r["host"], r["port"]) for r in ra] == [("10.77.0.2", 40002)]
    assert [(r["host"], r["port"]) for r in rb] == [("10.77.0.1", 40001)]
    assert ra[0]["elapsed"] > 1.5 and rb[0]["elapsed"] > 1.5  # not before the address
    assert time.monotonic() - t_addr < 5.0


@pytest.mark.netns
def test_no_usable_interface_finds_nothing(netns):
    netns.setup()
    p = netns.start_node(0, os.urandom(32), [40001], interfaces=["lo", "nonexistent0"], timeout=1.5)
    assert _started(p)["interfaces"] == [[]]
    (res,) = _finish([p], [1], timeout=3.0)  # runs out its 1.5 s, finds nobody
    assert res == []
