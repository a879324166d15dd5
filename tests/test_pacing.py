"""Paced bursts stay bursts at the rates a sub-millisecond path reaches."""

from __future__ import annotations

import pytest
from aioquic.quic.recovery import QuicPacketPacer

from dattui.engine.transport import aioquic_compat
from dattui.engine.transport.pacing import BURST_PACKETS, BurstPacer
from dattui.engine.transport.quic import QuicEndpoint
from test_fastconn import config

MSS = 1452


def burst(pacer, now: float) -> int:
    """Packets the pacer lets go at one instant (one event-loop turn)."""
    sent = 0
    while pacer.next_send_time(now) is None and sent < 1000:
        pacer.update_after_send(now)
        sent += 1
    return sent


def pacers(cwnd: int, rtt: float):
    plain = QuicPacketPacer(max_datagram_size=MSS)
    ours = QuicPacketPacer(max_datagram_size=MSS)
    assert BurstPacer.adopt(ours)
    for p in (plain, ours):
        p.update_rate(congestion_window=cwnd, smoothed_rtt=rtt)
    return plain, ours


def test_high_rate_keeps_bursts_of_16_packets():
    # a 41 MB window over 1 ms (measured on the veth benchmark): 41 GB/s
    plain, ours = pacers(41_000_000, 0.001)
    now = 10.0
    for p in (plain, ours):
        burst(p, now)  # drain what the start allowed
    now += 0.0003  # 300 us later: one event-loop turn of a busy sender
    assert burst(plain, now) == 1  # aioquic: one packet per turn, whatever the window
    assert burst(ours, now) == BURST_PACKETS


def test_moderate_rate_is_aioquics_own():
    # 10 MB/s over 20 ms: aioquic's bucket already holds its packets
    plain, ours = pacers(200_000, 0.020)
    assert ours.bucket_max == plain.bucket_max and ours.packet_time == plain.packet_time
    now = 5.0
    burst(plain, now)
    burst(ours, now)
    now += 0.05
    assert burst(ours, now) == burst(plain, now) >= 2


def test_small_window_bursts_a_quarter_of_it():
    plain, ours = pacers(8 * MSS, 0.00001)  # 8 packets in flight at most: bursts of 2
    now = 1.0
    burst(ours, now)
    assert burst(ours, now + 0.01) == 2


def test_endpoint_connections_use_it():
    if not aioquic_compat.enabled("pacing"):
        assert type(QuicEndpoint._connection(config(True))._loss._pacer) is QuicPacketPacer
        pytest.skip(aioquic_compat.status().describe())
    conn = QuicEndpoint._connection(config(True))
    assert type(conn._loss._pacer) is BurstPacer
