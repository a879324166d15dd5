"""ACK frames taken in one pass (engine/transport/fastack.py) leave a connection's
recovery, congestion window and stream sender exactly as aioquic's per-packet
loop does, over slow start, congestion avoidance, losses, gaps and other
delivery handlers."""

from __future__ import annotations

import random

from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicDeliveryState, QuicSentPacket
from aioquic.quic.rangeset import RangeSet
from aioquic.quic.recovery import QuicPacketRecovery, QuicPacketSpace
from aioquic.quic.stream import QuicStreamSender
from aioquic.tls import Epoch

from dattui.engine.transport import congestion
from dattui.engine.transport.bulkstream import BulkStreamSender
from dattui.engine.transport.fastack import FastAckRecovery

MDS = 1452


class Side:
    """One recovery with one 1-RTT space and one bulk stream sender."""

    def __init__(self, fast: bool) -> None:
        self.loss = QuicPacketRecovery(congestion_control_algorithm=congestion.NAME,
                                       initial_rtt=0.1, max_datagram_size=MDS,
                                       peer_completed_address_validation=True,
                                       send_probe=lambda: None)
        self.loss.handshake_confirmed = True
        if fast:
            assert FastAckRecovery.adopt(self.loss)
        self.space = QuicPacketSpace(is_application_data=True)
        self.loss.spaces = [self.space]
        self.sender = QuicStreamSender(stream_id=0, writable=True)
        assert BulkStreamSender.adopt(self.sender)
        self.sender.write(random.Random(5).randbytes(40 << 20))
        self.other: list = []  # what another delivery handler heard
        self.pn = 0

    def send(self, count: int, now: float, rng: random.Random) -> None:
        for _ in range(count):
            frame = self.sender.get_frame(rng.choice([1400, 1400, 1400, 700]))
            packet = QuicSentPacket(epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True,
                                    is_crypto_packet=False, packet_number=self.pn,
                                    packet_type=QuicPacketType.ONE_RTT, sent_time=now,
                                    sent_bytes=len(frame.data) + 40)
            if rng.random() < 0.05:  # a MAX_DATA or the like rides along
                packet.delivery_handlers.append((self._other, (self.pn,)))
            packet.delivery_handlers.append(
                (self.sender.on_data_delivery,
                 (frame.offset, frame.offset + len(frame.data), frame.fin)))
            if rng.random() < 0.03:  # an ACK-only packet: not in flight, not eliciting
                packet = QuicSentPacket(epoch=Epoch.ONE_RTT, in_flight=False,
                                        is_ack_eliciting=False, is_crypto_packet=False,
                                        packet_number=self.pn, packet_type=QuicPacketType.ONE_RTT,
                                        sent_time=now, sent_bytes=30)
                self.sender.on_data_delivery(QuicDeliveryState.LOST, frame.offset,
                                             frame.offset + len(frame.data), frame.fin)
            self.loss.on_packet_sent(packet=packet, space=self.space)
            self.pn += 1

    def _other(self, state, pn) -> None:
        self.other.append((state, pn))

    def ack(self, ranges: list[tuple[int, int]], now: float) -> None:
        rs = RangeSet()
        for start, stop in ranges:
            rs.add(start, stop)
        self.loss.on_ack_received(ack_rangeset=rs, ack_delay=0.0005, now=now, space=self.space)

    def state(self) -> tuple:
        cc = self.loss._cc
        s = self.sender
        return (cc.congestion_window, cc.bytes_in_flight, cc.ssthresh, cc._W_est, cc._W_max,
                cc.K, cc.last_ack, cc.acked, cc.lost, self.loss._rtt_smoothed,
                self.loss._rtt_variance, self.loss._pto_count, sorted(self.space.sent_packets),
                self.space.ack_eliciting_in_flight, self.space.largest_acked_packet,
                s._buffer_start, list(s._acked), list(s._pending), s.is_finished, self.other)


def _run(seed: int, rounds: int = 150, gap: float = 0.02, regions: set | None = None):
    rng = random.Random(seed)
    plain, fast = Side(False), Side(True)
    now = 1.0
    bulk_calls = 0
    for _ in range(rounds):
        burst = rng.randint(1, 300)
        for side in (plain, fast):
            side.send(burst, now, random.Random(now))
        now += rng.uniform(0.0005, gap)
        # acknowledge most of what is outstanding, with gaps now and then
        outstanding = sorted(plain.space.sent_packets)
        if outstanding:
            ranges, start = [], None
            for pn in outstanding:
                if rng.random() < 0.02:  # a hole (lost or still on its way)
                    if start is not None:
                        ranges.append((start, pn))
                        start = None
                    continue
                if start is None:
                    start = pn
            if start is not None and rng.random() < 0.9:
                ranges.append((start, outstanding[-1] + 1))
            if ranges:
                cc = plain.loss._cc
                if regions is not None and cc.ssthresh is not None \
                        and cc.congestion_window >= cc.ssthresh:
                    regions.add("reno" if cc.W_cubic(now - cc._t_epoch) < cc._W_est else "cubic")
                plain.ack(ranges, now)
                before = fast.loss._cc.acked
                fast.ack(ranges, now)
                bulk_calls += fast.loss._cc.acked - before > 1
        assert fast.state() == plain.state()
    return plain, fast, bulk_calls


def test_same_state_as_aiquics_loop_over_random_acks():
    regions = set()
    for seed, gap in [(0, 0.02), (1, 0.02), (2, 0.3), (3, 0.3)]:
        plain, fast, bulk = _run(seed, gap=gap, regions=regions)
        assert bulk > 50  # the one-pass path did the work
        assert plain.loss._cc.ssthresh is not None  # congestion avoidance was reached
        assert plain.other  # other handlers were called, in the same order
    assert regions == {"reno", "cubic"}  # both steps of congestion avoidance were taken


def test_only_aioquics_class_with_a_bulk_controller_is_adopted():
    reno = QuicPacketRecovery(congestion_control_algorithm="reno", initial_rtt=0.1,
                              max_datagram_size=MDS, peer_completed_address_validation=True,
                              send_probe=lambda: None)
    assert not FastAckRecovery.adopt(reno)  # aioquic's Reno takes packets one by one
    ours = QuicPacketRecovery(congestion_control_algorithm=congestion.NAME, initial_rtt=0.1,
                              max_datagram_size=MDS, peer_completed_address_validation=True,
                              send_probe=lambda: None)
    assert FastAckRecovery.adopt(ours)
    assert not FastAckRecovery.adopt(ours)  # already adopted: left alone
