"""CPU per packet of a bulk transfer through the QUIC layer alone.

    python bench/bench_packets.py [MiB] [DATAGRAM] [--plain]

Two connections in one process, joined in memory, on a fake clock (no
sockets, no event loop, no disk): the sender's and the receiver's CPU time
per 1-RTT packet, from aioquic's connection objects as the engine uses them
(engine/transport/fastconn.py, fastack.py, pacing.py) or, with --plain,
aioquic's own. The packet and ACK counts are the same either way: the fast
paths change what each packet costs, not what goes on the wire.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aioquic.buffer import Buffer  # noqa: E402
from aioquic.quic import events as qe  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.connection import QuicConnection  # noqa: E402
from aioquic.quic.packet import pull_quic_header  # noqa: E402

from dattui.engine.transport import congestion  # noqa: E402
from dattui.engine.transport.fastack import FastAckRecovery  # noqa: E402
from dattui.engine.transport.fastconn import DattuiConnection  # noqa: E402
from dattui.engine.transport.identity import NodeIdentity  # noqa: E402
from dattui.engine.transport.pacing import BurstPacer  # noqa: E402
from dattui.engine.transport.quic import set_datagram_size  # noqa: E402

STEP = 0.0002  # fake seconds per round: one read batch each way
CLIENT = ("10.0.0.1", 1000)  # the receiver
SERVER = ("10.0.0.2", 2000)  # the sender


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    plain = "--plain" in sys.argv
    mib = int(args[0]) if args else 100
    size = int(args[1]) if len(args) > 1 else 1452
    cls = QuicConnection if plain else DattuiConnection
    ident = NodeIdentity(os.urandom(32))

    def config(client: bool) -> QuicConfiguration:
        c = QuicConfiguration(is_client=client, alpn_protocols=["dattui/1"],
                              connection_id_length=8, congestion_control_algorithm=congestion.NAME,
                              max_datagram_size=1452, max_data=16 << 20,
                              max_stream_data=16 << 20, idle_timeout=30)
        c.certificate, c.private_key = ident.certificate(), ident.private_key()
        c.verify_mode = ssl.CERT_NONE
        return c

    clock = [1000.0]
    rx = cls(configuration=config(True))
    rx.connect(SERVER, now=clock[0])
    first = [d for d, _ in rx.datagrams_to_send(now=clock[0])]
    cid = pull_quic_header(Buffer(data=first[0]), host_cid_length=8).destination_cid
    tx = cls(configuration=config(False), original_destination_connection_id=cid)
    if not plain:
        for conn in (rx, tx):
            BurstPacer.adopt(conn._loss._pacer)
            FastAckRecovery.adopt(conn._loss)
    for d in first:
        tx.receive_datagram(d, CLIENT, now=clock[0])
    for _ in range(10):  # the handshake
        for src, dst, addr in ((tx, rx, SERVER), (rx, tx, CLIENT)):
            for d, _ in src.datagrams_to_send(now=clock[0]):
                dst.receive_datagram(d, addr, now=clock[0])
    while rx.next_event():
        pass
    while tx.next_event():
        pass
    if size != 1452:
        set_datagram_size(tx, size)
        set_datagram_size(rx, size)

    sid = tx.get_next_available_stream_id()
    total, sent, got = mib << 20, 0, 0
    chunk = b"x" * 262144
    t_send = t_recv = 0.0
    packets = acks = 0
    cpu = time.process_time
    while got < total:
        clock[0] += STEP
        now = clock[0]
        t0 = cpu()
        while sent < total and (sid not in tx._streams
                                or sent - tx._streams[sid].sender.next_offset < (2 << 20)):
            tx.send_stream_data(sid, chunk)
            sent += len(chunk)
        down = [d for d, _ in tx.datagrams_to_send(now=now)]
        t1 = cpu()
        for d in down:
            rx.receive_datagram(d, SERVER, now=now)
        while (ev := rx.next_event()) is not None:
            if type(ev) is qe.StreamDataReceived:
                got += len(ev.data)
        up = [d for d, _ in rx.datagrams_to_send(now=now)]
        t2 = cpu()
        for d in up:
            tx.receive_datagram(d, CLIENT, now=now)
        t_send += cpu() - t2 + t1 - t0
        t_recv += t2 - t1
        packets += len(down)
        acks += len(up)
        if not down and not up:
            at = tx.get_timer()
            if at:
                tx.handle_timer(max(now, at))
    what = "aioquic's own paths" if plain else "dattui's fast paths"
    print(f"{mib} MiB in {size}-byte datagrams through {what}: {packets} packets, {acks} ACK "
          f"datagrams; sender {1e6 * t_send / packets:.1f} us/packet, receiver "
          f"{1e6 * t_recv / packets:.1f} us/packet (one core for both: "
          f"{mib / (t_send + t_recv):.0f} MiB/s)")


if __name__ == "__main__":
    main()
