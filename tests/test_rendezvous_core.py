"""Rendezvous protocol and sans-IO cores: clients and server on an in-memory
network with a fake clock."""

from __future__ import annotations

import random
import struct
import weakref

import pytest

from dattui.engine import stun
from dattui.engine.rendezvous import client_core as cc
from dattui.engine.rendezvous import protocol as p
from dattui.engine.rendezvous.client_core import RendezvousClient
from dattui.engine.rendezvous.server_core import RendezvousServerCore, Send, ServerLimits

KEY = bytes(range(32))
KEY2 = bytes(range(1, 33))
A = ("203.0.113.10", 4000)
B = ("198.51.100.20", 5000)
C = ("198.51.100.30", 6000)
EVIL = ("203.0.113.66", 6666)


class Net:
    """A server core and clients joined by a perfect in-memory network."""

    def __init__(self, limits: ServerLimits = ServerLimits(), seed: int = 1) -> None:
        self.now = 1000.0
        self.limits = limits
        self.server = RendezvousServerCore(rng=random.Random(seed), limits=limits,
                                           local_address=("192.0.2.1", 3478))
        self.clients: dict[tuple[str, tuple], RendezvousClient] = {}
        self.sent: list[Send] = []
        self._seed = seed

    def add(self, addr, transport="udp", **kw) -> RendezvousClient:
        self._seed += 1
        client = RendezvousClient(rng=random.Random(self._seed), transport=transport, **kw)
        self.clients[(transport, addr)] = client
        return client

    def move(self, old, new, transport="udp") -> None:
        self.clients[(transport, new)] = self.clients.pop((transport, old))

    def deliver(self, sends) -> None:
        for s in sends:
            self.sent.append(s)
            client = self.clients.get((s.transport, s.addr))
            if client is not None:
                client.receive(s.data, self.now)

    def send(self, data, addr, transport="udp") -> list[Send]:
        out = self.server.receive(data, addr, self.now, transport)
        self.deliver(out)
        return out

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for (transport, addr), client in list(self.clients.items()):
                for data in client.datagrams_to_send(self.now):
                    moved = True
                    self.send(data, addr, transport)
            if not moved:
                return
        raise AssertionError("network never went quiet")

    def advance(self, seconds: float, step: float = 1.0, client_timers: bool = True) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            self.deliver(self.server.handle_timer(self.now))
            if client_timers:
                for client in self.clients.values():
                    t = client.get_timer()
                    if t is not None and t <= self.now:
                        client.handle_timer(self.now)
            self.pump()


_unread: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def events(client: RendezvousClient, kind=None) -> list:
    """The client's events so far (of `kind` only, if given); those returned
    are consumed, the others kept for a later call."""
    buf = _unread.setdefault(client, [])
    while (ev := client.next_event()) is not None:
        buf.append(ev)
    out = [e for e in buf if kind is None or isinstance(e, kind)]
    buf[:] = [e for e in buf if e not in out]
    return out


# -- wire format -------------------------------------------------------------------------

PEER = p.Peer(b"T" * 8, ("203.0.113.1", 1), (("10.0.0.2", 2), ("fe80::1", 3)), True)
ALL_MESSAGES = [
    p.Register(1, KEY, b"N" * 16, (("10.0.0.1", 4000), ("2001:db8::1", 4000)), cookie=b"C" * 16),
    p.Lookup(2, KEY, 5),
    p.Connect(3, KEY, b"T" * 8, (("192.168.1.2", 1234),)),
    p.RelayAllocate(4, KEY, b"T" * 8),
    p.RelayBind(5, b"H" * 8),
    p.Keepalive(6, b"N" * 16),
    p.Unregister(7, KEY, b"N" * 16),
    p.RelayClose(8, b"H" * 8),
    p.RelayData(b"H" * 8, b"quic bytes"),
    p.Cookie(9, b"C" * 16),
    p.Registered(10, 120, b"T" * 8, ("203.0.113.1", 1)),
    p.Peers(11, (PEER, p.Peer(b"U" * 8, ("2001:db8::2", 9)))),
    p.Punch(0, KEY, 200, PEER),
    p.RelayAllocated(12, b"H" * 8, 3600, 1 << 20),
    p.RelayOffer(0, KEY, b"H" * 8, p.NO_TOKEN),
    p.RelayBound(0, b"H" * 8, 3599, 1 << 20),
    p.RelayClosed(0, b"H" * 8, p.CloseReason.IDLE),
    p.Alive(13, 120, ("2001:db8::7", 7)),
    p.Error(14, p.ErrorCode.LIMIT),
]


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg):
    raw = p.encode(msg)
    assert raw[:4] == b"\x2aDR1" and p.is_rendezvous(raw)
    assert p.decode(raw) == msg
    # it never looks like STUN or QUIC on a shared socket
    assert not stun.is_stun(raw, classic=True) and not raw[0] & 0x40
    with pytest.raises(p.RendezvousError):
        p.decode(raw + b"\x00") if not isinstance(msg, p.RelayData) else p.decode(raw[:12])


def test_wire_sizes_are_as_documented():
    assert len(p.Cookie(1, bytes(16)).encode()) == 25 == p.REQUEST_HEADER_SIZE
    assert len(p.Error(1, 1).encode()) == 10
    assert min(len(m.encode()) for m in ALL_MESSAGES if isinstance(m, p.REQUEST_TYPES)) >= 25 + 8
    assert len(p.relay_data(b"H" * 8, b"x" * 1200)) == 1213
    with pytest.raises(ValueError):
        p.relay_data(b"H" * 8, b"x" * (p.MAX_RELAY_PAYLOAD + 1))
    golden = bytes.fromhex("2a445231" "02" "00000007" + "00" * 16) + KEY + b"\x00"
    assert p.Lookup(7, KEY).encode() == golden


def test_decode_garbage_raises_only_rendezvous_error():
    rng = random.Random(42)
    seeds = [m.encode() for m in ALL_MESSAGES]
    for i in range(20000):
        if i % 2:
            raw = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(4, len(raw))
                raw[pos] = rng.randrange(256)
            if rng.random() < 0.3:
                del raw[rng.randrange(5, len(raw) + 1):]
        else:
            raw = bytearray(p.MAGIC + rng.randbytes(rng.randrange(0, 80)))
        try:
            p.decode(bytes(raw))
        except p.RendezvousError:
            pass


def test_deframer_splits_any_chunking():
    msgs = [m.encode() for m in ALL_MESSAGES]
    stream = b"".join(p.frame(m) for m in msgs)
    rng = random.Random(3)
    for _ in range(50):
        d = p.Deframer()
        got, pos = [], 0
        while pos < len(stream):
            n = rng.randint(1, 40)
            got += d.feed(stream[pos:pos + n])
            pos += n
        assert got == msgs and d.buffered == 0
    with pytest.raises(p.RendezvousError):
        p.Deframer().feed(b"\x00\x00")


# -- register, lookup, punch -----------------------------------------------------------

def test_register_lookup_and_punch_coordination():
    net = Net()
    a, b = net.add(A), net.add(B)
    a.register(KEY, [("10.0.0.5", 4000)], net.now)
    b.register(KEY, [("192.168.1.7", 5000)], net.now)
    net.pump()
    ra, = events(a, cc.Registered)
    rb, = events(b, cc.Registered)
    assert ra.observed == A and rb.observed == B and ra.ttl == 120
    assert ra.token != rb.token and a.token == ra.token

    b.lookup(KEY, net.now)
    net.pump()
    listed, = events(b, cc.PeersListed)
    assert listed.key == KEY
    assert listed.peers == (p.Peer(ra.token, A, (("10.0.0.5", 4000),), False),)  # b itself left out

    b.connect(KEY, ra.token, [("192.168.1.7", 5000)], net.now)
    net.pump()
    pb, = events(b, cc.PunchRequested)
    pa, = events(a, cc.PunchRequested)
    assert pb.by_us and not pa.by_us
    assert pb.peer.observed == A and pb.peer.candidates == (("10.0.0.5", 4000),)
    assert pa.peer.observed == B and pa.peer.candidates == (("192.168.1.7", 5000),)
    assert pa.peer.token == rb.token
    assert pa.at == pb.at == net.now + 0.2
    assert pa.key == pb.key == KEY


def test_first_request_fetches_a_cookie_and_is_repeated():
    net = Net()
    a = net.add(A)
    a.register(KEY, [], net.now)
    net.pump()
    to_a = [p.decode(s.data) for s in net.sent if s.addr == A]
    assert isinstance(to_a[0], p.Cookie) and isinstance(to_a[1], p.Registered)
    assert net.server.registrations == 1
    # the cookie is reused: the next request needs no second round trip
    net.sent.clear()
    a.lookup(KEY, net.now)
    net.pump()
    assert [type(p.decode(s.data)) for s in net.sent] == [p.Peers]


def test_cookie_is_bound_to_address_and_expires():
    net = Net()
    a = net.add(A)
    a.register(KEY, [], net.now)
    net.pump()
    cookie = a.cookie
    req = p.Register(99, KEY2, b"X" * 16, cookie=cookie).encode()
    # another address cannot use it
    reply, = net.send(req, EVIL)
    assert isinstance(p.decode(reply.data), p.Cookie)
    # it expires
    net.now += net.limits.cookie_lifetime + 2
    reply, = net.send(req, A)
    assert isinstance(p.decode(reply.data), p.Cookie)


def test_cookie_is_refreshed_before_it_expires():
    net = Net()
    a = net.add(A)
    a.register(KEY, [], net.now)
    net.pump()
    first = a.cookie
    net.advance(net.limits.cookie_lifetime * 0.75, step=5)  # keepalives go out meanwhile
    assert a.cookie != first
    net.advance(net.limits.cookie_lifetime * 2, step=5)
    assert not events(a, cc.RequestFailed)
    assert net.server.registrations == 1


def test_registration_expires_without_keepalive():
    net = Net()
    a, b = net.add(A), net.add(B)
    a.register(KEY, [], net.now)
    net.pump()
    net.advance(119, client_timers=False)
    assert net.server.registrations == 1
    net.advance(2, client_timers=False)
    assert net.server.registrations == 0 and net.server.nodes == 0
    b.lookup(KEY, net.now)
    net.pump()
    assert events(b, cc.PeersListed)[0].peers == ()


def test_keepalive_holds_registrations_and_recovers_after_restart():
    net = Net()
    a = net.add(A)
    a.register(KEY, [], net.now)
    a.register(KEY2, [], net.now)
    net.pump()
    net.advance(600, step=5)
    assert net.server.registrations == 2
    assert not events(a, cc.RequestFailed)
    # the server restarts and forgets everything: the next keepalive re-registers
    net.server = RendezvousServerCore(rng=random.Random(99), limits=net.limits)
    events(a)
    net.advance(30, step=5)
    assert net.server.registrations == 2
    assert {e.key for e in events(a, cc.Registered)} == {KEY, KEY2}


def test_unregister():
    net = Net()
    a = net.add(A)
    a.register(KEY, [], net.now)
    net.pump()
    a.unregister(KEY, net.now)
    net.pump()
    assert events(a, cc.Unregistered) == [cc.Unregistered(KEY)]
    assert net.server.registrations == 0 and net.server.nodes == 0


def test_address_change_moves_the_registration_and_keeps_the_token():
    net = Net()
    a, b = net.add(A), net.add(B)
    a.register(KEY, [], net.now)
    net.pump()
    token = events(a, cc.Registered)[0].token
    moved = ("198.51.100.99", 4444)
    net.move(A, moved)
    net.advance(30, step=5)  # a keepalive from the new address (new cookie first)
    assert events(a, cc.ObservedAddressChanged) == [cc.ObservedAddressChanged(moved)]
    b.lookup(KEY, net.now)
    net.pump()
    peers = events(b, cc.PeersListed)[0].peers
    assert [(x.token, x.observed) for x in peers] == [(token, moved)]


def test_connect_errors():
    net = Net()
    a, b = net.add(A), net.add(B)
    a.register(KEY, [], net.now)
    net.pump()
    b.connect(KEY, b"nobody!!", [], net.now)
    b.connect(KEY2, a.token, [], net.now)  # a does not serve KEY2
    a.connect(KEY, a.token, [], net.now)   # itself
    net.pump()
    fb = events(b, cc.RequestFailed)
    assert [(f.kind, f.code) for f in fb] == [("connect", p.ErrorCode.NOT_FOUND)] * 2
    fa = events(a, cc.RequestFailed)
    assert [(f.kind, f.code) for f in fa] == [("connect", p.ErrorCode.BAD_REQUEST)]


def test_punch_pushes_to_one_node_are_rate_limited():
    net = Net(ServerLimits(punch_rate=2.0, punch_burst=10.0))
    a, b = net.add(A), net.add(B)
    a.register(KEY, [], net.now)
    net.pump()
    events(a)
    n = 30
    for _ in range(n):
        b.connect(KEY, a.token, [], net.now)
    net.pump()
    pushed = events(a, cc.PunchRequested)
    assert len(pushed) == net.limits.punch_burst
    assert len(events(b, cc.RequestFailed)) == n - net.limits.punch_burst


def test_requests_are_retransmitted_then_fail():
    net = Net()
    a = RendezvousClient(rng=random.Random(1))
    a.lookup(KEY, net.now)
    times = []
    now = net.now
    for _ in range(200):
        if a.datagrams_to_send(now):
            times.append(now - net.now)
        t = a.get_timer()
        if t is None:
            break
        now = t
        a.handle_timer(now)
    assert times == [0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert events(a) == [cc.RequestFailed("lookup", None, KEY, None)]


def test_client_ignores_garbage_and_stale_replies():
    net = Net()
    a = net.add(A)
    a.receive(b"\x2aDR1\x11garbage", net.now)
    a.receive(p.Registered(12345, 120, b"T" * 8, A).encode(), net.now)  # never asked
    a.receive(p.Register(1, KEY, b"N" * 16).encode(), net.now)          # a request
    assert events(a) == []


# -- relaying -----------------------------------------------------------------------------

def relay_pair(net: Net, b_transport="udp", b_addr=B):
    a, b = net.add(A), net.add(b_addr, b_transport)
    b.register(KEY, [], net.now)
    net.pump()
    b_token = events(b, cc.Registered)[0].token
    a.relay_allocate(KEY, b_token, net.now)
    net.pump()
    alloc, = events(a, cc.RelayAllocated)
    offer, = events(b, cc.RelayOffered)
    assert offer.channel == alloc.channel and offer.key == KEY
    b.relay_bind(offer.channel, net.now)
    net.pump()
    assert events(b, cc.RelayBound)[0].channel == alloc.channel
    assert events(a, cc.RelayBound)[0].channel == alloc.channel
    return a, b, alloc.channel


@pytest.mark.parametrize("b_transport", ["udp", "tcp"])
def test_relay_forwards_both_ways(b_transport):
    net = Net()
    a, b, channel = relay_pair(net, b_transport)
    out = net.send(a.relay_send(channel, b"from a"), A)
    assert [(s.addr, s.transport) for s in out] == [(B, b_transport)]
    assert events(b) == [cc.RelayDataReceived(channel, b"from a")]
    out = net.send(b.relay_send(channel, b"from b"), B, b_transport)
    assert [(s.addr, s.transport) for s in out] == [(A, "udp")]
    assert events(a) == [cc.RelayDataReceived(channel, b"from b")]
    # a third party knowing the channel cannot inject
    assert net.send(p.relay_data(channel, b"evil"), EVIL) == []
    assert net.send(p.relay_data(channel, b"evil"), B, "tcp" if b_transport == "udp" else "udp") == []


@pytest.mark.parametrize("field", ["relay_rate", "relay_rate_per_allocation"])
def test_relay_bandwidth_is_capped(field):
    limits = ServerLimits(relay_burst=20_000, **{field: 10_000})
    net = Net(limits)
    a, b, channel = relay_pair(net)
    datagram = a.relay_send(channel, bytes(1000))
    passed = sum(bool(net.send(datagram, A)) for _ in range(100))
    assert passed == 20_000 // len(datagram)
    net.now += 1.0
    passed = sum(bool(net.send(datagram, A)) for _ in range(100))
    assert passed == 10_000 // len(datagram) or passed == 10_000 // len(datagram) + 1
    assert net.server.stats.relay_dropped > 0


def test_relay_is_unlimited_and_endless_by_default():
    """The defaults suit a server that carries datasets: no rate, no end while data flows."""
    net = Net(ServerLimits(registration_ttl=10_000))
    a, b, channel = relay_pair(net)
    grants = [e for e in events(a) if isinstance(e, (cc.RelayAllocated, cc.RelayBound))]
    datagram = a.relay_send(channel, bytes(p.MAX_RELAY_PAYLOAD))
    for _ in range(3 * 3600):  # three hours at a second's worth each
        for _ in range(10):
            assert net.send(datagram, A)
        net.advance(1, client_timers=False)
    assert net.server.allocations == 1 and net.server.stats.relay_dropped == 0
    assert net.server.relayed_by(channel) == 3 * 3600 * 10 * len(datagram)
    # still ends when idle
    net.advance(ServerLimits().relay_idle + 1, client_timers=False)
    assert net.server.allocations == 0
    assert events(a, cc.RelayClosed) == [cc.RelayClosed(channel, p.CloseReason.IDLE)]


def _drive(net: Net, senders, seconds: float, step: float = 0.01, per_step: int = 20):
    """Each (client, addr, channel, datagrams per step or None for greedy)
    offers datagrams of 1,000 bytes of payload; the server ticks every second.
    Returns the bytes each allocation got through."""
    got = [0] * len(senders)
    next_tick = net.now + 1.0
    end = net.now + seconds
    while net.now < end:
        net.now += step
        for i, (client, addr, channel, n) in enumerate(senders):
            datagram = client.relay_send(channel, bytes(1000))
            for _ in range(per_step if n is None else n):
                if net.server.receive(datagram, addr, net.now):
                    got[i] += len(datagram)
        if net.now >= next_tick:
            net.server.handle_timer(net.now)
            next_tick += 1.0
    return got


def _relay_pairs(net: Net, n: int):
    out = []
    for i in range(n):
        a_addr, b_addr = (f"203.0.113.{100 + i}", 4000), (f"198.51.100.{100 + i}", 5000)
        a, b = net.add(a_addr), net.add(b_addr)
        b.register(KEY, [], net.now)
        net.pump()
        a.relay_allocate(KEY, b.token, net.now)
        net.pump()
        offer, = events(b, cc.RelayOffered)
        b.relay_bind(offer.channel, net.now)
        net.pump()
        out.append((a, a_addr, offer.channel))
    return out


def test_relay_bandwidth_is_shared_fairly_on_a_fake_clock():
    total = 1_000_000
    net = Net(ServerLimits(relay_rate=total, relay_burst=20_000, registration_ttl=10_000))
    (a1, addr1, ch1), (a2, addr2, ch2), (a3, addr3, ch3) = _relay_pairs(net, 3)
    # two greedy flows: half each
    _drive(net, [(a1, addr1, ch1, None), (a2, addr2, ch2, None)], 3)  # settle
    got = _drive(net, [(a1, addr1, ch1, None), (a2, addr2, ch2, None)], 10)
    assert all(abs(g / 10 - total / 2) < 0.05 * total for g in got), got
    assert abs(sum(got) / 10 - total) < 0.05 * total
    # a third, slow flow (10 kB/s) gets all it asks; the greedy ones split the rest
    greedy = [(a1, addr1, ch1, None), (a2, addr2, ch2, None)]
    got = [0, 0, 0]
    for second in range(12):
        part = _drive(net, greedy, 1)
        part.append(_drive(net, [(a3, addr3, ch3, 10)], 0.01)[0])  # 10 datagrams a second
        if second >= 2:  # settled
            got = [g + x for g, x in zip(got, part)]
    assert got[2] == 10 * 10 * 1013                   # nothing of the slow flow was dropped
    for g in got[:2]:
        assert abs(g / 10 - (total - 10_130) / 2) < 0.05 * total, got
    # alone, one flow takes everything
    _drive(net, [(a1, addr1, ch1, None)], 3)
    got = _drive(net, [(a1, addr1, ch1, None)], 10)
    assert abs(got[0] / 10 - total) < 0.05 * total, got
    assert net.server.relay_shares()[ch1] > 0.9 * total


def test_relay_per_allocation_cap_holds_within_the_total():
    net = Net(ServerLimits(relay_rate=1_000_000, relay_rate_per_allocation=300_000,
                           relay_burst=20_000, registration_ttl=10_000))
    (a1, addr1, ch1), (a2, addr2, ch2) = _relay_pairs(net, 2)
    _drive(net, [(a1, addr1, ch1, None), (a2, addr2, ch2, None)], 3)
    got = _drive(net, [(a1, addr1, ch1, None), (a2, addr2, ch2, None)], 10)
    assert all(abs(g / 10 - 300_000) < 0.05 * 300_000 for g in got), got
    assert set(net.server.relay_shares().values()) == {300_000}


def test_relay_max_duration_idle_and_bind_timeout():
    limits = ServerLimits(relay_max_duration=100, relay_idle=30, relay_bind_timeout=10,
                          registration_ttl=1000)
    net = Net(limits)
    a, b, channel = relay_pair(net)
    for _ in range(9):  # keep it busy: it still ends at the maximum duration
        net.advance(10, step=5)
        net.send(a.relay_send(channel, b"x"), A)
    events(a), events(b)
    net.advance(15, step=5)
    assert events(a, cc.RelayClosed) == [cc.RelayClosed(channel, p.CloseReason.EXPIRED)]
    assert events(b, cc.RelayClosed) == [cc.RelayClosed(channel, p.CloseReason.EXPIRED)]
    assert net.server.allocations == 0

    net2 = Net(limits)
    a2, b2, channel2 = relay_pair(net2)
    net2.advance(31, step=5)
    assert events(a2, cc.RelayClosed) == [cc.RelayClosed(channel2, p.CloseReason.IDLE)]

    net3 = Net(limits)
    a3, b3 = net3.add(A), net3.add(B)
    b3.register(KEY, [], net3.now)
    net3.pump()
    a3.relay_allocate(KEY, b3.token, net3.now)
    net3.pump()
    channel3 = events(a3, cc.RelayAllocated)[0].channel
    net3.advance(11, step=1)  # b never binds
    assert events(a3, cc.RelayClosed) == [cc.RelayClosed(channel3, p.CloseReason.IDLE)]
    assert net3.server.allocations == 0


def test_relay_close_and_tcp_connection_loss():
    net = Net()
    a, b, channel = relay_pair(net)
    a.relay_close(channel, net.now)
    net.pump()
    assert events(a, cc.RelayClosed) == [cc.RelayClosed(channel, p.CloseReason.BY_PEER)]
    assert events(b, cc.RelayClosed) == [cc.RelayClosed(channel, p.CloseReason.BY_PEER)]
    assert net.server.allocations == 0

    net = Net()
    a, b, channel = relay_pair(net, "tcp")
    assert net.server.registrations == 1
    net.deliver(net.server.connection_lost(B, net.now))
    assert events(a, cc.RelayClosed) == [cc.RelayClosed(channel, p.CloseReason.BY_PEER)]
    assert net.server.allocations == 0 and net.server.registrations == 0


def test_relay_allocate_retransmission_is_idempotent():
    net = Net()
    a, b = net.add(A), net.add(B)
    b.register(KEY, [], net.now)
    a.register(KEY2, [], net.now)  # fetch a cookie
    net.pump()
    req = p.RelayAllocate(77, KEY, b.token, cookie=a.cookie).encode()
    first = net.send(req, A)
    again = net.send(req, A)
    assert net.server.allocations == 1
    assert p.decode(first[0].data).channel == p.decode(again[0].data).channel
    assert len(again) == 1  # the offer is not pushed twice


def test_allocations_per_ip_are_capped():
    net = Net(ServerLimits(max_allocations_per_ip=2))
    a, b = net.add(A), net.add(B)
    b.register(KEY, [], net.now)
    net.pump()
    for _ in range(4):
        a.relay_allocate(KEY, b.token, net.now)
    net.pump()
    got = events(a)
    assert len([e for e in got if isinstance(e, cc.RelayAllocated)]) == 2
    assert [f.code for f in got if isinstance(f, cc.RequestFailed)] == [p.ErrorCode.LIMIT] * 2


# -- limits and floods --------------------------------------------------------------------------

def verified_cookie(net: Net, addr) -> bytes:
    reply = net.server.receive(p.Lookup(1, KEY).encode(), addr, net.now)
    msg = p.decode(reply[0].data)
    if isinstance(msg, p.Cookie):
        return msg.cookie
    reply = net.server.receive(p.Register(1, KEY, b"\xee" * 16).encode(), addr, net.now)
    return p.decode(reply[0].data).cookie


def test_registration_flood_from_one_ip_does_not_evict_others():
    net = Net()
    lim = net.limits
    b = net.add(B)
    b.register(KEY, [], net.now)
    net.pump()
    cookie = verified_cookie(net, EVIL)
    rng = random.Random(9)
    refused = 0
    for i in range(2000):  # within the rate limit: the clock moves on
        net.now += 1 / lim.request_rate
        key = rng.randbytes(32) if i % 2 else KEY
        reply = net.server.receive(p.Register(i + 1, key, rng.randbytes(16), cookie=cookie).encode(),
                                   EVIL, net.now)
        if reply and isinstance(p.decode(reply[0].data), p.Error):
            refused += 1
        if i % 500 == 0:
            cookie = verified_cookie(net, EVIL)
    assert net.server.registrations <= lim.max_registrations_per_ip + 1
    assert refused >= 2000 - lim.max_registrations_per_ip - 10
    # b is still registered and still served; a newcomer still gets in
    net.advance(5, step=1)
    c = net.add(C)
    c.register(KEY, [], net.now)
    c.lookup(KEY, net.now)
    net.pump()
    assert events(c, cc.Registered)
    peers = events(c, cc.PeersListed)[0].peers
    assert b.token in {x.token for x in peers}


def test_garbage_and_request_flood_is_rate_limited_per_ip():
    net = Net()
    lim = net.limits
    rng = random.Random(1)
    b = net.add(B)
    for i in range(50_000):  # one instant: far beyond the rate
        kind = i % 3
        if kind == 0:
            data = rng.randbytes(rng.randrange(1, 200))
        elif kind == 1:
            data = p.Lookup(i + 1, KEY).encode()
        else:
            data = stun.binding_request(rng.randbytes(12))
        net.send(data, ("203.0.113.66", 1000 + i % 50_000))
    answered = [s for s in net.sent if s.addr[0] == "203.0.113.66"]
    # whatever got an answer came within the burst
    assert net.server.stats.rate_limited == 50_000 - lim.request_burst
    assert len(answered) <= lim.request_burst
    # meanwhile another address is served at once
    b.register(KEY, [], net.now)
    b.lookup(KEY, net.now)
    net.pump()
    assert events(b, cc.Registered) and events(b, cc.PeersListed)


def test_ipv6_clients_are_limited_per_64():
    net = Net(ServerLimits(request_burst=10, request_rate=1))
    served = 0
    for i in range(100):  # different addresses in one /64
        served += bool(net.server.receive(p.Lookup(1, KEY).encode(), (f"2001:db8:1:2::{i + 1:x}", 5000),
                                          net.now))
    assert served == 10
    assert net.server.receive(p.Lookup(1, KEY).encode(), ("2001:db8:1:3::1", 5000), net.now)


def test_global_caps_refuse_new_but_keep_old():
    limits = ServerLimits(max_registrations=20, max_nodes=20, max_registrations_per_ip=100)
    net = Net(limits)
    first = net.add(B)
    first.register(KEY, [], net.now)
    net.pump()
    for i in range(40):
        c = net.add((f"198.51.100.{100 + i}", 7000))
        c.register(KEY, [], net.now)
    net.pump()
    assert net.server.registrations == 20
    assert net.server.stats.refused["registrations"] == 21
    assert first.token in {x.token for x in net.server.peers_of(KEY)}


def test_state_stays_bounded_under_spoofed_sources():
    limits = ServerLimits(max_tracked_ips=1000)
    net = Net(limits)
    rng = random.Random(2)
    for i in range(20_000):
        addr = (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1)
        net.server.receive(p.Register(1, rng.randbytes(32), rng.randbytes(16)).encode(), addr, net.now)
    assert net.server.tracked_ips <= 1000
    assert net.server.registrations == 0 and net.server.nodes == 0  # nothing without a cookie


# -- anti-amplification -----------------------------------------------------------------------

def random_requests(rng: random.Random, cookie: bytes, key: bytes, token: bytes, channel: bytes):
    cands = tuple(("2001:db8::%x" % rng.randrange(1, 999), rng.randrange(65536))
                  for _ in range(rng.randrange(0, p.MAX_CANDIDATES + 1)))
    txid = rng.randrange(1, 2 ** 32)
    c = rng.choice([cookie, p.NO_COOKIE, rng.randbytes(16), cookie[:4] + rng.randbytes(12)])
    return rng.choice([
        p.Register(txid, key, rng.randbytes(16), cands, cookie=c),
        p.Lookup(txid, key, rng.randrange(256), cookie=c),
        p.Connect(txid, key, token, cands, cookie=c),
        p.RelayAllocate(txid, key, token, cookie=c),
        p.RelayBind(txid, channel, cookie=c),
        p.Keepalive(txid, rng.randbytes(16), cookie=c),
        p.Unregister(txid, key, rng.randbytes(16), cookie=c),
        p.RelayClose(txid, channel, cookie=c),
    ]).encode()


def test_no_reply_to_an_unverified_source_is_larger_than_its_request():
    """Property: for datagrams from an address that holds no valid cookie,
    every reply to it is at most as long as the request, nothing is sent to
    anyone else, and in total it gets back no more bytes than it sent."""
    net = Net(ServerLimits(request_rate=1e9, request_burst=1e9))
    rng = random.Random(1234)
    # a busy key: many peers with many candidates, so PEERS would be large
    for i in range(30):
        c = net.add((f"198.51.100.{i + 1}", 5000))
        c.register(KEY, [("2001:db8::%x" % j, 1000 + j) for j in range(8)], net.now)
    net.pump()
    token = next(iter(net.clients.values())).token
    a, b, channel = relay_pair(net, b_addr=C)
    # a cookie that belongs to someone else, and one of the victim's own that expired
    other_cookie = verified_cookie(net, A)
    victim = ("203.0.113.200", 53)
    old_cookie = verified_cookie(net, victim)
    net.now += net.limits.cookie_lifetime + 5
    received = sent = 0
    seeds = [m.encode() for m in ALL_MESSAGES]
    for i in range(20_000):
        mode = i % 4
        if mode == 0:
            data = random_requests(rng, rng.choice([other_cookie, old_cookie]), rng.choice([KEY, KEY2]),
                                   rng.choice([token, b.token, rng.randbytes(8)]),
                                   rng.choice([channel, rng.randbytes(8)]))
        elif mode == 1:
            data = bytearray(rng.choice(seeds))
            data[rng.randrange(4, len(data))] = rng.randrange(256)
            data = bytes(data)
        elif mode == 2:
            data = p.MAGIC + rng.randbytes(rng.randrange(0, 100))
        else:
            data = rng.randbytes(rng.randrange(1, 100))
        before = len(net.sent)
        out = net.server.receive(data, victim, net.now)
        received += len(data)
        for s in out:
            assert s.addr == victim, f"an unverified datagram made the server send to {s.addr}"
            assert len(s.data) <= len(data), (p.decode(data), p.decode(s.data))
            sent += len(s.data)
        assert len(net.sent) == before
    assert sent <= received
    assert net.server.stats.amplification_blocked == 0  # the last guard never had to act
    assert sent > 0  # cookies did go out


def test_unverified_lookup_gets_peers_only_when_they_fit():
    net = Net()
    req = p.Lookup(5, KEY).encode()
    reply, = net.server.receive(req, EVIL, net.now)
    assert isinstance(p.decode(reply.data), p.Peers)  # empty: 10 bytes
    for i in range(5):
        c = net.add((f"198.51.100.{i + 1}", 5000))
        c.register(KEY, [("10.0.0.%d" % j, 1) for j in range(1, 9)], net.now)
    net.pump()
    reply, = net.server.receive(req, EVIL, net.now)
    assert isinstance(p.decode(reply.data), p.Cookie) and len(reply.data) <= len(req)


def test_stun_replies_are_bounded():
    net = Net(ServerLimits(request_rate=1e9, request_burst=1e9))
    rng = random.Random(7)
    for _ in range(500):
        tid = rng.randbytes(12)
        req = rng.choice([
            stun.binding_request(tid, fingerprint=False),
            stun.binding_request(tid),
            stun.binding_request(tid, pad_to=stun.RESPONSE_PAD),
            stun.binding_request(tid, change_ip=True),
            b"\x00\x01\x00\x00" + rng.randbytes(16),   # classic
        ])
        src = rng.choice([("203.0.113.5", 4000), ("2001:db8::5", 4000)])
        for s in net.server.receive(req, src, net.now):
            assert s.addr == src
            # the least a valid STUN answer holds: 32 bytes (IPv4), 44 (IPv6)
            assert len(s.data) <= max(len(req), 44)
            if len(req) >= stun.RESPONSE_PAD:
                assert len(s.data) <= len(req)
                msg = stun.parse(s.data)
                assert msg.xor_mapped_address == src and msg.software == "dattui rendezvous"
                assert msg.response_origin == ("192.0.2.1", 3478)
    strict = Net(ServerLimits(stun_strict=True))
    req = stun.binding_request(bytes(12), fingerprint=False)
    assert strict.server.receive(req, ("203.0.113.5", 4000), strict.now) == []
    req = stun.binding_request(bytes(12), pad_to=stun.RESPONSE_PAD)
    reply, = strict.server.receive(req, ("203.0.113.5", 4000), strict.now)
    assert stun.parse_binding_response(reply.data, bytes(12)) == ("203.0.113.5", 4000)


def test_server_never_reveals_nonces():
    net = Net()
    a, b = net.add(A), net.add(B)
    a.register(KEY, [], net.now)
    b.register(KEY, [], net.now)
    net.pump()
    b.lookup(KEY, net.now)
    b.connect(KEY, a.token, [], net.now)
    net.pump()
    for s in net.sent:
        assert a.nonce not in s.data and b.nonce not in s.data


# -- RFC 5780: alternate sockets ------------------------------------------------------------

S00, S01, S10, S11 = ("192.0.2.1", 3478), ("192.0.2.1", 3479), ("192.0.2.2", 3478), ("192.0.2.2", 3479)


def _rfc5780_core(**kw) -> RendezvousServerCore:
    return RendezvousServerCore(rng=random.Random(1), local_address=S00,
                                alternates={(0, 1): S01, (1, 0): S10, (1, 1): S11}, **kw)


@pytest.mark.parametrize("arrived,flags,via,origin,other", [
    (None, (False, False), None, S00, S11),
    (None, (False, True), (0, 1), S01, S11),
    (None, (True, False), (1, 0), S10, S11),
    (None, (True, True), (1, 1), S11, S11),
    ((1, 1), (True, True), None, S00, S00),     # relative to the socket it came in on
    ((0, 1), (False, True), None, S00, S10),
    ((1, 0), (False, False), (1, 0), S10, S01),
])
def test_change_request_answered_from_the_right_socket(arrived, flags, via, origin, other):
    core = _rfc5780_core()
    tid = bytes(range(12))
    req = stun.binding_request(tid, change_ip=flags[0], change_port=flags[1], pad_to=stun.RESPONSE_PAD)
    reply, = core.receive(req, A, 1000.0, "udp", arrived)
    assert reply.via == via and reply.addr == A and reply.transport == "udp"
    msg = stun.parse(reply.data)
    assert msg.xor_mapped_address == A and msg.response_origin == origin and msg.other_address == other
    assert core.other_address == S11


def test_alternate_sockets_answer_stun_only():
    core = _rfc5780_core()
    net = Net()
    c = net.add(A)
    c.register(KEY, [], net.now)
    (req,) = c.datagrams_to_send(net.now)
    assert core.receive(req, A, 1000.0, "udp", (0, 1)) == []
    assert core.receive(b"garbage" * 4, A, 1000.0, "udp", (1, 1)) == []
    assert core.stats.alternate_dropped == 2 and core.nodes == 0
    assert core.receive(req, A, 1000.0, "udp", None)  # the primary socket: a COOKIE
    with pytest.raises(ValueError):
        RendezvousServerCore(rng=random.Random(1), alternates={(2, 0): S01})
    with pytest.raises(ValueError):
        core.receive(req, A, 1000.0, "udp", (5, 5))


def test_a_server_with_an_alternate_port_only():
    core = RendezvousServerCore(rng=random.Random(1), local_address=S00, alternates={(0, 1): S01})
    tid = bytes(range(12))
    reply, = core.receive(stun.binding_request(tid, pad_to=stun.RESPONSE_PAD), A, 1000.0)
    assert stun.parse(reply.data).other_address is None  # RFC 5780: only with a second IP address
    reply, = core.receive(stun.binding_request(tid, change_port=True, pad_to=stun.RESPONSE_PAD), A, 1000.0)
    assert reply.via == (0, 1) and stun.parse(reply.data).response_origin == S01
    reply, = core.receive(stun.binding_request(tid, change_ip=True, pad_to=stun.RESPONSE_PAD), A, 1000.0)
    assert reply.via is None and stun.parse(reply.data).error_code[0] == 420
    # over TCP nothing can come from another socket
    reply, = core.receive(stun.binding_request(tid, change_port=True), A, 1000.0, "tcp")
    assert reply.transport == "tcp" and stun.parse(reply.data).error_code[0] == 420


def test_rfc5780_replies_are_bounded_and_rate_limited():
    core = _rfc5780_core(limits=ServerLimits(request_rate=1e9, request_burst=1e9))
    rng = random.Random(11)
    for _ in range(600):
        tid = rng.randbytes(12)
        req = rng.choice([
            stun.binding_request(tid, fingerprint=False, change_ip=rng.random() < .5,
                                 change_port=rng.random() < .5),
            stun.binding_request(tid, change_port=True),
            stun.binding_request(tid, change_ip=True, change_port=True, pad_to=stun.RESPONSE_PAD),
            struct.pack("!HH", 1, 8) + rng.randbytes(16) + struct.pack("!HHI", stun.CHANGE_REQUEST, 4,
                                                                    rng.choice([0, 2, 4, 6])),
            stun.encode(stun.BINDING_REQUEST, tid, [(stun.CHANGE_REQUEST, rng.randbytes(rng.randrange(9)))]),
        ])
        src = rng.choice([("203.0.113.5", 4000), ("2001:db8::5", 4000)])
        arrived = rng.choice([None, (0, 1), (1, 0), (1, 1)])
        for s in core.receive(req, src, 1000.0, "udp", arrived):
            assert s.addr == src and s.transport == "udp"
            assert len(s.data) <= max(len(req), stun.MIN_ANSWER)
    assert core.stats.stun_changed > 100
    # one bucket per source IP, whichever socket is asked
    limited = _rfc5780_core(limits=ServerLimits(request_rate=0.001, request_burst=4))
    req = stun.binding_request(bytes(12), change_port=True)
    answered = sum(len(limited.receive(req, A, 1000.0, "udp", via)) for via in [None, (0, 1), (1, 0), (1, 1)] * 3)
    assert answered == 4 and limited.stats.rate_limited == 8
