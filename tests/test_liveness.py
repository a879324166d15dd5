"""engine/liveness.py on a fake clock: what a clone waits for, and when it stops."""

from __future__ import annotations

from dattui.engine import liveness as lv

A = ("127.0.0.1", 4000)
B = ("127.0.0.1", 4001)
RULES = lv.Rules(stall_timeout=20.0, peer_idle_timeout=10.0)


def load(peer, inflight=1 << 20, rate=1e9, rtt=0.01, heard=0.0, serves=True):
    return lv.PeerLoad(peer, inflight, rate, rtt, heard, serves)


def tick(live, now, *loads, version=1, missing=True):
    return live.handle(lv.Tick(tuple(loads), version, missing), now)


def test_request_timeout_scales_with_rate_and_rtt_within_bounds():
    assert lv.request_timeout(1 << 20, 1e9, 0.001) == lv.MIN_REQUEST_TIMEOUT
    assert lv.request_timeout(16 << 20, 1e5, 0.2) == lv.MAX_REQUEST_TIMEOUT
    assert lv.request_timeout(1 << 20, 0.0, 0.1) == lv.FIRST_REQUEST_TIMEOUT
    mid = lv.request_timeout(4 << 20, 1e6, 0.1)
    assert mid == 3 * (0.2 + (4 << 20) / 1e6)


def test_a_peer_that_stops_is_reassigned_pinged_then_dropped_when_silent():
    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("p", A, b"n1"), 0.0)
    assert tick(live, 0.5, load("p", heard=0.5)) == []
    live.handle(lv.DataArrived("p"), 1.0)
    assert tick(live, 1.9, load("p", heard=1.0)) == []          # quiet for under 1 s
    assert tick(live, 2.1, load("p", heard=1.0)) == [lv.Ping("p")]  # quiet: is it there?
    assert tick(live, 2.9, load("p", heard=2.2)) == []          # the PONG came
    acts = tick(live, 3.1, load("p", heard=2.2))                # 2 s and no block: reassigned
    assert acts == [lv.Reassign("p"), lv.Ping("p")] and live.is_slow("p")
    assert tick(live, 4.0, load("p", inflight=0, heard=2.2)) == []
    acts = tick(live, 5.2, load("p", inflight=0, heard=2.2))   # no pong in 2 s: dead
    assert [type(a) for a in acts] == [lv.Drop] and "answered nothing" in acts[0].reason
    assert tick(live, 6.0, load("p", inflight=0, heard=2.2)) == []  # dropped once


def test_a_dead_connection_is_dropped_within_seconds_of_going_quiet():
    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("p", A, b"n1"), 0.0)
    assert tick(live, 0.0, load("p", rate=0.0, heard=0.0)) == []  # nothing measured yet
    assert tick(live, 1.0, load("p", rate=0.0, heard=0.0)) == [lv.Ping("p")]
    acts = tick(live, 3.0, load("p", rate=0.0, heard=0.0))
    assert [type(a) for a in acts] == [lv.Drop]  # 3 s, not the 8 s of a first request


def test_a_peer_that_answers_pings_but_sends_no_data_is_dropped_after_idle_timeout():
    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("p", A, b"n1"), 0.0)
    live.handle(lv.DataArrived("p"), 1.0)
    tick(live, 1.5, load("p", heard=1.0))
    assert tick(live, 3.5, load("p", heard=1.0))[0] == lv.Reassign("p")
    assert tick(live, 4.0, load("p", inflight=0, heard=3.6)) == []  # the PONG: asked again
    assert not live.is_slow("p")
    assert tick(live, 4.1, load("p", heard=4.0)) == []  # asked again
    assert tick(live, 6.1, load("p", heard=5.9))[0] == lv.Reassign("p")  # and again nothing
    assert tick(live, 10.0, load("p", inflight=0, heard=9.9)) == []
    acts = tick(live, 11.6, load("p", heard=11.0))
    assert [type(a) for a in acts] == [lv.Drop] and "no data for 10 s" in acts[0].reason


def test_data_again_makes_a_slow_peer_ok():
    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("p", A, b"n1"), 0.0)
    tick(live, 0.0, load("p", rate=0.0))
    assert tick(live, 8.0, load("p", rate=0.0))[0] == lv.Reassign("p")  # nothing measured: 8 s
    live.handle(lv.DataArrived("p"), 8.5)
    assert not live.is_slow("p")


def test_bad_data_bans_address_and_node_a_close_backs_off():
    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("bad", A, b"evil"), 0.0)
    live.handle(lv.PeerClosed("bad", True, "bad block"), 1.0)
    assert not live.may_dial(A, 1000.0) and live.refuses(b"evil")
    live.handle(lv.PeerAuthenticated("q", B, b"ok"), 1.0)
    live.handle(lv.PeerClosed("q", False, "closed"), 2.0)
    assert not live.may_dial(B, 2.5) and live.may_dial(B, 3.0)
    live.handle(lv.PeerAuthenticated("q2", B, b"ok"), 3.0)
    live.handle(lv.PeerClosed("q2", False, "closed"), 4.0)
    assert not live.may_dial(B, 5.5) and live.may_dial(B, 6.0)  # 2 s the second time
    live.handle(lv.PeerAuthenticated("q3", B, b"ok"), 6.0)
    live.handle(lv.DataArrived("q3"), 6.5)
    live.handle(lv.PeerClosed("q3", False, "closed"), 7.0)
    assert live.may_dial(B, 8.0)  # useful data reset the backoff


def test_stuck_names_the_cause_once_and_unstuck_on_progress():
    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("bad", A, b"evil"), 1.0)
    live.handle(lv.PeerClosed("bad", True, "bad block"), 2.0)
    assert tick(live, 20.0) == []
    acts = tick(live, 21.0)
    assert len(acts) == 1 and "does not verify" in acts[0].cause
    assert tick(live, 30.0) == []
    live.handle(lv.PeerAuthenticated("good", B, b"good"), 31.0)
    assert live.stuck is None


def test_stuck_causes():
    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("old", A, b"o"), 0.0)
    live.handle(lv.VersionOffered("old", 3), 0.1)
    acts = tick(live, 20.0, load("old", inflight=0, serves=False), version=5)
    assert "version 3, older than version 5" in acts[0].cause

    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("p", A, b"o"), 0.0)
    acts = tick(live, 20.0, load("p", inflight=0))
    assert "hold none of the blocks" in acts[0].cause

    live = lv.Liveness(RULES, started=0.0)
    assert tick(live, 100.0) == []  # no peer yet: that is find_timeout's to say

    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("p", A, b"o"), 0.0)
    live.handle(lv.PeerClosed("p", False, "stopped"), 1.0)
    assert "the last one closed (stopped)" in tick(live, 20.0)[0].cause


def test_a_node_seen_again_is_no_progress():
    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("p", A, b"n"), 0.0)
    live.handle(lv.PeerClosed("p", False, "closed"), 1.0)
    live.handle(lv.PeerAuthenticated("p2", A, b"n"), 15.0)
    assert isinstance(tick(live, 20.0, load("p2", inflight=0))[0], lv.Stuck)


def test_a_peer_that_stops_is_judged_by_the_rate_it_had_not_by_a_decayed_window():
    live = lv.Liveness(RULES, started=0.0)
    live.handle(lv.PeerAuthenticated("p", A, b"n1"), 0.0)
    assert tick(live, 0.5, load("p", rate=0.0)) == []  # requests out from here on
    for i in range(11):  # 10 MB/s for a second
        live.handle(lv.DataArrived("p", 1_000_000), 1.0 + i / 10)
    # the sliding-window rate has fallen to 0; 1 MiB at 10 MB/s is quick: 2 s, not 8
    acts = tick(live, 4.2, load("p", rate=0.0, heard=2.0))
    assert acts[0] == lv.Reassign("p")
