"""The sans-IO DHT core with a fake clock: many nodes on an in-memory
network, tokens, the routing table, rate limits, hostile input. The last
tests run DhtService on real loopback sockets (no libtorrent needed)."""

import asyncio
import hashlib
import random
import sqlite3

import pytest

from dattui.engine.dht import info_hash_for
from dattui.engine.dht import krpc
from dattui.engine.dht.bencode import decode, encode
from dattui.engine.dht.node import (
    ALPHA, MAX_HASHES, MAX_PEERS_PER_HASH, MAX_PEERS_TOTAL, MAX_TXNS, MAX_VERIFY, PEER_TTL,
    QUERY_BURST, REQUEST_BURST, TOKEN_ROTATE, DhtNode, LookupDone, PeersFound,
)
from dattui.engine.dht.persist import load_nodes, save_nodes
from dattui.engine.dht.routing import ID_SPACE, K, NodeStatus, RoutingTable
from dattui.engine.dht.service import DhtService
from dattui.engine.transport.udp import Demux, UdpSocket, bind_udp

T0 = 1000.0


class FakeNet:
    """Nodes at distinct 10.x addresses; datagrams delivered instantly, in
    order; time jumps to the next timer when nothing is in flight."""

    def __init__(self, n: int, seed: int = 1, drop: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.drop = drop
        self.now = T0
        self.nodes: dict[tuple[str, int], DhtNode] = {}
        for i in range(n):
            self.add((f"10.0.{i // 200}.{i % 200 + 1}", 6881), seed * 1000 + i)
        self.delivered = 0

    def add(self, addr, seed):
        self.nodes[addr] = DhtNode(random.Random(seed).randbytes(20), rng=random.Random(seed), now=self.now)
        self.events = getattr(self, "events", {})
        self.events[addr] = []
        return self.nodes[addr]

    def flush(self) -> bool:
        moved = False
        for src, node in list(self.nodes.items()):
            for data, dst in node.datagrams_to_send(self.now):
                moved = True
                peer = self.nodes.get(dst)
                if peer is not None and self.rng.random() >= self.drop:
                    self.delivered += 1
                    self.events[dst] += peer.receive(data, src, self.now)
        return moved

    def run(self, until=lambda: False, limit: float = 60.0) -> bool:
        end = self.now + limit
        while True:
            while self.flush():
                if until():
                    return True
            if until():
                return True
            t = min(n.next_timer() for n in self.nodes.values())
            assert t >= self.now - 1e-9, "a timer in the past that handle_timer does not clear"
            if t > end:
                self.now = end
                return until()
            self.now = max(self.now, t)
            for addr, node in self.nodes.items():
                if node.next_timer() <= self.now:
                    self.events[addr] += node.handle_timer(self.now)

    def build(self) -> None:
        """Nodes join one by one through a random earlier node, then settle."""
        addrs = list(self.nodes)
        for i, addr in enumerate(addrs[1:], 1):
            self.nodes[addr].bootstrap([addrs[self.rng.randrange(i)]], now=self.now)
            self.run(limit=0.5)
        self.run(limit=90)

    def done(self, addr, lid):
        return any(isinstance(e, LookupDone) and e.lookup_id == lid for e in self.events[addr])

    def found(self, addr, lid):
        return {p for e in self.events[addr] if isinstance(e, PeersFound) and e.lookup_id == lid for p in e.peers}


def _stats_ok(nodes):
    for n in nodes:
        assert n.stats["internal_errors"] == 0, n.stats


# ---- end to end on an in-memory network ---------------------------------------------

def test_info_hash_for_is_derived_from_the_discovery_key():
    dkey = bytes(range(32))
    want = hashlib.blake2b(b"dattui-dht-v1" + dkey, digest_size=32).digest()[:20]
    assert info_hash_for(dkey) == want
    assert info_hash_for(dkey).hex() == want.hex() and len(want) == 20
    with pytest.raises(ValueError):
        info_hash_for(b"short")


def test_fifty_nodes_lookup_finds_announced_peers():
    net = FakeNet(50, seed=3)
    net.build()
    sizes = [len(n.routing) for n in net.nodes.values()]
    assert min(sizes) >= K, sizes
    addrs = list(net.nodes)
    for trial in range(6):
        ih = net.rng.randbytes(20)
        announcer, seeker = net.rng.sample(addrs, 2)
        port = 7000 + trial
        lid = net.nodes[announcer].announce(ih, port, implied_port=False, now=net.now)
        assert net.run(lambda: net.done(announcer, lid), limit=30)
        done = [e for e in net.events[announcer] if isinstance(e, LookupDone) and e.lookup_id == lid][0]
        assert done.announced >= K - 1 and done.responded >= K
        holders = [a for a, n in net.nodes.items() if n.peer_count()]
        assert len(holders) >= K - 1
        lid2 = net.nodes[seeker].lookup(ih, now=net.now)
        assert net.run(lambda: net.done(seeker, lid2), limit=30)
        assert (announcer[0], port) in net.found(seeker, lid2)
        for n in net.nodes.values():
            n._peers.clear()  # next trial starts from an empty store
            n._peer_total = 0
    _stats_ok(net.nodes.values())


def test_implied_port_stores_the_source_port_and_lookup_survives_loss():
    net = FakeNet(30, seed=4)
    net.build()
    net.drop = 0.15  # every datagram: 15 % lost
    addrs = list(net.nodes)
    ih = b"\x42" * 20
    lid = net.nodes[addrs[3]].announce(ih, 0, now=net.now)  # implied_port, port 0
    assert net.run(lambda: net.done(addrs[3], lid), limit=40)
    found = set()
    for attempt in range(3):  # a lossy lookup may need a second try
        lid2 = net.nodes[addrs[20]].lookup(ih, now=net.now)
        assert net.run(lambda: net.done(addrs[20], lid2), limit=40)
        found |= net.found(addrs[20], lid2)
        if found:
            break
    assert found == {addrs[3]}  # the source address and port, nothing else
    _stats_ok(net.nodes.values())


def test_lookup_with_no_nodes_ends_at_once():
    node = DhtNode(b"\x01" * 20, rng=random.Random(1), now=T0)
    lid = node.lookup(b"\x02" * 20)
    assert node.next_timer() == T0
    events = node.handle_timer(T0)
    assert events == [LookupDone(b"\x02" * 20, lid, 0, 0, 0)]
    assert node.datagrams_to_send(T0) == []


def test_api_argument_checks_cancel_and_lookup_cap():
    from dattui.engine.dht.node import MAX_LOOKUPS, TooManyLookups

    node = DhtNode(b"\x01" * 20, rng=random.Random(1), now=T0)
    node.bootstrap([("10.0.0.2", 6881)], now=T0)
    with pytest.raises(ValueError):
        node.lookup(b"short")
    with pytest.raises(ValueError):
        node.announce(b"\x02" * 20, 0, implied_port=False)
    with pytest.raises(ValueError):
        node.announce(b"\x02" * 20, 70000)
    with pytest.raises(ValueError):
        DhtNode(b"short", rng=random.Random(1), now=T0)
    ids = [node.lookup(bytes([i]) * 20) for i in range(MAX_LOOKUPS)]
    with pytest.raises(TooManyLookups):
        node.lookup(b"\xff" * 20)
    for lid in ids:
        node.cancel(lid)
    t = T0
    for _ in range(10):  # cancelled lookups report nothing, even when their queries time out
        t += 2.5
        node.datagrams_to_send(t)
        assert node.handle_timer(t) == []


def test_export_import_and_sqlite_persistence():
    net = FakeNet(20, seed=5)
    net.build()
    a = next(iter(net.nodes))
    rows = net.nodes[a].export()
    assert len(rows) >= K and all(len(r[0]) == 20 for r in rows)
    conn = sqlite3.connect(":memory:")
    assert save_nodes(conn, rows + [(b"bad", "1.2.3.4", 1), (b"x" * 20, "nope", 5)]) == len(rows)
    loaded = load_nodes(conn)
    assert sorted(loaded) == sorted(rows)
    save_nodes(conn, rows[:2])
    assert len(load_nodes(conn)) == 2
    # a restarted node (same id, empty table) rejoins from the saved nodes alone
    old = net.nodes.pop(a)
    fresh = DhtNode(old.node_id, rng=random.Random(99), now=net.now)
    net.nodes[a] = fresh
    fresh.import_(loaded)
    net.run(limit=10)
    assert len(fresh.routing) >= K
    _stats_ok(net.nodes.values())


def test_a_table_gone_bad_bootstraps_again():
    net = FakeNet(16, seed=6)
    net.build()
    x_addr = list(net.nodes)[-1]
    x = net.nodes[x_addr]
    router = x._routers[0]
    assert x.routing.live_count() >= K
    for addr in list(net.nodes):  # everyone but X and its router goes silent
        if addr not in (x_addr, router):
            del net.nodes[addr]
    asked = []
    r_node = net.nodes[router]
    real_receive = r_node.receive

    def spy(data, src, now):
        msg = decode(data)
        if src == x_addr and msg.get(b"q") == b"find_node":
            asked.append(msg[b"a"][b"target"])
        return real_receive(data, src, now)

    r_node.receive = spy
    for i in range(3):
        lid = x.lookup(bytes([i]) * 20, now=net.now)
        assert net.run(lambda: net.done(x_addr, lid), limit=40)
    assert x.routing.live_count() < K
    net.run(limit=120)
    assert x.node_id in asked            # a find_node for its own id went to the router
    _stats_ok([x, r_node])


# ---- serving: tokens, announce_peer, the peer store ------------------------------------

class Client:
    """Hand-made KRPC queries to one node, from any address."""

    def __init__(self, node: DhtNode, now: float = T0):
        self.node = node
        self.now = now
        self.n = 0
        self.sent = []

    def ask(self, method: bytes, args: dict, src=("10.9.9.9", 4000), node_id=b"C" * 20, raw=None):
        self.n += 1
        tid = b"q%d" % self.n
        a = dict(args)
        a[b"id"] = node_id
        data = raw if raw is not None else encode({b"t": tid, b"y": b"q", b"q": method, b"a": a})
        self.node.receive(data, src, self.now)
        answers = []
        for d, dst in self.node.datagrams_to_send(self.now):
            if dst == src and decode(d).get(b"t") == tid:
                answers.append(decode(d))
            else:
                self.sent.append((d, dst))  # the node's own queries
        return answers[0] if answers else None

    def tick(self, dt: float):
        self.now += dt
        self.node.handle_timer(self.now)


def test_token_rotation():
    node = DhtNode(b"\x05" * 20, rng=random.Random(2), now=T0)
    c = Client(node)
    ih = b"\x07" * 20
    r = c.ask(b"get_peers", {b"info_hash": ih})
    token = r[b"r"][b"token"]
    assert len(token) == 8 and r[b"ip"] == krpc.pack_peer(("10.9.9.9", 4000))

    def announce(tok, src=("10.9.9.9", 4000)):
        return c.ask(b"announce_peer", {b"info_hash": ih, b"port": 5555, b"token": tok}, src=src)

    assert announce(token)[b"y"] == b"r"
    # a token is bound to the IP address
    bad = announce(token, src=("10.9.9.8", 4000))
    assert bad[b"y"] == b"e" and bad[b"e"][0] == 203
    c.tick(TOKEN_ROTATE + 1)             # rotated once: the old token still works
    assert announce(token)[b"y"] == b"r"
    c.tick(TOKEN_ROTATE)                 # rotated twice: it does not
    assert announce(token)[b"y"] == b"e"
    fresh = c.ask(b"get_peers", {b"info_hash": ih})[b"r"][b"token"]
    assert fresh != token and announce(fresh)[b"y"] == b"r"
    # values come back, with the announced (not the source) port
    r = c.ask(b"get_peers", {b"info_hash": ih})
    assert [krpc.unpack_peer(v) for v in r[b"r"][b"values"]] == [("10.9.9.9", 5555)]
    assert node.stats["bad_tokens"] == 2
    # a long sleep rotates at most twice (no loop over missed periods)
    c.tick(1e9)
    assert node.next_timer() > c.now


def test_peer_store_expires_and_is_bounded():
    node = DhtNode(b"\x05" * 20, rng=random.Random(2), now=T0,
                   request_rate=1e9, request_burst=1e9, total_request_rate=1e9, total_request_burst=1e9)
    c = Client(node)
    ih = b"\x08" * 20

    def store(ih, ip, port=6000):
        tok = c.ask(b"get_peers", {b"info_hash": ih}, src=(ip, 1))[b"r"][b"token"]
        r = c.ask(b"announce_peer", {b"info_hash": ih, b"port": port, b"token": tok, b"implied_port": 0}, src=(ip, 1))
        assert r[b"y"] == b"r"

    for i in range(MAX_PEERS_PER_HASH + 50):
        store(ih, f"10.1.{i // 250}.{i % 250 + 1}")
    assert node.peer_count() == MAX_PEERS_PER_HASH
    r = c.ask(b"get_peers", {b"info_hash": ih})[b"r"]
    assert 0 < len(r[b"values"]) <= 50 and len(encode(r)) < 1400
    # the oldest entries went first
    assert ("10.1.0.1", 6000) not in node._peers[ih]
    c.tick(PEER_TTL + 61)
    assert node.peer_count() == 0 and node.table_sizes()["hashes"] == 0
    assert b"values" not in c.ask(b"get_peers", {b"info_hash": ih})[b"r"]
    # many info-hashes: at most MAX_HASHES, at most MAX_PEERS_TOTAL peers
    for i in range(MAX_HASHES + 20):
        store(i.to_bytes(20, "big"), "10.2.0.1")
    assert node.table_sizes()["hashes"] == MAX_HASHES
    assert node.peer_count() <= MAX_PEERS_TOTAL


def test_queries_answered_and_bad_arguments_get_errors():
    node = DhtNode(b"\x05" * 20, rng=random.Random(2), now=T0)
    c = Client(node)
    assert c.ask(b"ping", {})[b"r"][b"id"] == b"\x05" * 20
    assert c.ask(b"find_node", {b"target": b"x" * 20})[b"r"][b"nodes"] == b""
    assert c.ask(b"find_node", {b"target": b"short"})[b"e"][0] == 203
    assert c.ask(b"get_peers", {b"info_hash": 5})[b"e"][0] == 203
    assert c.ask(b"announce_peer", {b"info_hash": b"x" * 20, b"port": 80})[b"e"][0] == 203
    assert c.ask(b"frobnicate", {})[b"e"][0] == 204
    assert c.ask(b"ping", {}, node_id=b"short") is None          # no valid id: no answer
    # answers carry our version and the BEP 42 'ip' of the asker
    r = c.ask(b"ping", {}, src=("192.168.1.7", 51413))
    assert r[b"v"] == krpc.VERSION and krpc.unpack_peer(r[b"ip"]) == ("192.168.1.7", 51413)


# ---- queries out: transactions, timeouts, rate limits -----------------------------------

def _responder_reply(data, node_id, extra=None):
    msg = decode(data)
    r = {b"id": node_id}
    r.update(extra or {})
    return encode({b"t": msg[b"t"], b"y": b"r", b"r": r})


def test_unknown_tids_and_wrong_addresses_are_ignored():
    node = DhtNode(b"\x01" * 20, rng=random.Random(3), now=T0)
    node.bootstrap([("10.0.0.2", 6881)], now=T0)
    [(data, dst)] = node.datagrams_to_send(T0)
    assert dst == ("10.0.0.2", 6881) and decode(data)[b"q"] == b"find_node"
    reply = _responder_reply(data, b"\x02" * 20)
    node.receive(reply, ("10.0.0.3", 6881), T0 + 0.1)       # right tid, wrong address
    assert node.stats["unexpected"] == 1 and len(node.routing) == 0
    node.receive(reply.replace(decode(data)[b"t"], b"zzzz"), dst, T0 + 0.1)  # unknown tid
    assert node.stats["unexpected"] == 2 and len(node.routing) == 0
    node.receive(reply, dst, T0 + 0.2)                       # the real answer
    assert len(node.routing) == 1
    node.receive(reply, dst, T0 + 0.3)                       # a replay
    assert node.stats["unexpected"] == 3


def test_query_timeouts_make_nodes_bad_and_lookups_end():
    node = DhtNode(b"\x01" * 20, rng=random.Random(3), now=T0)
    node.bootstrap([("10.0.0.2", 6881)], now=T0)
    [(data, dst)] = node.datagrams_to_send(T0)
    nodes = krpc.pack_nodes([(bytes([i]) * 20, (f"10.0.1.{i}", 6881)) for i in range(2, 12)])
    node.receive(_responder_reply(data, b"\x02" * 20, {b"nodes": nodes}), dst, T0 + 0.1)
    sent = node.datagrams_to_send(T0 + 0.1)
    assert len(sent) == ALPHA                                # alpha queries in flight
    t = T0 + 0.1
    events = []
    for _ in range(20):                                     # nobody else answers
        t = node.next_timer()
        events += node.handle_timer(t)
        node.datagrams_to_send(t)
        if not node._lookups:
            break
    assert not node._lookups and node.stats["timeouts"] >= 8
    assert node.table_sizes()["txns"] == 0 or all(x.deadline for x in node._txns.values())
    lid = node.lookup(b"\x03" * 20, now=t)                   # the one good node is asked, then it ends
    [(q, dst2)] = node.datagrams_to_send(t)
    assert dst2 == ("10.0.0.2", 6881)
    for _ in range(5):
        t += 2.5
        events = node.handle_timer(t)
        if any(isinstance(e, LookupDone) for e in events):
            break
    assert events == [LookupDone(b"\x03" * 20, lid, 0, 0, 0)]
    assert node.routing.get(b"\x02" * 20).failures == 1
    _stats_ok([node])


def test_outgoing_query_rate_is_capped():
    node = DhtNode(b"\x01" * 20, rng=random.Random(3), now=T0)
    node.bootstrap([(f"10.0.0.{i}", 6881) for i in range(2, 32)], now=T0)
    for i in range(40):
        node.lookup(random.Random(i).randbytes(20), now=T0)
    first = node.datagrams_to_send(T0)
    assert len(first) == QUERY_BURST
    assert node.datagrams_to_send(T0) == []
    assert node.next_timer() == pytest.approx(T0 + 1 / 20)
    assert len(node.datagrams_to_send(T0 + 1.0)) == 20      # 20 per second after the burst
    assert len(node._txns) <= MAX_TXNS


def test_incoming_requests_are_capped_per_ip():
    node = DhtNode(b"\x05" * 20, rng=random.Random(2), now=T0)
    c = Client(node)
    answered = sum(c.ask(b"ping", {}, src=("10.3.3.3", 1000 + i)) is not None for i in range(100))
    assert answered == REQUEST_BURST
    assert node.stats["rate_limited"] == 100 - REQUEST_BURST
    assert c.ask(b"ping", {}, src=("10.3.3.4", 1000)) is not None   # another IP is served
    c.now += 1.0
    answered = sum(c.ask(b"ping", {}, src=("10.3.3.3", 1000)) is not None for i in range(30))
    assert answered == 10                                           # 10 per second refill


def test_query_from_unknown_node_is_verified_before_it_enters_the_table():
    node = DhtNode(b"\x05" * 20, rng=random.Random(2), now=T0)
    c = Client(node)
    src = ("10.4.4.4", 7000)
    c.ask(b"ping", {}, src=src, node_id=b"\x09" * 20)
    assert len(node.routing) == 0                       # a query alone inserts nothing
    [(ping, dst)] = c.sent                              # ...but we ping back
    assert dst == src and decode(ping)[b"q"] == b"ping"
    node.receive(_responder_reply(ping, b"\x09" * 20), src, T0 + 0.1)
    assert b"\x09" * 20 in node.routing


# ---- the routing table -------------------------------------------------------------------

def test_routing_table_splits_only_the_bucket_with_our_id():
    rng = random.Random(7)
    own = rng.randbytes(20)
    rt = RoutingTable(own, T0)
    own_int = int.from_bytes(own, "big")
    for i in range(5000):
        rt.heard_response(rng.randbytes(20), (f"10.{i // 60000}.{i // 250 % 240}.{i % 250 + 1}", 6881), T0)
    buckets = rt.buckets
    assert 1 < len(buckets) <= 161
    assert buckets[0].lo == 0 and buckets[-1].hi == ID_SPACE
    for a, b in zip(buckets, buckets[1:]):
        assert a.hi == b.lo                              # a partition of the id space
    for b in buckets:
        assert len(b.nodes) <= K and len(b.replacements) <= K
        width = b.hi - b.lo
        assert width & (width - 1) == 0                  # powers of two
        # every bucket not holding our id is the sibling of a split own-id bucket:
        # our id lies in the neighbouring half of the same parent range
        if not b.covers(own_int):
            parent_lo = b.lo & ~(2 * width - 1)
            assert parent_lo <= own_int < parent_lo + 2 * width
    assert len(rt) <= K * len(buckets)
    # the far half is one full bucket (never split)
    far = rt.bucket_for((own_int ^ (1 << 159)).to_bytes(20, "big"))
    assert far.hi - far.lo == 1 << 159 and len(far.nodes) == K
    # closest() is sorted by XOR distance
    target = rng.randbytes(20)
    t = int.from_bytes(target, "big")
    near = [int.from_bytes(n.id, "big") ^ t for n in rt.closest(target, 8, T0)]
    assert near == sorted(near) and len(near) == 8


def _far_ids(own: bytes, n: int, rng):
    """Ids in the half of the space not holding `own` (one bucket, never split)."""
    top = own[0] & 0x80
    out = []
    for _ in range(n):
        b = bytearray(rng.randbytes(20))
        b[0] = (b[0] & 0x7F) | (top ^ 0x80)
        out.append(bytes(b))
    return out


def test_bad_nodes_are_replaced_and_questionable_ones_pinged_before_eviction():
    rng = random.Random(8)
    own = b"\x00" * 20
    rt = RoutingTable(own, T0)
    ids = _far_ids(own, 12, rng)
    for i, nid in enumerate(ids[:K]):
        assert rt.heard_response(nid, (f"10.0.0.{i + 1}", 1), T0 + i) == []
    # all good: a newcomer waits in the replacement cache, nobody is pinged
    # (the first overflow splits the one initial bucket: the far half cannot split again)
    assert rt.heard_response(ids[8], ("10.0.0.9", 1), T0 + 10) == []
    bucket = rt.bucket_for(ids[0])
    assert len(bucket.nodes) == K and bucket.hi - bucket.lo == 1 << 159
    assert ids[8] not in rt and bucket.replacements[-1].id == ids[8]
    # a bad node (two failures) is replaced by the freshest replacement at once
    assert rt.failed(ids[3], ("10.0.0.4", 1), T0 + 11) == []
    assert rt.get(ids[3]).status(T0 + 11) is NodeStatus.GOOD  # one failure: not bad yet
    rt.failed(ids[3], ("10.0.0.4", 1), T0 + 12)
    assert ids[3] not in rt and ids[8] in rt
    # 16 minutes later everyone is questionable: a newcomer gets the least
    # recently seen one pinged, not evicted
    later = T0 + 16 * 60
    assert all(n.status(later) is NodeStatus.QUESTIONABLE for n in bucket.nodes)
    to_ping = rt.heard_response(ids[9], ("10.0.0.10", 1), later)
    assert [n.id for n in to_ping] == [ids[0]]
    assert ids[9] not in rt
    # it answers: it stays, good again
    assert rt.heard_response(ids[0], ("10.0.0.1", 1), later + 1) == []
    assert rt.get(ids[0]).status(later + 1) is NodeStatus.GOOD
    # the next newcomer pings the next oldest; that one fails twice: evicted
    to_ping = rt.heard_response(ids[10], ("10.0.0.11", 1), later + 2)
    victim = to_ping[0]
    assert victim.id == ids[1]
    again = rt.failed(victim.id, victim.addr, later + 4)
    assert again == [victim]                           # asked twice before eviction
    rt.failed(victim.id, victim.addr, later + 6)
    assert victim.id not in rt and ids[10] in rt
    # the same id from another address never moves a live entry
    rt.heard_response(ids[0], ("10.6.6.6", 1), later + 7)
    assert rt.get(ids[0]).addr == ("10.0.0.1", 1)
    # export: the good ones only
    exported = {r[0] for r in rt.export(later + 7)}
    assert ids[0] in exported and ids[2] not in exported


def test_public_ips_limited_per_ip_in_the_table():
    rt = RoutingTable(b"\x00" * 20, T0)
    for nid in _far_ids(b"\x00" * 20, 8, random.Random(1)):
        rt.heard_response(nid, ("8.8.4.4", 1000 + nid[1]), T0)
    assert len(rt) == 3
    for nid in _far_ids(b"\x00" * 20, 8, random.Random(2)):
        rt.heard_response(nid, ("127.0.0.1", 1000 + nid[1]), T0)  # loopback: no limit
    assert len(rt) == 3 + 5


def test_addresses_learned_must_not_narrow_scope():
    assert krpc.may_learn(("8.8.8.8", 1), "127.0.0.1")
    assert krpc.may_learn(("10.0.0.1", 1), "10.0.0.2")
    assert krpc.may_learn(("8.8.8.8", 1), "10.0.0.2")
    assert not krpc.may_learn(("127.0.0.1", 22), "8.8.8.8")
    assert not krpc.may_learn(("192.168.1.1", 80), "8.8.8.8")
    assert not krpc.may_learn(("10.0.0.1", 80), "8.8.8.8")
    assert not krpc.may_learn(("127.0.0.1", 80), "10.0.0.1")
    assert not krpc.may_learn(("0.0.0.0", 80), "127.0.0.1")
    assert not krpc.may_learn(("224.0.0.1", 80), "127.0.0.1")
    assert not krpc.may_learn(("255.255.255.255", 80), "127.0.0.1")
    assert not krpc.may_learn(("8.8.8.8", 0), "127.0.0.1")
    # a public node's get_peers answer pointing at loopback is dropped
    node = DhtNode(b"\x01" * 20, rng=random.Random(3), now=T0)
    node.bootstrap([("8.8.8.8", 6881)], now=T0)
    lid = node.lookup(b"\x04" * 20, now=T0)
    for data, dst in node.datagrams_to_send(T0):
        msg = decode(data)
        if msg[b"q"] == b"get_peers":
            extra = {b"token": b"tt", b"values": [krpc.pack_peer(("127.0.0.1", 22)), krpc.pack_peer(("9.9.9.9", 7))],
                     b"nodes": krpc.pack_nodes([(b"\x04" * 20, ("127.0.0.1", 6881))])}
            events = node.receive(_responder_reply(data, b"\x02" * 20, extra), dst, T0 + 0.1)
            assert [e.peers for e in events if isinstance(e, PeersFound)] == [(("9.9.9.9", 7),)]
    assert all(dst[0] != "127.0.0.1" for _, dst in node.datagrams_to_send(T0 + 0.2))
    assert lid not in node._lookups  # nothing else to ask: it ended


# ---- hostile input -------------------------------------------------------------------------

def _valid_messages(node_id=b"F" * 20):
    ih = b"I" * 20
    return [
        encode({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": node_id}}),
        encode({b"t": b"ab", b"y": b"q", b"q": b"find_node", b"a": {b"id": node_id, b"target": ih}}),
        encode({b"t": b"ac", b"y": b"q", b"q": b"get_peers", b"a": {b"id": node_id, b"info_hash": ih}}),
        encode({b"t": b"ad", b"y": b"q", b"q": b"announce_peer",
                b"a": {b"id": node_id, b"info_hash": ih, b"port": 1, b"token": b"12345678", b"implied_port": 1}}),
        encode({b"t": b"ae", b"y": b"r", b"r": {b"id": node_id, b"nodes": b"N" * 52, b"values": [b"123456"]}}),
        encode({b"t": b"af", b"y": b"e", b"e": [201, b"oops"]}),
    ]


def _hostile(rng):
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(200))
    if kind == 1:
        data = bytearray(rng.choice(_valid_messages()))
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 2:  # huge lists of values / nodes
        return encode({b"t": b"aa", b"y": b"r", b"r": {b"id": rng.randbytes(20),
                       b"values": [rng.randbytes(6)] * 400, b"nodes": rng.randbytes(26 * 100)}})
    if kind == 3:  # wrong types everywhere
        junk = rng.choice([1, b"", [], {}, [b"x"], {b"a": 1}, b"x" * 30, -1, 2**62])
        key = rng.choice([b"t", b"y", b"q", b"a", b"r", b"e", b"id", b"target", b"info_hash",
                          b"port", b"token", b"values", b"nodes", b"implied_port", b"ip"])
        msg = decode(rng.choice(_valid_messages()))
        inner = msg.get(b"a") or msg.get(b"r")
        if isinstance(inner, dict) and rng.random() < 0.6:
            inner[key] = junk
        else:
            msg[key] = junk
        return encode(msg)
    if kind == 4:  # deep nesting
        depth = rng.randrange(5, 40)
        return b"d1:t2:aa1:y1:q1:a" + b"l" * depth + b"e" * depth + b"e"
    if kind == 5:  # truncated valid messages
        data = rng.choice(_valid_messages())
        return data[:rng.randrange(len(data))]
    if kind == 6:  # too long
        return b"d1:t2:aa1:y1:r1:rd2:id20:" + b"x" * 20 + b"1:x" + b"5000:" + b"x" * 5000 + b"ee"
    return rng.choice(_valid_messages(rng.randbytes(20)))


def test_fuzz_never_raises_and_memory_stays_bounded():
    rng = random.Random(11)
    node = DhtNode(b"\x01" * 20, rng=random.Random(12), now=T0)
    node.bootstrap([("10.0.0.2", 6881)], now=T0)
    node.lookup(b"I" * 20, now=T0)
    node.announce(b"J" * 20, 4000, now=T0)
    now = T0
    for i in range(30000):
        src = (f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}", rng.randrange(1, 65536))
        if rng.random() < 0.02:
            src = rng.choice([("::1", 5), ("not an ip", 5), ("10.0.0.1", 0), (None, None), ("1.2.3.4",), "x"])
        events = node.receive(_hostile(rng), src, now)
        assert isinstance(events, list)
        node.datagrams_to_send(now)
        if i % 100 == 0:
            now += rng.random() * 5
            node.handle_timer(now)
        if i % 1000 == 0:
            sizes = node.table_sizes()
            assert sizes["txns"] <= MAX_TXNS and sizes["verifying"] <= MAX_VERIFY
            assert sizes["ip_rates"] <= 1024 and sizes["out"] <= 1024 and sizes["votes"] <= 32
            assert sizes["routing"] <= K * sizes["buckets"] and sizes["buckets"] <= 161
    assert node.stats["internal_errors"] == 0
    assert node.stats["malformed"] > 1000


def test_flood_of_new_nodes_and_peers_stays_bounded():
    """Many distinct node ids querying and answering, and announces with valid
    tokens for many info-hashes: every table stays within its bound."""
    node = DhtNode(b"\x01" * 20, rng=random.Random(12), now=T0,
                   request_rate=1e9, request_burst=1e9, total_request_rate=1e9, total_request_burst=1e9)
    rng = random.Random(13)
    c = Client(node)
    now = T0
    for i in range(6000):
        src = (f"10.{i % 200}.{i // 200 % 200}.{rng.randrange(1, 255)}", 1000 + i % 50000)
        nid = rng.randbytes(20)
        tok = c.ask(b"get_peers", {b"info_hash": rng.randbytes(20)}, src=src, node_id=nid)[b"r"][b"token"]
        c.ask(b"announce_peer", {b"info_hash": rng.randbytes(20), b"port": 9, b"token": tok}, src=src, node_id=nid)
        # answer every ping the node sends (so verified nodes pile in)
        for data, dst in node.datagrams_to_send(now):
            msg = decode(data)
            if msg.get(b"y") == b"q":
                node.receive(_responder_reply(data, rng.randbytes(20)), dst, now)
        if i % 500 == 0:
            now += 3
            c.now = now
            node.handle_timer(now)
    sizes = node.table_sizes()
    assert sizes["hashes"] <= MAX_HASHES and sizes["peers"] <= MAX_PEERS_TOTAL
    assert sizes["routing"] <= K * 161 and sizes["replacements"] <= K * 161
    assert sizes["txns"] <= MAX_TXNS and sizes["verifying"] <= MAX_VERIFY
    assert node.stats["internal_errors"] == 0


# ---- the asyncio service on real loopback sockets ---------------------------------------

class Endpoint:
    """A UDP socket on 127.0.0.1 with a Demux and a DhtService on it."""

    def __init__(self, loop, seed, bootstrap, found, lookup_interval: float | None = 2.0):
        """`lookup_interval` None: the service's own."""
        self.demux = Demux()
        self.udp = UdpSocket(bind_udp("127.0.0.1", 0), self.demux, loop)
        timing = {} if lookup_interval is None else {"lookup_interval": lookup_interval}
        self.dht = DhtService(self.udp.sendto, random.Random(seed).randbytes(20), bootstrap=bootstrap,
                              loop=loop, rng=random.Random(seed),
                              on_peers=lambda dkey, peers: found.setdefault(dkey, set()).update(peers),
                              node_options={"request_rate": 1000, "request_burst": 1000}, **timing)
        self.quic_seen = []
        self.demux.add(lambda d: len(d) >= 20 and bool(d[0] & 0x40), lambda d, a: self.quic_seen.append(d))
        self.demux.add(self.dht.accepts, self.dht.datagram, first=True)

    def close(self):
        self.dht.close()
        self.udp.close()


async def _until(pred, timeout):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


async def test_services_on_loopback_find_each_other():
    loop = asyncio.get_running_loop()
    found_a: dict = {}
    found_b: dict = {}
    hub = Endpoint(loop, 1, [], {})
    hub.dht.start()
    hub_addr = ("localhost", hub.udp.port)               # a name: resolved in a thread
    others = [Endpoint(loop, 10 + i, [hub_addr], {}) for i in range(6)]
    a = Endpoint(loop, 2, [hub_addr], found_a)
    b = Endpoint(loop, 3, [hub_addr], found_b)
    everyone = [hub, *others, a, b]
    try:
        for e in others:
            e.dht.start()
        await _until(lambda: all(len(e.dht.core.routing) >= 1 for e in others), 5)
        dkey = bytes(range(32))
        a.dht.announce(dkey, a.udp.port)
        b.dht.lookup(dkey)
        a.dht.start()
        b.dht.start()
        assert await _until(lambda: ("127.0.0.1", a.udp.port) in found_b.get(dkey, ()), 20)
        # A does not report itself (its own address as the DHT sees it)
        assert ("127.0.0.1", a.udp.port) not in found_a.get(dkey, set())
        assert a.dht.external_address() == ("127.0.0.1", a.udp.port)
        # a QUIC-looking datagram still reaches the QUIC route
        probe = bind_udp("127.0.0.1", 0)
        probe.sendto(b"\x40" + bytes(30), ("127.0.0.1", a.udp.port))
        probe.sendto(b"d" + bytes(30) + b"e", ("127.0.0.1", a.udp.port))  # 'd...e' but not KRPC
        assert await _until(lambda: len(a.quic_seen) == 2, 3)
        probe.close()
        b.dht.stop_lookup(dkey)
        a.dht.remove(dkey)
        assert not b.dht._running and not b.dht._scheduled
    finally:
        for e in everyone:
            e.close()
    for e in everyone:
        assert e.dht.core.stats["internal_errors"] == 0
