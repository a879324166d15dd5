"""The loss-tolerant CUBIC (engine/transport/congestion.py), driven packet by
packet with a fake clock: random loss below the threshold keeps the window
growing, loss above it brings the window down like CUBIC."""

from __future__ import annotations

import random

from aioquic.quic.congestion.cubic import CubicCongestionControl
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.tls import Epoch

from dattui.engine.transport import congestion
from dattui.engine.transport.congestion import LossTolerantCubic

MDS = 1452


def _packet(pn: int, now: float) -> QuicSentPacket:
    return QuicSentPacket(epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True,
                          is_crypto_packet=False, packet_number=pn,
                          packet_type=QuicPacketType.ONE_RTT, sent_time=now, sent_bytes=MDS)


def _settle(cc, sent: list, rng: random.Random, loss: float, now: float) -> None:
    """Each of `sent` lost with probability `loss`, the rest acknowledged."""
    lost = [p for p in sent if rng.random() < loss]
    for p in sent:
        if p not in lost:
            cc.on_packet_acked(now=now, packet=p)
    if lost:
        cc.on_packets_lost(now=now, packets=lost)


def _run(cc, loss: float, packets: int = 20000, seed: int = 1) -> list[int]:
    """Send `packets` one RTT-window at a time; each is acked or lost at random.
    Returns the congestion window after every round."""
    rng = random.Random(seed)
    now, rtt, pn = 0.0, 0.01, 0
    windows = []
    cc.on_rtt_measurement(now=now, rtt=rtt)
    while pn < packets:
        flight = []
        while cc.bytes_in_flight + MDS <= cc.congestion_window and len(flight) < 2000:
            p = _packet(pn, now)
            cc.on_packet_sent(packet=p)
            flight.append(p)
            pn += 1
        now += rtt
        _settle(cc, flight, rng, loss, now)
        cc.on_rtt_measurement(now=now, rtt=rtt)
        windows.append(cc.congestion_window)
    return windows


def test_registered_with_aioquic_under_its_name():
    from aioquic.quic.congestion.base import create_congestion_control
    cc = create_congestion_control(congestion.NAME, max_datagram_size=MDS)
    assert isinstance(cc, LossTolerantCubic)


def test_one_percent_random_loss_is_not_congestion():
    tolerant = LossTolerantCubic(max_datagram_size=MDS)
    plain = CubicCongestionControl(max_datagram_size=MDS)
    w_tolerant = _run(tolerant, 0.01)
    w_plain = _run(plain, 0.01)
    assert tolerant.tolerated_losses > 100
    # losses in the first MIN_SAMPLE packets count (the rate is not known yet);
    # after that, none does
    assert tolerant.congestion_events <= 3
    assert 0.005 < tolerant.loss_rate < 0.02
    # plain CUBIC keeps cutting its window: the tolerant one ends far larger
    assert w_tolerant[-1] > 5 * w_plain[-1], (w_tolerant[-1], w_plain[-1])
    assert tolerant.bytes_in_flight == 0 and plain.bytes_in_flight == 0


def test_loss_above_the_threshold_cuts_the_window_like_cubic():
    tolerant = LossTolerantCubic(max_datagram_size=MDS)
    windows = _run(tolerant, 0.08)
    assert tolerant.congestion_events > 20
    assert tolerant.loss_rate > congestion.LOSS_THRESHOLD
    assert max(windows[len(windows) // 2:]) < 400 * MDS


def test_a_burst_of_loss_after_a_clean_stretch_is_congestion():
    """A queue that overflows: clean for a while, then a tenth of a window lost
    at once. The decayed rate crosses the threshold and the window comes down."""
    cc = LossTolerantCubic(max_datagram_size=MDS)
    _run(cc, 0.0, packets=5000)
    before = cc.congestion_window
    now = 100.0
    burst = []
    for i in range(int(before / MDS)):
        p = QuicSentPacket(epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True,
                           is_crypto_packet=False, packet_number=10**6 + i,
                           packet_type=QuicPacketType.ONE_RTT, sent_time=now, sent_bytes=MDS)
        cc.on_packet_sent(packet=p)
        burst.append(p)
    cut = len(burst) // 3
    cc.on_packets_lost(now=now + 0.01, packets=burst[:cut])
    assert cc.congestion_events == 1
    assert cc.congestion_window < before


def _stream(cc, loss: float, packets: int, seed: int, ack_every: int = 16) -> int:
    """Packets acked or declared lost `ack_every` at a time, as ACK frames come
    in during a transfer (not a round at once). Returns the congestion events
    after the first MIN_SAMPLE packets."""
    rng = random.Random(seed)
    now, pn, early = 0.0, 0, None
    cc.on_rtt_measurement(now=now, rtt=0.001)
    while pn < packets:
        group = []
        for _ in range(ack_every):
            p = _packet(pn, now)
            cc.on_packet_sent(packet=p)
            group.append(p)
            pn += 1
        now += 0.0005
        _settle(cc, group, rng, loss, now)
        if early is None and pn >= congestion.MIN_SAMPLE:
            early = cc.congestion_events
    return cc.congestion_events - early


def test_sampling_noise_near_one_percent_is_not_taken_for_congestion():
    """The estimate over the decaying window must stay under the 2 % threshold
    when the loss a sender counts is a little above 1 % (1.2 % counted in the
    benchmark at 1 % dropped each way). With a 2,000-packet window its noise
    crossed the threshold 22 times in these five runs (each a CUBIC cut: 22
    MB/s instead of 48 MB/s at MTU 1500); with 8,000, twice."""
    events = [_stream(LossTolerantCubic(max_datagram_size=MDS), 0.012, 200_000, seed)
              for seed in range(1, 6)]
    assert sum(events) <= 4, events
