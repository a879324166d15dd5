"""Congestion control that tells random loss from congestion.

CUBIC halves its pace (x0.7) at the first loss of every round trip. On a path
that loses 1 % of packets at random - a wireless hop, a lossy long-haul link,
the `iptables statistic` drop of our benchmark - that keeps the window near
its minimum and the transfer at a third of what the path carries, although
nothing is congested. BBRv2 answers this with a loss-rate threshold: loss
below about 2 % of what is delivered is not a congestion signal. This
controller does the same on top of aioquic's CUBIC:

- it keeps a decaying count of packets acknowledged and lost (the counts are
  halved every WINDOW packets, so the rate follows the last ten thousand or
  so: over only two thousand, the sampling noise of a 1.2 % loss rate crossed
  the threshold dozens of times per 200,000 packets, each a CUBIC cut);
- a loss while that rate is at or below LOSS_THRESHOLD only takes the packets
  out of flight; above it, CUBIC's usual reduction applies;
- persistent congestion (everything lost for several probe timeouts) and
  slow-start exit are CUBIC's own.

A queue that overflows drops packets in bursts: the loss rate then rises above
the threshold within a round trip or two and the window comes down, so a
dattui transfer still yields on a congested link, settling at a loss rate of
about 2 % at worst (as BBRv2 does).

It is registered with aioquic's public `register_congestion_control` under
the name `NAME`.
"""

from __future__ import annotations

from collections.abc import Iterable

from aioquic.quic.congestion.base import register_congestion_control
from aioquic.quic.congestion.cubic import CubicCongestionControl
from aioquic.quic.packet_builder import QuicSentPacket

NAME = "dattui-cubic"
LOSS_THRESHOLD = 0.02
WINDOW = 8000  # packets; counts decay by half beyond this
MIN_SAMPLE = 200  # below this many packets seen, every loss counts as congestion


class LossTolerantCubic(CubicCongestionControl):
    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.acked = 0.0
        self.lost = 0.0
        self.tolerated_losses = 0
        self.congestion_events = 0

    @property
    def loss_rate(self) -> float:
        total = self.acked + self.lost
        return self.lost / total if total else 0.0

    def _decay(self) -> None:
        if self.acked + self.lost > WINDOW:
            self.acked /= 2
            self.lost /= 2

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        self.acked += 1
        self._decay()
        super().on_packet_acked(now=now, packet=packet)

    def on_packets_acked(self, packets: list[QuicSentPacket], now: float) -> None:
        """`on_packet_acked` for each of `packets` (all in flight), in order, with
        the same result: one ACK frame's packets share its clock and RTT, so the
        cubic curve is read once, not twice per packet (engine/transport/fastack.py)."""
        steady = None
        for packet in packets:
            self.acked += 1
            self._decay()
            cwnd = self.congestion_window
            if self.ssthresh is None or cwnd < self.ssthresh:  # slow start
                self.bytes_in_flight -= packet.sent_bytes
                self.last_ack = packet.sent_time
                self.congestion_window = cwnd + packet.sent_bytes
                continue
            if self._first_slow_start or self._starting_congestion_avoidance:
                # the epoch starts here: aioquic's own step
                CubicCongestionControl.on_packet_acked(self, now=now, packet=packet)
                continue
            if steady is None:  # the congestion-avoidance step of aioquic's CUBIC
                t = now - self._t_epoch
                steady = (self.W_cubic(t + self.rtt), self.W_cubic(t))
            w_cubic_ahead, w_cubic_now = steady
            self.bytes_in_flight -= packet.sent_bytes
            self.last_ack = packet.sent_time
            self._W_est = int(self._W_est
                              + self.additive_increase_factor * (packet.sent_bytes / cwnd))
            if w_cubic_ahead < cwnd:
                target = cwnd
            elif w_cubic_ahead > 1.5 * cwnd:
                target = int(cwnd * 1.5)
            else:
                target = w_cubic_ahead
            if w_cubic_now < self._W_est:  # Reno-friendly region
                self.congestion_window = self._W_est
            else:  # concave or convex: the same step
                self.congestion_window = int(
                    cwnd + ((target - cwnd) * (self._max_datagram_size / cwnd)))

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        packets = list(packets)
        self.lost += len(packets)
        self._decay()
        if self.acked + self.lost >= MIN_SAMPLE and self.loss_rate <= LOSS_THRESHOLD:
            for packet in packets:
                self.bytes_in_flight -= packet.sent_bytes
            self.tolerated_losses += len(packets)
            return
        before = getattr(self, "_congestion_recovery_start_time", None)
        super().on_packets_lost(now=now, packets=packets)
        if getattr(self, "_congestion_recovery_start_time", None) != before:
            self.congestion_events += 1


register_congestion_control(NAME, LossTolerantCubic)
