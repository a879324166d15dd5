"""Which of the fast paths run on the aioquic in use: decided once per process.

The fast paths of engine/transport/ read and write aioquic's private fields
and repeat, faster, steps of aioquic's own code. They are right only for an
aioquic that behaves as the one they were written against, so each is used
only when all of these hold:

- DATTUI_FAST_PATH is not "0" (the switch: "0", "off", "false" or "no" leave
  every transfer to aioquic's own code);
- the aioquic in use is one of the versions the fast path was verified on
  (`VERIFIED`: its tests in tests/ pass there, byte for byte against aioquic's
  own path);
- its self-test passes: a short run in memory of the fast path and of
  aioquic's own code on the same input, compared (about 0.15 s for all of
  them, when the first QuicEndpoint is made);
- the fast paths it builds on are on (`NEEDS`).

Otherwise aioquic's own code runs: plain `QuicConnection`, `QuicPacketRecovery`,
`QuicPacketPacer`, `QuicStreamSender`, and no path MTU discovery (the link
stays at the size every path carries). What was decided, and why, is in
`status()`; each link says which fast paths it runs (`QuicLink.fast_paths`,
the `fast_paths` of a PeerConnected event).

What was found per version (tests/test_fastconn.py, test_fastack.py,
test_shortcrypto.py, test_pacing.py, test_pmtu.py, test_congestion.py):
- 1.7.1 and 1.7.2 (the same code but for type annotations): all pass.
- 1.7.0: `QuicStreamSender.get_frame` goes on with a negative size (and marks
  the buffer empty) where 1.7.1 returns at once, as `BulkStreamSender` does;
  and 1.7.0 keeps a server's 0-RTT keys after the first 1-RTT packet, which the
  fast receive path discards as 1.7.1 does. bulkstream and fastconn (whose
  send path needs bulkstream) are off there; the bulkstream self-test sees the
  first difference by itself.
- 1.6 and older: no `MAX_ACK_RANGES` (the ACK ranges and the duplicate window
  are kept differently), and ACK processing walks every sent packet: none of
  the fast paths was verified there.

Besides the fast paths, the engine reads a few aioquic fields for which aioquic
has no public accessor and no fallback exists (`ENGINE_NEEDS`: the peer's
certificate, which the application handshake binds; the stream's send
offset; the largest packet number received). `status()` lists what is missing.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aioquic

log = logging.getLogger(__name__)

ENV = "DATTUI_FAST_PATH"
_OFF = ("0", "off", "false", "no")

# fast path -> the aioquic versions on which its tests pass
VERIFIED: dict[str, tuple[str, ...]] = {
    "bulkstream": ("1.7.1", "1.7.2"),   # bulkstream.py: the stream send buffer
    "shortcrypto": ("1.7.0", "1.7.1", "1.7.2"),  # shortcrypto.py: 1-RTT protection
    "fastack": ("1.7.0", "1.7.1", "1.7.2"),  # fastack.py (+ congestion.on_packets_acked)
    "pacing": ("1.7.0", "1.7.1", "1.7.2"),   # pacing.py: bursts at high rates
    "fastconn": ("1.7.1", "1.7.2"),     # fastconn.py: 1-RTT receive and bulk send
    "pmtu": ("1.7.0", "1.7.1", "1.7.2"),     # quic.set_datagram_size: path MTU discovery
    "ack_delay": ("1.7.0", "1.7.1", "1.7.2"),  # quic.py: the peer's real ACK delay for the PTO
}
# a fast path is on only when these are on too
NEEDS: dict[str, tuple[str, ...]] = {"fastconn": ("bulkstream", "shortcrypto")}

# aioquic fields the engine reads with no fallback (quic.py)
ENGINE_NEEDS = {
    "QuicConnection": ("_streams", "_spaces", "_loss", "_max_datagram_size", "_state", "tls"),
    "TLS context": ("_peer_certificate",),
    "QuicStreamSender": ("next_offset",),
    "QuicPacketSpace": ("largest_received_packet",),
}


@dataclass(frozen=True)
class Decision:
    name: str
    on: bool
    reason: str  # why not (empty when on)


@dataclass(frozen=True)
class Status:
    aioquic_version: str
    switch_on: bool
    decisions: tuple[Decision, ...]
    engine_missing: tuple[str, ...]  # ENGINE_NEEDS not found

    @property
    def on(self) -> frozenset[str]:
        return frozenset(d.name for d in self.decisions if d.on)

    def describe(self) -> str:
        on = ", ".join(sorted(self.on)) or "none"
        off = "; ".join(f"{d.name}: {d.reason}" for d in self.decisions if not d.on)
        text = f"aioquic {self.aioquic_version}: fast paths on: {on}"
        if off:
            text += f"; off: {off}"
        if self.engine_missing:
            text += f"; MISSING (transfers will fail): {', '.join(self.engine_missing)}"
        return text


def switch_on(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(ENV, "1").strip().lower() not in _OFF


def check(version: str | None = None, *, environ: Mapping[str, str] = os.environ,
          probes: Mapping[str, Callable[[frozenset[str]], bool]] | None = None) -> Status:
    """Decide, now, which fast paths run (runs the self-tests; `status()` keeps
    the answer for the process)."""
    version = version or getattr(aioquic, "__version__", "unknown")
    wanted = switch_on(environ)
    probes = PROBES if probes is None else probes
    decided: dict[str, Decision] = {}
    for name in VERIFIED:  # NEEDS point to names earlier in VERIFIED
        if not wanted:
            decided[name] = Decision(name, False, f"{ENV}=0")
            continue
        if version not in VERIFIED[name]:
            decided[name] = Decision(name, False, f"not verified on aioquic {version}")
            continue
        missing = [n for n in NEEDS.get(name, ()) if not decided[n].on]
        if missing:
            decided[name] = Decision(name, False, f"needs {', '.join(missing)}")
            continue
        try:
            ok = bool(probes[name](frozenset(n for n, d in decided.items() if d.on)))
            reason = "" if ok else "self-test: differs from aioquic's own"
        except Exception as exc:  # noqa: BLE001 - any failure means aioquic's path
            ok, reason = False, f"self-test failed: {type(exc).__name__}: {exc}"
        decided[name] = Decision(name, ok, reason)
    return Status(version, wanted, tuple(decided.values()), tuple(_engine_missing()))


@functools.cache
def status() -> Status:
    """`check()` once per process."""
    st = check()
    log.info("%s", st.describe())
    return st


def enabled(name: str) -> bool:
    return name in status().on


def reset() -> None:
    """Forget the decision (tests that change the switch or aioquic in-process)."""
    status.cache_clear()


# ---- what the engine needs, fast paths or not ----------------------------------------
def _engine_missing() -> list[str]:
    try:
        conn, _, _ = _pair_connections()
    except Exception as exc:  # noqa: BLE001
        return [f"a connection could not be made: {exc}"]
    missing = [f"QuicConnection.{n}" for n in ENGINE_NEEDS["QuicConnection"]
               if not hasattr(conn, n)]
    if hasattr(conn, "tls") and not hasattr(conn.tls, "_peer_certificate"):
        missing.append("TLS context._peer_certificate")
    from aioquic.quic.recovery import QuicPacketSpace
    from aioquic.quic.stream import QuicStreamSender
    if not hasattr(QuicStreamSender(stream_id=0, writable=True), "next_offset"):
        missing.append("QuicStreamSender.next_offset")
    if not hasattr(QuicPacketSpace(), "largest_received_packet"):
        missing.append("QuicPacketSpace.largest_received_packet")
    return missing


# ---- self-tests: each fast path against aioquic's own, in memory -----------------------
def _probe_bulkstream(on: frozenset[str]) -> bool:
    """`BulkStreamSender` against aioquic's sender: the same frames, the same
    state after sends of every size (negative ones too), losses and ACKs."""
    from aioquic.buffer import size_uint_var
    from aioquic.quic.packet_builder import QuicDeliveryState
    from aioquic.quic.stream import QuicStreamSender

    from .bulkstream import BulkStreamSender

    def state(s):
        return (list(s._pending), s.highest_offset, s._pending_eof, s.buffer_is_empty,
                s.next_offset, s.is_finished, s._buffer_start)

    rng = random.Random(9)
    payload = rng.randbytes(20000)
    for _ in range(12):
        a, b = (QuicStreamSender(stream_id=0, writable=True) for _ in range(2))
        if not BulkStreamSender.adopt(b):
            return False
        end = rng.random() < 0.5
        for s in (a, b):
            s.write(payload, end_stream=end)
        sent = []
        for _ in range(rng.randint(0, 5)):  # some sent, some lost again
            size, lose = rng.randrange(1, 3000), rng.random() < 0.5
            for s in (a, b):
                frame = s.get_frame(size)
                if frame is not None and lose:
                    s.on_data_delivery(QuicDeliveryState.LOST, frame.offset,
                                       frame.offset + len(frame.data), frame.fin)
            if frame is not None and not lose:
                sent.append(frame)
        while True:
            size, limit = rng.choice([-1, 0, 5, 1400, 1400]), rng.choice([10**9, 8000, 0])
            room = size + (size_uint_var(a.next_offset) if a.next_offset else 0)
            frame = a.get_frame(size, limit)
            piece = b.take(room, limit)
            if (None if frame is None else (frame.data, frame.offset, int(frame.fin))) != piece:
                return False
            if state(a) != state(b):
                return False
            if frame is not None:
                sent.append(frame)
            if a.buffer_is_empty or (frame is None and size > 0 and limit > 20000):
                break
        rng.shuffle(sent)
        for frame in sent:  # acknowledged in any order
            for s in (a, b):
                s.on_data_delivery(QuicDeliveryState.ACKED, frame.offset,
                                   frame.offset + len(frame.data), frame.fin)
            if state(a) != state(b) or list(a._acked) != list(b._acked):
                return False
    return True


def _probe_shortcrypto(on: frozenset[str]) -> bool:
    """One-step 1-RTT protection gives aioquic's bytes, both ways."""
    from aioquic.quic.crypto import CryptoContext
    from aioquic.tls import CipherSuite

    from . import shortcrypto

    dcid = bytes(range(8))
    for suite, size in ((CipherSuite.AES_128_GCM_SHA256, 32), (CipherSuite.AES_256_GCM_SHA384, 48)):
        ours, theirs = CryptoContext(), CryptoContext()
        secret = bytes(range(size))
        for c in (ours, theirs):
            c.setup(cipher_suite=suite, secret=secret, version=1)
        seal, open_ = shortcrypto.sealer(ours), shortcrypto.opener(ours)
        if seal is None or open_ is None:
            return False
        expected = 0
        for pn in (0, 1, 300, 65535, 65536, 70001):
            payload = bytes((pn + i) & 0xFF for i in range(40 + pn % 1200))
            first = 0x41 | ((pn & 1) << 5)
            header = bytes((first,)) + dcid + (pn & 0xFFFF).to_bytes(2, "big")
            packet = theirs.encrypt_packet(header, payload, pn)
            if seal(first, dcid, pn, payload) != packet:
                return False
            plain_header, plain, number, _ = theirs.decrypt_packet(packet, 1 + len(dcid), expected)
            if open_(packet, 1 + len(dcid), expected) != (plain_header, plain, number):
                return False
            expected = pn + 1
    return True


def _probe_fastack(on: frozenset[str]) -> bool:
    """ACKs taken in one pass leave recovery, window and sender as aioquic's
    per-packet loop does (slow start, congestion avoidance, gaps)."""
    from aioquic.quic.packet import QuicPacketType
    from aioquic.quic.packet_builder import QuicSentPacket
    from aioquic.quic.rangeset import RangeSet
    from aioquic.quic.recovery import QuicPacketRecovery, QuicPacketSpace
    from aioquic.quic.stream import QuicStreamSender
    from aioquic.tls import Epoch

    from . import congestion
    from .bulkstream import BulkStreamSender
    from .fastack import FastAckRecovery

    sides = []
    for fast in (False, True):
        loss = QuicPacketRecovery(congestion_control_algorithm=congestion.NAME, initial_rtt=0.1,
                                  max_datagram_size=1452, peer_completed_address_validation=True,
                                  send_probe=lambda: None)
        loss.handshake_confirmed = True
        if fast and not FastAckRecovery.adopt(loss):
            return False
        space = QuicPacketSpace(is_application_data=True)
        loss.spaces = [space]
        sender = QuicStreamSender(stream_id=0, writable=True)
        if "bulkstream" in on:
            BulkStreamSender.adopt(sender)
        sender.write(bytes(2 << 20))
        sides.append((loss, space, sender))

    def state(loss, space, sender):
        cc = loss._cc
        return (cc.congestion_window, cc.bytes_in_flight, cc.ssthresh, loss._rtt_smoothed,
                loss._pto_count, sorted(space.sent_packets), space.ack_eliciting_in_flight,
                space.largest_acked_packet, sender._buffer_start, list(sender._pending))

    rng = random.Random(4)
    now, pn = 1.0, 0
    for _ in range(16):
        burst = rng.randint(20, 100)
        for loss, space, sender in sides:
            for i in range(burst):
                frame = sender.get_frame(1400)
                packet = QuicSentPacket(epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True,
                                        is_crypto_packet=False, packet_number=pn + i,
                                        packet_type=QuicPacketType.ONE_RTT, sent_time=now,
                                        sent_bytes=len(frame.data) + 40)
                packet.delivery_handlers.append(
                    (sender.on_data_delivery,
                     (frame.offset, frame.offset + len(frame.data), frame.fin)))
                loss.on_packet_sent(packet=packet, space=space)
        pn += burst
        now += rng.uniform(0.001, 0.03)
        outstanding = sorted(sides[0][1].sent_packets)
        ranges = RangeSet()
        start = None
        for number in outstanding:
            if rng.random() < 0.03:
                if start is not None:
                    ranges.add(start, number)
                start = None
            elif start is None:
                start = number
        if start is not None:
            ranges.add(start, outstanding[-1] + 1)
        for loss, space, _ in sides:
            loss.on_ack_received(ack_rangeset=ranges, ack_delay=0.0005, now=now, space=space)
        if state(*sides[0]) != state(*sides[1]):
            return False
    return True


def _probe_pacing(on: frozenset[str]) -> bool:
    """`BurstPacer` is aioquic's pacer where aioquic's bucket holds a burst, and
    lets 16 packets go at once where it would let one."""
    from aioquic.quic.recovery import QuicPacketPacer

    from .pacing import BURST_PACKETS, BurstPacer

    def burst(pacer, now):
        sent = 0
        while pacer.next_send_time(now) is None and sent < 1000:
            pacer.update_after_send(now)
            sent += 1
        return sent

    for cwnd, rtt, want in ((200_000, 0.020, None), (41_000_000, 0.001, BURST_PACKETS)):
        plain, ours = QuicPacketPacer(max_datagram_size=1452), QuicPacketPacer(max_datagram_size=1452)
        if not BurstPacer.adopt(ours):
            return False
        for p in (plain, ours):
            p.update_rate(congestion_window=cwnd, smoothed_rtt=rtt)
            burst(p, 10.0)
        got = burst(plain, 10.0003), burst(ours, 10.0003)
        if want is None and (got[0] != got[1] or ours.bucket_max != plain.bucket_max):
            return False
        if want is not None and got[1] != want:
            return False
    return True


def _probe_pmtu(on: frozenset[str]) -> bool:
    """A live connection whose datagram size is raised (quic.set_datagram_size)
    sends datagrams of that size, and the peer takes every byte."""
    from .quic import set_datagram_size

    tx, rx, now = _pair_connections()
    sid = tx.get_next_available_stream_id()
    if not set_datagram_size(tx, 3000):
        return False
    data = bytes(range(256)) * 400
    tx.send_stream_data(sid, data, end_stream=True)
    got, sizes = bytearray(), set()
    for _ in range(50):
        now += 0.005
        for c in (tx, rx):
            at = c.get_timer()
            if at is not None and at <= now:
                c.handle_timer(now)
        for d, _ in tx.datagrams_to_send(now=now):
            sizes.add(len(d))
            rx.receive_datagram(d, _TX_ADDR, now=now)
        while (ev := rx.next_event()) is not None:
            if type(ev).__name__ == "StreamDataReceived":
                got += ev.data
        for d, _ in rx.datagrams_to_send(now=now):
            tx.receive_datagram(d, _RX_ADDR, now=now)
        while tx.next_event() is not None:
            pass
        if len(got) >= len(data):
            break
    return bytes(got) == data and max(sizes) == 3000


def _probe_ack_delay(on: frozenset[str]) -> bool:
    """The probe timeout follows a lowered `max_ack_delay` (quic.py sets the
    peer's real one)."""
    from aioquic.quic.packet import QuicPacketType
    from aioquic.quic.packet_builder import QuicSentPacket
    from aioquic.quic.rangeset import RangeSet
    from aioquic.quic.recovery import QuicPacketRecovery, QuicPacketSpace
    from aioquic.tls import Epoch

    loss = QuicPacketRecovery(congestion_control_algorithm="reno", initial_rtt=0.1,
                              max_datagram_size=1452, peer_completed_address_validation=True,
                              send_probe=lambda: None)
    loss.handshake_confirmed = True
    space = QuicPacketSpace(is_application_data=True)
    loss.spaces = [space]
    loss.on_packet_sent(packet=QuicSentPacket(
        epoch=Epoch.ONE_RTT, in_flight=True, is_ack_eliciting=True, is_crypto_packet=False,
        packet_number=0, packet_type=QuicPacketType.ONE_RTT, sent_time=1.0, sent_bytes=1200),
        space=space)
    acked = RangeSet()
    acked.add(0, 1)
    loss.on_ack_received(ack_rangeset=acked, ack_delay=0.0, now=1.05, space=space)
    before = loss.get_probe_timeout()
    default = loss.max_ack_delay
    loss.max_ack_delay = default / 2
    return abs((before - loss.get_probe_timeout()) - default / 2) < 1e-9


def _probe_fastconn(on: frozenset[str]) -> bool:
    """A short transfer in memory, fast paths on both ends against aioquic's
    own on both ends: the same datagram sizes both ways, the same bytes."""
    from aioquic.quic.connection import QuicConnection

    from . import fastconn
    from .fastack import FastAckRecovery

    data = random.Random(3).randbytes(300_000)
    traces = []
    for cls in (QuicConnection, fastconn.DattuiConnection):
        tx, rx, now = _pair_connections(cls)
        if cls is not QuicConnection:
            if not (fastconn.supported(tx) and fastconn.supported(rx)):
                return False
            for c in (tx, rx):
                if "fastack" in on:
                    FastAckRecovery.adopt(c._loss)
        sid = tx.get_next_available_stream_id()
        trace, got = [], bytearray()
        for i in range(0, len(data), 64 * 1024):
            tx.send_stream_data(sid, data[i:i + 64 * 1024], end_stream=i + 64 * 1024 >= len(data))
        for _ in range(400):
            now += 0.002
            for c in (tx, rx):
                at = c.get_timer()
                if at is not None and at <= now:
                    c.handle_timer(now)
            down = [d for d, _ in tx.datagrams_to_send(now=now)]
            trace.append(("down", [len(d) for d in down]))
            for d in down:
                rx.receive_datagram(d, _TX_ADDR, now=now)
            while (ev := rx.next_event()) is not None:
                if type(ev).__name__ == "StreamDataReceived":
                    got += ev.data
            up = [d for d, _ in rx.datagrams_to_send(now=now)]
            trace.append(("up", [len(d) for d in up]))
            for d in up:
                tx.receive_datagram(d, _RX_ADDR, now=now)
            while tx.next_event() is not None:
                pass
            if len(got) >= len(data) and not up and not down:
                break
        if bytes(got) != data:
            return False
        traces.append(trace)
    return traces[0] == traces[1]


# each takes the names already decided on (a self-test runs with what it builds on)
PROBES: dict[str, Callable[[frozenset[str]], bool]] = {
    "bulkstream": _probe_bulkstream,
    "shortcrypto": _probe_shortcrypto,
    "fastack": _probe_fastack,
    "pacing": _probe_pacing,
    "fastconn": _probe_fastconn,
    "pmtu": _probe_pmtu,
    "ack_delay": _probe_ack_delay,
}

# ---- an in-memory pair of connections -------------------------------------------------
_TX_ADDR = ("192.0.2.1", 1000)   # the server, which sends
_RX_ADDR = ("192.0.2.2", 2000)   # the client, which receives


@functools.cache
def _identity():
    from .identity import NodeIdentity
    return NodeIdentity(bytes(range(32)))


def _configuration(is_client: bool):
    import ssl

    from aioquic.quic.configuration import QuicConfiguration

    from . import congestion

    ident = _identity()
    cfg = QuicConfiguration(is_client=is_client, alpn_protocols=["dattui-selftest"],
                            connection_id_length=8, congestion_control_algorithm=congestion.NAME,
                            max_datagram_size=1452, max_data=4 << 20, max_stream_data=4 << 20,
                            idle_timeout=30)
    cfg.certificate = ident.certificate()
    cfg.private_key = ident.private_key()
    cfg.verify_mode = ssl.CERT_NONE
    return cfg


def _pair_connections(cls=None):
    """(server, client, the fake clock's time): connected."""
    from aioquic.buffer import Buffer
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet import pull_quic_header

    cls = cls or QuicConnection
    now = 1000.0
    rx = cls(configuration=_configuration(True))
    rx.connect(_TX_ADDR, now=now)
    first = [d for d, _ in rx.datagrams_to_send(now=now)]
    cid = pull_quic_header(Buffer(data=first[0]), host_cid_length=8).destination_cid
    tx = cls(configuration=_configuration(False), original_destination_connection_id=cid)
    for d in first:
        tx.receive_datagram(d, _RX_ADDR, now=now)
    for _ in range(6):
        now += 0.002
        for d, _ in tx.datagrams_to_send(now=now):
            rx.receive_datagram(d, _TX_ADDR, now=now)
        for d, _ in rx.datagrams_to_send(now=now):
            tx.receive_datagram(d, _RX_ADDR, now=now)
    for c in (tx, rx):
        while c.next_event() is not None:
            pass
    return tx, rx, now
