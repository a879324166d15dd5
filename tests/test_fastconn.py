"""The fast 1-RTT receive path (engine/transport/fastconn.py) against aioquic's own.

Two in-process connections on a fake clock: with the same sender, the same
losses, duplicates and reordering, a receiver on the fast path must produce
exactly what a plain aioquic receiver produces (every datagram size both ways,
every delivered byte, every state change that shows on the wire)."""

from __future__ import annotations

import os
import random
import ssl

import pytest
from aioquic import tls
from aioquic.buffer import Buffer, size_uint_var
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet import QuicErrorCode, pull_quic_header
from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.stream import QuicStreamSender

from dattui.engine.transport import aioquic_compat, congestion, fastconn
from dattui.engine.transport.bulkstream import BulkStreamSender
from dattui.engine.transport.fastack import FastAckRecovery
from dattui.engine.transport.identity import NodeIdentity
from dattui.engine.transport.quic import QuicEndpoint

A = ("10.0.0.1", 1000)  # the sender (server)
B = ("10.0.0.2", 2000)  # the receiver (client)
IDENTITY = NodeIdentity(bytes(range(32)))


def config(client: bool, window: int = 4 << 20) -> QuicConfiguration:
    c = QuicConfiguration(is_client=client, alpn_protocols=["dattui/1"], connection_id_length=8,
                          congestion_control_algorithm=congestion.NAME, max_datagram_size=1452,
                          max_data=window, max_stream_data=window, idle_timeout=30)
    c.certificate = IDENTITY.certificate()
    c.private_key = IDENTITY.private_key()
    c.verify_mode = ssl.CERT_NONE
    return c


class Pair:
    """A receiver (client, `cls`) and a sender (server, `tx_cls`) on a fake clock."""

    def __init__(self, cls, seed: int = 1, tx_cls=QuicConnection, loss: float = 0.0, dup: float = 0.0,
                 reorder: bool = False, window: int = 4 << 20, bulk_sender: bool = False) -> None:
        self.now = 1000.0
        self.rng = random.Random(seed)
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.trace: list = []
        self.got = bytearray()
        self.bulk_sender = bulk_sender
        self.rx = cls(configuration=config(True, window))
        self.rx.connect(A, now=self.now)
        first = [d for d, _ in self.rx.datagrams_to_send(now=self.now)]
        cid = pull_quic_header(Buffer(data=first[0]), host_cid_length=8).destination_cid
        self.tx = tx_cls(configuration=config(False, window),
                                 original_destination_connection_id=cid)
        for conn in (self.rx, self.tx):  # the fast ACK pass goes with the fast paths
            if isinstance(conn, fastconn.DattuiConnection):
                assert FastAckRecovery.adopt(conn._loss)
        for d in first:
            self.tx.receive_datagram(d, B, now=self.now)
        for _ in range(6):
            self.step(deliver_loss=False)
        assert self.rx._state == QuicConnectionState.CONNECTED
        self.sid = self.tx.get_next_available_stream_id()

    def _perturb(self, datagrams: list[bytes], lossy: bool) -> list[bytes]:
        out = []
        for d in datagrams:
            if lossy and self.rng.random() < self.loss:
                continue
            out.append(d)
            if lossy and self.rng.random() < self.dup:
                out.append(d)
        if lossy and self.reorder:
            for i in range(0, len(out) - 1, 2):
                if self.rng.random() < 0.3:
                    out[i], out[i + 1] = out[i + 1], out[i]
        return out

    def step(self, deliver_loss: bool = True) -> None:
        self.now += 0.002
        for conn in (self.tx, self.rx):
            at = conn.get_timer()
            if at is not None and at <= self.now:
                conn.handle_timer(self.now)
        down = [d for d, _ in self.tx.datagrams_to_send(now=self.now)]
        self.trace.append(("down", [len(d) for d in down]))
        for d in self._perturb(down, deliver_loss):
            self.rx.receive_datagram(d, A, now=self.now)
        while (ev := self.rx.next_event()) is not None:
            if isinstance(ev, qe.StreamDataReceived):
                self.got += ev.data
                last = self.trace[-1]
                if last[0] == "data" and not last[2]:
                    # the fast path hands a read batch's in-order bytes over as one
                    # event; what counts is the bytes and where they end
                    self.trace[-1] = ("data", last[1] + len(ev.data), ev.end_stream)
                    continue
            self.trace.append(("event", type(ev).__name__))
            if isinstance(ev, qe.StreamDataReceived):
                self.trace.append(("data", len(ev.data), ev.end_stream))
        up = [d for d, _ in self.rx.datagrams_to_send(now=self.now)]
        self.trace.append(("up", [len(d) for d in up]))
        for d in self._perturb(up, deliver_loss):
            self.tx.receive_datagram(d, B, now=self.now)
        while self.tx.next_event() is not None:
            pass

    def send(self, data: bytes, end: bool = False) -> None:
        first = self.sid not in self.tx._streams
        self.tx.send_stream_data(self.sid, data, end_stream=end)
        if first and self.bulk_sender:
            assert BulkStreamSender.adopt(self.tx._streams[self.sid].sender)

    def run(self, payload: bytes, steps: int = 4000, chunk: int = 256 * 1024) -> None:
        for i in range(0, len(payload), chunk):
            self.send(payload[i:i + chunk], end=i + chunk >= len(payload))
        for _ in range(steps):
            self.step()
            if len(self.got) >= len(payload) and not len(self.tx._streams[self.sid].sender._pending):
                break


PAYLOAD = random.Random(7).randbytes(3 << 20)


def test_fast_path_is_what_the_endpoint_uses():
    conn = QuicEndpoint._connection(config(True))
    if not aioquic_compat.enabled("fastconn"):  # DATTUI_FAST_PATH=0, another aioquic
        assert type(conn) is QuicConnection
        pytest.skip(aioquic_compat.status().describe())
    assert type(conn) is fastconn.DattuiConnection
    assert fastconn.supported(conn)
    assert type(conn._loss) is FastAckRecovery


def test_take_is_get_frame_without_the_frame():
    rng = random.Random(9)
    for _ in range(200):
        a, b = (QuicStreamSender(stream_id=0, writable=True) for _ in range(2))
        end = rng.random() < 0.5
        BulkStreamSender.adopt(b)  # a stays aioquic's own
        for s in (a, b):
            s.write(PAYLOAD[:50000], end_stream=end)
        for _ in range(rng.randint(0, 5)):  # some sent, some lost again: gaps in pending
            size, lose = rng.randrange(1, 3000), rng.random() < 0.5
            for s in (a, b):
                frame = s.get_frame(size)
                if frame is not None and lose:
                    s.on_data_delivery(QuicDeliveryState.LOST, frame.offset,
                                       frame.offset + len(frame.data), frame.fin)
        while True:
            size, limit = rng.choice([-1, 0, 5, 1400, 1400]), rng.choice([10**9, 30000, 0])
            room = size + (size_uint_var(a.next_offset) if a.next_offset else 0)
            frame = a.get_frame(size, limit)
            piece = b.take(room, limit)
            if frame is None:
                assert piece is None
            else:
                assert piece == (frame.data, frame.offset, int(frame.fin))
            assert (list(a._pending), a.highest_offset, a._pending_eof, a.buffer_is_empty) \
                == (list(b._pending), b.highest_offset, b._pending_eof, b.buffer_is_empty)
            if a.buffer_is_empty or (frame is None and size > 0 and limit > 50000):
                break


@pytest.mark.parametrize("loss,dup,reorder", [(0.0, 0.0, False), (0.03, 0.03, True)])
def test_same_trace_as_aioquic(loss, dup, reorder, monkeypatch):
    built = []  # datagrams_to_send calls of the fast receiver that built packets
    inner_send = QuicConnection.datagrams_to_send

    def counted_send(self, now):
        built.append(self)
        return inner_send(self, now)
    monkeypatch.setattr(QuicConnection, "datagrams_to_send", counted_send)
    plain = Pair(QuicConnection, loss=loss, dup=dup, reorder=reorder)
    plain.run(PAYLOAD)
    fast = Pair(fastconn.DattuiConnection, loss=loss, dup=dup, reorder=reorder,
                tx_cls=fastconn.DattuiConnection)
    calls = 0
    inner = fast.rx._receive_one_rtt

    def counted(*a):
        nonlocal calls
        calls += 1
        return inner(*a)
    fast.rx._receive_one_rtt = counted
    bulk_writes = 0
    inner_bulk = fast.tx._bulk_stream

    def counted_bulk(*a):
        nonlocal bulk_writes
        stream = inner_bulk(*a)
        bulk_writes += stream is not None
        return stream
    fast.tx._bulk_stream = counted_bulk
    fast.run(PAYLOAD)
    assert bytes(plain.got) == PAYLOAD
    assert bytes(fast.got) == PAYLOAD
    assert fast.trace == plain.trace
    assert calls > len(PAYLOAD) // 1452  # the bulk of the packets took the fast path
    assert bulk_writes > 100  # and were written by it
    steps = sum(1 for entry in fast.trace if entry[0] == "up")
    idle = steps - sum(1 for conn in built if conn is fast.rx)
    assert idle > steps // 3  # the receiver's many calls with nothing to send built nothing
    assert fast.rx._local_max_data.used == plain.rx._local_max_data.used == len(PAYLOAD)


def test_key_update_mid_transfer():
    pairs = []
    for cls in (QuicConnection, fastconn.DattuiConnection):
        p = Pair(cls, seed=3, tx_cls=cls)
        p.send(PAYLOAD[:1 << 20])
        for _ in range(40):
            p.step()
        p.tx.request_key_update()
        p.send(PAYLOAD[1 << 20:], end=True)
        for _ in range(3000):
            p.step()
            if len(p.got) == len(PAYLOAD):
                break
        pairs.append(p)
    assert bytes(pairs[1].got) == PAYLOAD
    assert pairs[1].rx._cryptos[tls.Epoch.ONE_RTT].recv.key_phase == 1  # the receiver followed the update
    assert pairs[1].trace == pairs[0].trace


def test_bulk_stream_sender_sends_the_same_bytes():
    plain = Pair(QuicConnection, loss=0.02, reorder=True, seed=5)
    plain.run(PAYLOAD)
    bulk = Pair(QuicConnection, loss=0.02, reorder=True, seed=5, bulk_sender=True)
    bulk.run(PAYLOAD)
    for p in (plain, bulk):
        for _ in range(20):
            p.step()  # the last acknowledgements
    assert bytes(bulk.got) == PAYLOAD
    assert bulk.trace == plain.trace
    sender = bulk.tx._streams[bulk.sid].sender
    assert type(sender) is BulkStreamSender
    assert sender.is_finished
    assert len(sender._buffer) < len(PAYLOAD) // 2  # acknowledged bytes were dropped along the way


def _overrun(cls, level: str) -> QuicConnection:
    """The sender goes past the receiver's flow-control limit, as a hostile peer
    would: the limit is lowered under a running transfer, the sender not told."""
    p = Pair(cls, tx_cls=cls)
    p.send(PAYLOAD[:2 << 20])
    for _ in range(20):
        p.step()
    if level == "connection":
        p.rx._local_max_data.value = p.rx._local_max_data.used + 3000
    else:
        stream = p.rx._streams[p.sid]
        stream.max_stream_data_local = stream.receiver.highest_offset + 3000
    for _ in range(3):
        p.step()
    return p.rx


@pytest.mark.parametrize("level", ["connection", "stream"])
def test_flow_control_violation_closes_like_aioquic(level):
    plain = _overrun(QuicConnection, level)
    fast = _overrun(fastconn.DattuiConnection, level)
    assert plain._close_event is not None
    assert fast._close_event is not None
    assert fast._close_event.error_code == plain._close_event.error_code \
        == QuicErrorCode.FLOW_CONTROL_ERROR
    assert fast._close_event.reason_phrase == plain._close_event.reason_phrase


def test_forged_and_truncated_packets_are_dropped():
    p = Pair(fastconn.DattuiConnection)
    p.send(PAYLOAD[:200_000])
    p.step()
    cid = p.rx.host_cid
    rng = random.Random(9)
    for n in (1, 9, 10, 25, 60, 1452):
        forged = bytes([0x40 | rng.randrange(32)]) + cid + os.urandom(max(0, n - 9))
        p.rx.receive_datagram(forged[:n], A, now=p.now)
    assert p.rx._state == QuicConnectionState.CONNECTED
    p.run(b"", steps=200)
    assert bytes(p.got) == PAYLOAD[:200_000]


def test_other_address_takes_aioquics_path():
    """A packet from an address the client never talked to is aioquic's to judge
    (RFC 9000 section 9: dropped), not taken as from the server."""
    p = Pair(fastconn.DattuiConnection)
    p.send(PAYLOAD[:100_000])
    down = [d for d, _ in p.tx.datagrams_to_send(now=p.now)]
    p.rx.receive_datagram(down[0], ("10.0.0.9", 1000), now=p.now)
    assert p.rx.next_event() is None
    p.rx.receive_datagram(down[0], A, now=p.now)
    ev = p.rx.next_event()
    assert isinstance(ev, qe.StreamDataReceived) and ev.data == PAYLOAD[:len(ev.data)]


@pytest.mark.asyncio
async def test_a_read_run_goes_straight_to_its_link_and_the_rest_the_usual_way():
    from dattui.engine.events import PathKind
    from dattui.engine.transport.paths import DirectPath

    sent = []

    def sendto(data, addr):
        sent.append(data)
    endpoint = QuicEndpoint(IDENTITY, sendto, on_incoming=lambda link: None)
    peer = ("127.0.0.9", 4000)
    link = endpoint.connect(DirectPath(sendto, peer, PathKind.DIRECT))
    cid = link.conn.host_cid
    straight, usual = [], []
    link.conn.receive_datagram = lambda data, addr, now: straight.append((data, addr))
    endpoint.datagram = lambda data, addr, via=None: usual.append(data)
    ours = bytes([0x41]) + cid + bytes(40)
    other = bytes([0x41]) + bytes(8) + bytes(40)  # another connection id
    long_header = bytes([0xC3]) + bytes(60)
    endpoint.datagrams([ours, ours, long_header, other, ours], peer)
    assert [d for d, _ in straight] == [ours, ours, ours]
    assert all(a == link.vaddr for _, a in straight)
    assert usual == [long_header, other]
    endpoint.datagrams([ours, ours], ("127.0.0.8", 4000))  # not the link's address
    assert usual[2:] == [ours, ours] and len(straight) == 3
    endpoint.datagrams([other, ours], peer)  # the run's first is not the link's
    assert usual[4:] == [other, ours]
