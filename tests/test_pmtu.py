"""Path MTU discovery core (engine/transport/pmtu.py): a fake clock, no sockets."""

from __future__ import annotations

import itertools

from dattui.engine.transport import pmtu
from dattui.engine.transport.pmtu import PmtuSearch, SearchState


def _nonces():
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def _msg(probe: bytes) -> pmtu.Message:
    m = pmtu.parse(probe)
    assert m is not None and m.kind == pmtu.PROBE
    return m


def test_wire_format_golden_vectors_both_ways():
    nonce = bytes(range(16))
    ack = pmtu.encode_ack(nonce, 8952)
    assert ack == b"\x2bDP1" + b"\x02" + nonce + b"\x22\xf8"
    assert pmtu.parse(ack) == pmtu.Message(pmtu.ACK, nonce, 8952)
    probe = pmtu.encode_probe(nonce, 1500)
    assert len(probe) == 1500 and probe[:23] == b"\x2bDP1\x01" + nonce + b"\x05\xdc"
    assert probe[23:] == bytes(1500 - 23)
    assert pmtu.parse(probe) == pmtu.Message(pmtu.PROBE, nonce, 1500)
    assert pmtu.is_pmtu(probe) and not pmtu.is_pmtu(b"\x2aDR1" + bytes(30))


def test_hostile_input_is_refused():
    nonce = bytes(16)
    assert pmtu.parse(b"") is None
    assert pmtu.parse(b"\x2bDP1\x01") is None
    assert pmtu.parse(pmtu.encode_probe(nonce, 1500)[:-1]) is None  # stated size != real size
    assert pmtu.parse(pmtu.encode_ack(nonce, 1500) + b"x") is None  # acks are exactly 23 bytes
    assert pmtu.parse(pmtu.encode_ack(nonce, 10)) is None  # an ack for an impossible size
    assert pmtu.parse(b"\x2bDP1\x07" + bytes(18)) is None  # unknown kind
    assert pmtu.parse(b"XXXX\x01" + bytes(18)) is None


def test_largest_candidate_first_and_the_first_confirmed_one_wins():
    s = PmtuSearch(1452, random=_nonces())
    probe = s.start(0.0, rtt=0.01)
    m = _msg(probe)
    assert m.size == 16000 and len(probe) == 16000
    assert s.size == 1452 and s.state is SearchState.SEARCHING
    assert s.on_ack(m.nonce, 16000, 0.02) is True
    assert s.size == 16000 and s.state is SearchState.COMPLETE
    # nothing larger to try: no timer left
    assert s.next_timer() is None


def test_lost_probes_are_retried_then_the_next_candidate_is_tried():
    s = PmtuSearch(1452, random=_nonces())
    probe = s.start(0.0, rtt=0.01)
    sizes = [_msg(probe).size]
    now = 0.0
    while True:
        at = s.next_timer()
        assert at is not None and at > now
        now = at
        probe = s.on_timer(now, rtt=0.01)
        if probe is None:
            break
        sizes.append(_msg(probe).size)
    assert sizes == [16000] * 3 + [8952] * 3 + [4052] * 3
    assert s.size == 1452 and s.state is SearchState.COMPLETE
    # nothing was answered (a busy peer, a lossy moment, or a real limit): the next
    # search comes soon, and then less and less often, up to RAISE_INTERVAL
    waits = []
    for _ in range(9):
        waits.append(round(s.next_timer() - now, 6))
        now = s.next_timer()
        probe = s.on_timer(now, rtt=0.01)
        assert _msg(probe).size == 16000
        while probe is not None:  # unanswered again
            now = s.next_timer()
            probe = s.on_timer(now, rtt=0.01)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    # an answer ends the quick retries
    m = _msg(s.on_timer(s.next_timer(), rtt=0.01))
    assert s.on_ack(m.nonce, m.size, s.next_timer() - 0.05) and s.size == 16000


def test_a_search_that_found_a_size_retries_larger_only_after_raise_interval():
    s = PmtuSearch(1452, random=_nonces())
    probe, now = s.start(0.0, rtt=0.01), 0.0
    for _ in range(3):  # 16000 goes unanswered three times
        now = s.next_timer()
        probe = s.on_timer(now, rtt=0.01)
    m = _msg(probe)
    assert m.size == 8952
    assert s.on_ack(m.nonce, 8952, now + 0.01) and s.size == 8952
    assert s.next_timer() == now + 0.01 + pmtu.RAISE_INTERVAL


def test_probe_timeout_follows_rtt_within_bounds():
    s = PmtuSearch(1452, random=_nonces())
    s.start(10.0, rtt=0.001)
    assert s.next_timer() == 10.0 + pmtu.MIN_PROBE_TIMEOUT
    s = PmtuSearch(1452, random=_nonces())
    s.start(10.0, rtt=0.2)
    assert abs(s.next_timer() - 10.6) < 1e-9
    s = PmtuSearch(1452, random=_nonces())
    s.start(10.0, rtt=5.0)
    assert s.next_timer() == 10.0 + pmtu.MAX_PROBE_TIMEOUT


def test_a_refused_send_moves_on_at_once():
    s = PmtuSearch(1452, random=_nonces())
    assert _msg(s.start(0.0, 0.01)).size == 16000
    nxt = s.on_send_error(0.0, 0.01)  # larger than the interface: EMSGSIZE
    m = _msg(nxt)
    assert m.size == 8952
    assert s.on_ack(m.nonce, 8952, 0.01) and s.size == 8952
    # a larger candidate is retried later, the confirmed size is kept meanwhile
    assert s.next_timer() == 0.01 + pmtu.RAISE_INTERVAL


def test_forged_or_stale_acks_change_nothing():
    s = PmtuSearch(1452, random=_nonces())
    m = _msg(s.start(0.0, 0.01))
    assert s.on_ack(b"\xff" * 16, 16000, 0.01) is False  # wrong nonce
    assert s.on_ack(m.nonce, 8952, 0.01) is False  # right nonce, other size
    assert s.size == 1452
    retry = s.on_timer(s.next_timer(), 0.01)
    assert _msg(retry).nonce != m.nonce
    assert s.on_ack(m.nonce, 16000, 0.2) is False  # the earlier probe's nonce is stale
    assert s.size == 1452


def test_black_hole_drops_to_base_and_searches_again_later():
    s = PmtuSearch(1452, random=_nonces())
    m = _msg(s.start(0.0, 0.01))
    s.on_ack(m.nonce, 16000, 0.01)
    assert s.black_hole(5.0) is True
    assert s.size == 1452 and s.black_holes == 1
    assert s.black_hole(5.1) is False  # already at the base size
    assert s.next_timer() == 5.0 + pmtu.RAISE_INTERVAL
    assert _msg(s.on_timer(5.0 + pmtu.RAISE_INTERVAL, 0.01)).size == 16000


def test_ceiling_limits_candidates():
    s = PmtuSearch(1452, ceiling=9000, random=_nonces())
    assert _msg(s.start(0.0, 0.01)).size == 8952
    assert PmtuSearch(16000).start(0.0, 0.01) is None  # nothing above the base
