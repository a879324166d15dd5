"""Leaner paths through aioquic for the packets of a bulk transfer.

Nearly every datagram of a transfer is one 1-RTT packet carrying one STREAM
frame (and now and then an ACK). aioquic handles each through its general
path, on both ends: a full header parse, a search of the connection ids and
network paths, a dispatch per frame through a table, a frame object; and to
send, a packet builder asked at every packet whether a handshake, a path
challenge, a connection id, a limit, a ping, a datagram is due.

Receiving: `DattuiConnection.receive_datagram` takes the packets that can only
mean one thing (short header, the connection's current id, the validated
primary path, an established connection, no qlog) straight to decryption. A
packet that is one STREAM frame carrying the next bytes of an open stream is
taken whole, and the bytes of consecutive such packets go out as one
StreamDataReceived event (joined when the event is taken); the frames of any
other packet go through aioquic's handlers.
Sending: when nothing but one stream's data is due, `_write_application`
writes each packet in one piece (header, STREAM frame, encryption) into the
builder's output and registers it for recovery at once, spending the pacer's
bucket as aioquic's pacer would; whenever anything else is due it is
aioquic's own. (The ACKs that come back: engine/transport/fastack.py.)
What both do to the connection's state is what aioquic's path does, step for
step (tests/test_fastconn.py runs the same transfers through both and
compares every datagram size both ways and every delivered byte).

It reads and writes aioquic 1.7 private fields. The endpoint uses it only where
engine/transport/aioquic_compat.py has found the aioquic in use to be one it
was verified on and to behave as it expects (a short transfer in memory, this
class against plain `QuicConnection`); `supported()` checks each connection's
fields besides, and the endpoint uses plain `QuicConnection` when they are not
there.
"""

from __future__ import annotations

import dataclasses
import functools

from aioquic import tls
from aioquic.buffer import Buffer, BufferReadError, size_uint_var
from aioquic.quic import events
from aioquic.quic.congestion.cubic import CubicCongestionControl
from aioquic.quic.connection import (
    QuicConnection,
    QuicConnectionError,
    QuicConnectionState,
    QuicReceiveContext,
)
from aioquic.quic.crypto import CryptoError
from aioquic.quic.packet import (
    NON_ACK_ELICITING_FRAME_TYPES,
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
)
from aioquic.quic.packet_builder import QuicPacketBuilder, QuicSentPacket
from aioquic.quic import recovery as _recovery
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import (
    QuicStreamReceiver,
    QuicStreamSender,
    StreamFinishedError,
)

from . import shortcrypto
from .bulkstream import BulkStreamSender

ONE_RTT = tls.Epoch.ONE_RTT
ONE_RTT_PACKET = QuicPacketType.ONE_RTT
ZERO_RTT = tls.Epoch.ZERO_RTT
CONNECTED = QuicConnectionState.CONNECTED
StreamDataReceived = events.StreamDataReceived
_VARINT_MASK = {1: 0x3F, 2: 0x3FFF, 4: 0x3FFFFFFF, 8: 0x3FFFFFFFFFFFFFFF}
# the ACK ranges aioquic 1.7 keeps (older ones have no such constant: importing
# the engine must not fail there, the fast path is off)
MAX_ACK_RANGES = getattr(_recovery, "MAX_ACK_RANGES", None)

_CONNECTION_FIELDS = (
    "_state", "_quic_logger", "_close_pending", "_handshake_complete", "_network_paths",
    "_cryptos", "_spaces", "_is_client", "_spin_highest_pn", "_spin_bit", "_streams",
    "_local_max_data", "_events", "_close_at", "_ack_eliciting_sent_since_receipt",
    "_ack_delay", "_configuration", "host_cid", "_QuicConnection__frame_handlers",
    "_crypto_streams", "_handshake_done_pending", "_host_cids", "_retire_connection_ids",
    "_streams_blocked_pending", "_ping_pending", "_probe_pending", "_datagrams_pending",
    "_local_max_streams_bidi", "_local_max_streams_uni", "_streams_queue", "_loss",
    "_remote_max_data", "_remote_max_data_used", "_pacing_at",
)
_BUILDER_FIELDS = (
    "_quic_logger", "_packet", "_buffer", "_datagram_needs_padding", "max_total_bytes",
    "max_flight_bytes", "_datagram_init", "_buffer_capacity", "_flight_capacity",
    "_flight_bytes", "_datagram_flight_bytes", "_peer_cid", "_spin_bit", "_packet_number",
    "_packets", "_datagrams", "_total_bytes",
)
_SENT_PACKET_FIELDS = (  # made positionally on the fast send path
    "epoch", "in_flight", "is_ack_eliciting", "is_crypto_packet", "packet_number", "packet_type",
    "sent_time", "sent_bytes", "delivery_handlers", "quic_logger_frames",
)
_RECEIVER_FIELDS = ("_buffer", "_buffer_start", "_final_size", "highest_offset", "is_finished",
                    "_stream_id")


def supported(conn: QuicConnection) -> bool:
    """The private fields the fast paths touch exist on this aioquic."""
    return all(hasattr(conn, name) for name in _CONNECTION_FIELDS) and _aioquic_fits()


@functools.cache
def _aioquic_fits() -> bool:
    """What does not change per connection: checked once per process."""
    builder = QuicPacketBuilder(host_cid=b"", peer_cid=b"", version=1, is_client=True,
                                max_datagram_size=1200)
    receiver = QuicStreamReceiver(stream_id=0, readable=True)
    window = getattr(QuicPacketSpace(), "received_packets", None)
    return MAX_ACK_RANGES is not None \
        and all(hasattr(builder, name) for name in _BUILDER_FIELDS) \
        and all(hasattr(receiver, name) for name in _RECEIVER_FIELDS) \
        and hasattr(window, "_lower") and hasattr(window, "_received") \
        and [f.name for f in dataclasses.fields(QuicSentPacket)] == list(_SENT_PACKET_FIELDS) \
        and all(hasattr(QuicConnection, name) for name in (
            "_idle_timeout", "_write_application"))


class DattuiConnection(QuicConnection):
    # bound per connection on first use (the 1-RTT space and key pair live as long
    # as the connection; the keys are re-bound when the AEAD object changes)
    _fast_space = None
    _fast_pair = None
    _rx_aead = None
    _rx_open = None
    _tx_aead = None
    _tx_seal = None
    _zero_rtt_gone = False
    _idle_now = None
    _idle = 0.0
    # the StreamDataReceived event the in-order fast path is still adding to
    _rx_event = None
    _rx_pieces = None

    def receive_datagram(self, data: bytes, addr, now: float) -> None:
        cid_end = 1 + self._configuration.connection_id_length
        if (data and (data[0] & 0xC0) == 0x40 and self._state is CONNECTED
                and self._handshake_complete and self._quic_logger is None
                and not self._close_pending and data[1:cid_end] == self.host_cid):
            paths = self._network_paths
            if paths and paths[0].addr == addr and paths[0].is_validated:
                self._receive_one_rtt(data, cid_end, paths[0], now)
                return
        super().receive_datagram(data, addr, now)

    def next_event(self):
        event = super().next_event()
        if event is not None and event is self._rx_event:
            self._take_pieces(event)
        return event

    def _bind_one_rtt(self):
        """The 1-RTT packet space and key pair, made once by aioquic and kept for
        the connection's life (a key update changes the pair's contexts in place)."""
        self._fast_pair = self._cryptos[ONE_RTT]
        self._fast_space = self._spaces[ONE_RTT]
        return self._fast_space

    # ---- the fast path ------------------------------------------------------------
    def _receive_one_rtt(self, data: bytes, pn_offset: int, path, now: float) -> None:
        space = self._fast_space or self._bind_one_rtt()
        crypto = self._fast_pair
        ctx = crypto.recv
        try:
            if ctx.aead is not self._rx_aead:
                self._rx_aead = ctx.aead
                self._rx_open = shortcrypto.opener(ctx)
            opened = None
            if self._rx_open is not None:
                opened = self._rx_open(data, pn_offset, space.expected_packet_number)
            if opened is None:  # another suite, or a key update: aioquic's
                opened = crypto.decrypt_packet(data, pn_offset, space.expected_packet_number)
        except CryptoError:
            return  # undecryptable: dropped, as aioquic drops it
        plain_header, payload, pn = opened
        window = space.received_packets  # aioquic's QuicPacketNumberWindow, its test inline
        if pn < window._lower or pn in window._received:
            return  # duplicate (RFC 9000 section 12.3)
        first = plain_header[0]
        if first & 0x18:
            self.close(error_code=QuicErrorCode.PROTOCOL_VIOLATION,
                       frame_type=QuicFrameType.PADDING, reason_phrase="Reserved bits must be zero")
            return
        if pn > space.expected_packet_number:
            space.expected_packet_number = pn + 1
        if not self._is_client and not self._zero_rtt_gone:
            zero_rtt = self._cryptos[ZERO_RTT].recv
            if zero_rtt.is_valid():
                zero_rtt.teardown()
            self._zero_rtt_gone = True  # nothing sets 0-RTT keys up again
        if pn > self._spin_highest_pn:
            spin = bool(first & 0x20)
            self._spin_bit = (not spin) if self._is_client else spin
            self._spin_highest_pn = pn

        if self._in_order_stream_frame(payload):
            is_ack_eliciting = True
        else:
            try:
                is_ack_eliciting = self._frames(path, now, payload)
            except QuicConnectionError as exc:
                self._logger.warning(exc)
                self.close(error_code=exc.error_code, frame_type=exc.frame_type,
                           reason_phrase=exc.reason_phrase)
                is_ack_eliciting = False
        self._after_frames(space, pn, now, is_ack_eliciting)

    def _after_frames(self, space, pn: int, now: float, is_ack_eliciting: bool) -> None:
        """What aioquic does after a 1-RTT packet's frames: the idle timer, and
        the packet number into the ACK ranges."""
        if self._state is not CONNECTED or self._close_pending:  # closed by a frame
            return
        if now != self._idle_now:  # max(idle timeout, 3 PTO): the same within a read batch
            self._idle_now = now
            self._idle = self._idle_timeout()
        self._close_at = now + self._idle
        self._ack_eliciting_sent_since_receipt = False
        # same connection id, validated primary path: nothing to migrate or promote
        if not space.discarded:
            if pn > space.largest_received_packet:
                space.largest_received_packet = pn
                space.largest_received_time = now
            ranges = space.ack_queue._RangeSet__ranges
            if ranges and ranges[-1].stop == pn:  # the next packet in order
                ranges[-1] = range(ranges[-1].start, pn + 1)
            elif not ranges or ranges[-1].stop < pn:  # after a gap
                ranges.append(range(pn, pn + 1))
            else:  # late (reordered): aioquic's search through the ranges
                space.ack_queue.add(pn)
            space.received_packets.add(pn)
            if len(ranges) > MAX_ACK_RANGES:
                space.ack_queue.shift()
            if is_ack_eliciting and space.ack_at is None:
                space.ack_at = now + self._ack_delay

    def _in_order_stream_frame(self, payload: bytes) -> bool:
        """The packet is one STREAM frame (to its end) carrying the next bytes of an
        open bidirectional stream with nothing waiting: taken here, True. Anything
        else (another frame, a gap, a FIN, a limit crossed, a malformed frame) is
        left untouched for `_frames`: False."""
        size = len(payload)
        if size < 3:
            return False
        frame_type = payload[0]
        stream_id = payload[1]
        if frame_type & 0xF9 != 0x08 or stream_id & 0xC2:  # not STREAM, FIN, 2-byte id, uni
            return False
        pos = 2
        if frame_type & 4:
            n = 1 << (payload[2] >> 6)
            if 2 + n > size:
                return False
            offset = int.from_bytes(payload[2:2 + n], "big") & _VARINT_MASK[n]
            pos = 2 + n
        else:
            offset = 0
        if frame_type & 2:
            if pos >= size:
                return False
            n = 1 << (payload[pos] >> 6)
            length = int.from_bytes(payload[pos:pos + n], "big") & _VARINT_MASK[n]
            pos += n
            if pos + length != size:
                return False  # more frames follow (or it is malformed): aioquic's loop
        else:
            length = size - pos
        stream = self._streams.get(stream_id)
        if stream is None or not length:
            return False
        receiver = stream.receiver
        end = offset + length
        limit = self._local_max_data
        if (offset != receiver._buffer_start or receiver._buffer or receiver.is_finished
                or receiver._final_size is not None or end > stream.max_stream_data_local
                or limit.used + end - receiver.highest_offset > limit.value):
            return False
        if end > receiver.highest_offset:
            limit.used += end - receiver.highest_offset
            receiver.highest_offset = end
        receiver._buffer_start = end
        data = payload[pos:]
        events = self._events
        event = self._rx_event
        if event is not None and events and events[-1] is event and event.stream_id == stream_id:
            self._rx_pieces.append(data)
        else:
            if event is not None:  # still queued behind other events: complete it
                self._take_pieces(event)
            event = StreamDataReceived(data=b"", end_stream=False, stream_id=stream_id)
            events.append(event)
            self._rx_event = event
            self._rx_pieces = [data]
        return True

    def _take_pieces(self, event) -> None:
        pieces = self._rx_pieces
        event.data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._rx_event = self._rx_pieces = None

    def _frames(self, path, now: float, plain: bytes) -> bool:
        """aioquic's `_payload_received` for a 1-RTT packet that is not one in-order
        STREAM frame: every frame through aioquic's handlers. Returns whether the
        packet was ack-eliciting."""
        context = None  # made when a frame goes to aioquic's handlers
        buf = Buffer(data=plain)
        handlers = self._QuicConnection__frame_handlers
        found = False
        is_ack_eliciting = False
        while not buf.eof():
            try:
                frame_type = buf.pull_uint_var()
            except BufferReadError:
                raise QuicConnectionError(error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                                          frame_type=None, reason_phrase="Malformed frame type")
            found = True
            try:
                handler, epochs = handlers[frame_type]
            except KeyError:
                raise QuicConnectionError(error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                                          frame_type=frame_type,
                                          reason_phrase="Unknown frame type")
            if ONE_RTT not in epochs:
                raise QuicConnectionError(error_code=QuicErrorCode.PROTOCOL_VIOLATION,
                                          frame_type=frame_type,
                                          reason_phrase="Unexpected frame type")
            if context is None:
                context = QuicReceiveContext(epoch=ONE_RTT, host_cid=self.host_cid,
                                             network_path=path, quic_logger_frames=None,
                                             time=now, version=None)
            try:
                handler(context, frame_type, buf)
            except BufferReadError:
                raise QuicConnectionError(error_code=QuicErrorCode.FRAME_ENCODING_ERROR,
                                          frame_type=frame_type,
                                          reason_phrase="Failed to parse frame")
            except StreamFinishedError:
                pass
            if frame_type not in NON_ACK_ELICITING_FRAME_TYPES:
                is_ack_eliciting = True
        if not found:
            raise QuicConnectionError(error_code=QuicErrorCode.PROTOCOL_VIOLATION,
                                      frame_type=QuicFrameType.PADDING,
                                      reason_phrase="Packet contains no frames")
        return is_ack_eliciting

    # ---- sending --------------------------------------------------------------------
    def _write_application(self, builder, network_path, now: float) -> None:
        stream = self._bulk_stream(builder, network_path, now)
        if stream is None:
            super()._write_application(builder, network_path, now)
            return
        space = self._fast_space or self._bind_one_rtt()
        crypto = self._fast_pair
        if crypto.send.aead is not self._tx_aead:
            self._tx_aead = crypto.send.aead
            self._tx_seal = shortcrypto.sealer(crypto.send)
        seal = self._tx_seal
        sender = stream.sender
        peer_cid = builder._peer_cid
        header_size = 3 + len(peer_cid)
        if seal is None or type(sender) is not BulkStreamSender \
                or header_size >= builder._buffer_capacity:
            super()._write_application(builder, network_path, now)
            return
        take = sender.take
        on_delivery = sender.on_data_delivery
        stream_id = stream.stream_id
        id_size = size_uint_var(stream_id)
        first_byte = 0x40 | (builder._spin_bit << 5) | (crypto.key_phase << 2) | 0x01
        frame_head = Buffer(capacity=32)
        datagrams = builder._datagrams
        pn = builder._packet_number
        # the packets are registered as they are made (aioquic registers them in
        # `_flush_builder`, which then finds none of them in the builder)
        sent_packets = space.sent_packets
        loss = self._loss
        cc = loss._cc
        on_sent = cc.on_packet_sent
        # CUBIC's on_packet_sent adds to bytes in flight and resets the window
        # after an idle spell, judged by the packet's send time: all of these go
        # at `now`, so the first packet's call decides for all of them
        cubic_sent = type(cc).on_packet_sent is CubicCongestionControl.on_packet_sent
        arms_pto = loss.handshake_confirmed or not space.is_application_data
        # the pacer's bucket, spent here packet by packet as `next_send_time` and
        # `update_after_send` would (the clock does not move within this call)
        pacer = loss._pacer
        packet_time = pacer.packet_time
        if packet_time is not None:
            pacer.update_bucket(now=now)
        bucket = pacer.bucket_time
        buffer_capacity = builder._buffer_capacity
        max_flight = builder.max_flight_bytes
        flight_bytes = builder._flight_bytes
        count = 0
        try:
            while True:
                if packet_time is not None and bucket <= 0:
                    self._pacing_at = now + packet_time
                    break
                self._pacing_at = None
                # a new datagram (as aioquic's `_flush_current_datagram` leaves it)
                capacity = buffer_capacity
                if max_flight is not None and max_flight - flight_bytes < capacity:
                    capacity = max_flight - flight_bytes
                if stream.is_blocked or sender.buffer_is_empty:
                    break
                highest = sender.highest_offset
                piece = take(capacity - header_size - 16 - 3 - id_size,
                             min(highest + self._remote_max_data - self._remote_max_data_used,
                                 stream.max_stream_data_remote))
                if piece is None:
                    break  # an empty packet: aioquic stops here too
                data, offset, fin = piece
                frame_head.seek(0)
                frame_head.push_uint_var(0x0A | (4 if offset else 0) | fin)
                frame_head.push_uint_var(stream_id)
                if offset:
                    frame_head.push_uint_var(offset)
                frame_head.push_uint16(len(data) | 0x4000)
                datagram = seal(first_byte, peer_cid, pn, frame_head.data + data)
                size = len(datagram)
                packet = QuicSentPacket(ONE_RTT, True, True, False, pn, ONE_RTT_PACKET, now, size,
                                        [(on_delivery, (offset, offset + len(data), bool(fin)))],
                                        [])
                datagrams.append(datagram)
                flight_bytes += size
                builder._total_bytes += size
                pn += 1
                self._remote_max_data_used += sender.highest_offset - highest
                sent_packets[packet.packet_number] = packet
                if count and cubic_sent:
                    cc.bytes_in_flight += size
                else:
                    on_sent(packet=packet)
                count += 1
                if packet_time is not None:
                    bucket = 0.0 if bucket < packet_time else bucket - packet_time
        finally:
            builder._packet_number = pn
            builder._flight_bytes = flight_bytes
            pacer.bucket_time = bucket
            if count:
                space.ack_eliciting_in_flight += count
                if arms_pto:
                    loss._time_of_last_sent_ack_eliciting_packet = now
                # the first ack-eliciting packet since one was received restarts
                # the idle timer (RFC 9000 section 10.1), as in `_flush_builder`
                if not self._ack_eliciting_sent_since_receipt:
                    self._close_at = now + self._idle_timeout()
                    self._ack_eliciting_sent_since_receipt = True

    def datagrams_to_send(self, now: float):
        # A receiver is asked after every read batch and mostly has nothing to say
        # (its ACK waits for the ACK delay); aioquic would build an empty packet to
        # find that out. What aioquic's call would leave behind: the pacing time.
        if (self._state is CONNECTED and self._handshake_confirmed and not self._close_pending
                and self._quic_logger is None and len(self._network_paths) == 1
                and (not self._is_client or self._remote_preferred_address is None)
                and self._quiet(self._network_paths[0], now)
                and not any(_has_something(s) for s in self._streams_queue)):
            self._pacing_at = self._loss._pacer.next_send_time(now=now)
            return []
        return super().datagrams_to_send(now)

    def _quiet(self, network_path, now: float) -> bool:
        """Nothing but stream data can be due on the 1-RTT space now: no ACK, no
        limit to raise, no challenge, connection id, ping, probe, datagram, key
        update or crypto data (whatever aioquic might write first or alone)."""
        if not (self._handshake_complete and network_path.is_validated
                and not self._handshake_done_pending and not network_path.remote_challenges
                and not self._retire_connection_ids and not self._streams_blocked_pending
                and not self._ping_pending and not self._probe_pending
                and not self._datagrams_pending):
            return False
        space = self._fast_space or self._bind_one_rtt()
        if space.ack_at is not None and space.ack_at <= now:
            return False  # an ACK goes in the first packet: aioquic's
        crypto = self._fast_pair
        if not crypto.send.is_valid() or crypto._update_key_requested:
            return False
        if not self._crypto_streams[ONE_RTT].sender.buffer_is_empty:
            return False
        if not all(cid.was_sent for cid in self._host_cids):
            return False
        max_data = self._local_max_data
        if max_data.used * 2 > max_data.value:
            return False
        for limit in (max_data, self._local_max_streams_bidi, self._local_max_streams_uni):
            if limit.value != limit.sent:
                return False
        for s in self._streams.values():
            local = s.max_stream_data_local
            if (local and s.receiver.highest_offset * 2 > local) \
                    or s.max_stream_data_local_sent != local:
                return False
        return True

    def _bulk_stream(self, builder, network_path, now: float):
        """The one stream whose data is all there is to send now, or None when
        anything else is due (then aioquic writes the packets)."""
        if not (builder._quic_logger is None and builder._packet is None
                and builder._buffer.tell() == 0 and not builder._datagram_needs_padding
                and builder.max_total_bytes is None and len(self._streams_queue) == 1
                and self._quiet(network_path, now)):
            return None
        stream = self._streams_queue[0]
        if type(stream.sender) is QuicStreamSender:
            BulkStreamSender.adopt(stream.sender)
        if (stream.is_finished or stream.receiver.stop_pending or stream.sender.reset_pending
                or stream.is_blocked or stream.sender.buffer_is_empty):
            return None
        return stream


def _has_something(stream) -> bool:
    """aioquic's `_write_application` would write for this stream (or drop it)."""
    return (stream.is_finished or stream.receiver.stop_pending or stream.sender.reset_pending
            or not (stream.is_blocked or stream.sender.buffer_is_empty))
