"""Hole-punching core with a simulated clock and simulated NATs."""

import random

from dattui.engine.traversal.punch import (ACK, LOW_TTL, PROBE, PunchState, Punched, Puncher, Send,
                                    encode, is_probe)

S = bytes(range(16))


def test_first_round_has_low_ttl_then_full_probes():
    p = Puncher(S, [("203.0.113.5", 4000), ("10.0.0.2", 4000)], start=10.0, rng=random.Random(1))
    assert p.poll(9.0) == [] and p.next_timer() == 10.0
    first = p.poll(10.0)
    assert [s.ttl for s in first] == [LOW_TTL, LOW_TTL] and {s.addr for s in first} == {
        ("203.0.113.5", 4000), ("10.0.0.2", 4000)}
    assert all(is_probe(s.data) and s.data[4] == PROBE for s in first)
    second = p.poll(p.next_timer())
    assert [s.ttl for s in second] == [None, None]
    assert p.next_timer() == 10.15


def test_probe_is_acked_and_ack_succeeds():
    a = Puncher(S, [("198.51.100.2", 5000)], start=0, rng=random.Random(1))
    b = Puncher(S, [("198.51.100.1", 6000)], start=0, rng=random.Random(2))
    probe = a.poll(0)[0]
    ack, won = b.receive(probe.data, ("198.51.100.1", 6000), 0.01)
    assert isinstance(ack, Send) and ack.data[4] == ACK and ack.data[21:] == probe.data[21:]
    assert won == Punched(("198.51.100.1", 6000), 0, 0.01) and b.state is PunchState.DONE
    out = a.receive(ack.data, ("198.51.100.2", 5000), 0.02)
    assert out == [Punched(("198.51.100.2", 5000), 0, 0.02)] and a.state is PunchState.DONE
    assert a.poll(0.5) == []


def test_other_sessions_and_garbage_are_ignored():
    a = Puncher(S, [("1.2.3.4", 1)], start=0, rng=random.Random(1))
    assert a.receive(encode(ACK, bytes(16), bytes(8)), ("1.2.3.4", 1), 0) == []
    assert a.receive(b"\x2bDP1garbage", ("1.2.3.4", 1), 0) == []
    assert a.state is not PunchState.DONE


def test_deadline_fails():
    a = Puncher(S, [("1.2.3.4", 1)], start=0, deadline=3, rng=random.Random(1))
    t = 0.0
    while (nt := a.next_timer()) is not None:
        t = nt
        a.poll(t)
    assert a.state is PunchState.FAILED and 3 <= t <= 3.01 and a.rounds_sent == 8


def simulate(kind_a, kind_b, seed=0, deadline=10.0):
    """Two punchers behind simulated NATs: 'cone' maps consistently and filters by
    address and port; 'symmetric' maps every destination to a fresh random port."""
    rng = random.Random(seed)

    class Nat:
        def __init__(self, ip, kind):
            self.ip, self.kind, self.map, self.allowed, self.inside = ip, kind, {}, set(), {}

        def out(self, sock, dst):
            key = (sock, dst) if self.kind == "symmetric" else sock
            if key not in self.map:
                port = rng.randint(1024, 65535) if self.kind == "symmetric" else 40000 + sock
                self.map[key] = port
                self.inside[port] = sock
            port = self.map[key]
            self.allowed.add((port, dst))
            return (self.ip, port)

        def inbound(self, src, port):
            return self.inside[port] if (port, src) in self.allowed else None

    na, nb = Nat("203.0.113.1", kind_a), Nat("203.0.113.2", kind_b)
    # what the rendezvous saw: each side's mapping towards the server
    seen_a, seen_b = na.out(0, ("203.0.113.10", 1)), nb.out(0, ("203.0.113.10", 1))
    hard_a, hard_b = kind_a == "symmetric", kind_b == "symmetric"
    socks_a = tuple(range(1, 257)) if hard_a and not hard_b else (0,)
    socks_b = tuple(range(1, 257)) if hard_b and not hard_a else (0,)
    pa = Puncher(S, [seen_b], start=0, deadline=deadline, rng=random.Random(seed + 1), sockets=socks_a,
                 spray=(seen_b[0], 2048) if hard_b and not hard_a else None)
    pb = Puncher(S, [seen_a], start=0, deadline=deadline, rng=random.Random(seed + 2), sockets=socks_b,
                 spray=(seen_a[0], 2048) if hard_a and not hard_b else None)
    t = 0.0
    queue = []
    while True:
        for me, nat, other_nat, other in ((pa, na, nb, pb), (pb, nb, na, pa)):
            for s in me.poll(t):
                src = nat.out(s.socket, s.addr)
                if s.ttl == LOW_TTL or s.addr[0] != other_nat.ip:
                    continue
                queue.append((other, other_nat, src, s))
        while queue:
            other, other_nat, src, s = queue.pop(0)
            sock = other_nat.inbound(src, s.addr[1])
            if sock is None:
                continue
            back_nat = na if other is pa else nb
            for r in other.receive(s.data, src, t, sock):
                if isinstance(r, Send):
                    rsrc = back_nat.out(r.socket, r.addr)
                    target_nat = nb if other is pa else na
                    target = pb if other is pa else pa
                    tsock = target_nat.inbound(rsrc, r.addr[1])
                    if tsock is not None:
                        target.receive(r.data, rsrc, t, tsock)
        if pa.state is PunchState.DONE and pb.state is PunchState.DONE:
            return True, t
        timers = [x for x in (pa.next_timer(), pb.next_timer()) if x is not None]
        if not timers:
            return False, t
        t = min(timers)


def test_cone_to_cone_punches_within_a_second():
    ok, t = simulate("cone", "cone")
    assert ok and t < 1.0


def test_one_symmetric_side_punches_with_the_birthday_strategy():
    wins = sum(simulate("cone", "symmetric", seed)[0] for seed in range(20))
    assert wins >= 18  # about 98% expected with 256 sockets and 2,048 random probes


def test_both_symmetric_cannot_punch():
    ok, _ = simulate("symmetric", "symmetric", deadline=3)
    assert not ok
