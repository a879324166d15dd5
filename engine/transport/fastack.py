"""One pass over the packets an ACK frame acknowledges.

aioquic's `QuicPacketRecovery.on_ack_received` visits every newly
acknowledged packet and, for each, asks the congestion controller to grow the
window (CUBIC reads its curve twice per packet) and calls the packet's
delivery handlers (the stream sender, once per packet). A bulk transfer's ACK
frame acknowledges about a hundred packets at a time. `FastAckRecovery` takes
all of them but the last out of flight itself: the window grows in one call
(`LossTolerantCubic.on_packets_acked`, same arithmetic) and the stream sender
hears of each run of consecutive bytes once. The last packet is left for
aioquic's own `on_ack_received`, which then does what follows the loop as it
always does: the RTT sample (taken from the largest packet newly acknowledged,
which is that one), loss detection, the probe timer.

The order of everything is aioquic's (packets by number; the window before
the sender hears; handlers in the packets' order), and the result the same
(tests/test_fastack.py checks state after random ACKs against aioquic's).
"""

from __future__ import annotations

from bisect import bisect_left

from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.recovery import QuicPacketRecovery

from .bulkstream import BulkStreamSender

ACKED = QuicDeliveryState.ACKED
_BULK_DELIVERY = BulkStreamSender.on_data_delivery


class FastAckRecovery(QuicPacketRecovery):
    @classmethod
    def adopt(cls, recovery) -> bool:
        """Turn a connection's aioquic recovery into this one (same object), when
        it is exactly the class this was written for and its controller can take
        packets in bulk."""
        if type(recovery) is not QuicPacketRecovery or not hasattr(
                getattr(recovery, "_cc", None), "on_packets_acked"):
            return False
        recovery.__class__ = cls
        return True

    def on_ack_received(self, *, ack_rangeset, ack_delay: float, now: float, space) -> None:
        sent = space.sent_packets
        if len(sent) > 2:
            numbers = list(sent)
            acked: list[int] = []
            for r in ack_rangeset:
                acked += numbers[bisect_left(numbers, r.start):bisect_left(numbers, r.stop)]
            # the last one (the largest newly acknowledged: the RTT sample) stays
            # for aioquic, which must find it ack-eliciting as the others would
            if len(acked) > 2 and sent[acked[-1]].is_ack_eliciting:
                self._take(acked[:-1], sent, space, now)
        super().on_ack_received(ack_rangeset=ack_rangeset, ack_delay=ack_delay, now=now,
                                space=space)

    def _take(self, numbers: list[int], sent: dict, space, now: float) -> None:
        in_flight = []
        calls: list = []  # (handler, args), runs of one bulk sender's bytes merged
        run = None  # [sender, start, stop, fin] of the run being merged
        for number in numbers:
            packet = sent.pop(number)
            if packet.is_ack_eliciting:
                space.ack_eliciting_in_flight -= 1
            if packet.in_flight:
                in_flight.append(packet)
            for handler, args in packet.delivery_handlers:
                if getattr(handler, "__func__", None) is _BULK_DELIVERY:
                    owner = handler.__self__
                    if run is not None and run[0] is owner and run[2] == args[0] and not run[3]:
                        run[2], run[3] = args[1], args[2]
                        continue
                    run = [owner, *args]
                    calls.append(run)
                else:
                    run = None
                    calls.append((handler, args))
        if in_flight:
            self._cc.on_packets_acked(in_flight, now)
        for call in calls:
            if type(call) is list:
                owner, start, stop, fin = call
                owner.on_data_delivery(ACKED, start, stop, fin)
            else:
                call[0](ACKED, *call[1])
