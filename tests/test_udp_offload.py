"""The node's socket with UDP GSO/GRO (engine/transport/udp.py): trains of
datagrams sent in one call arrive as the same datagrams, in order, whether
the kernel segments them or not."""

from __future__ import annotations

import asyncio
import os

import pytest

from dattui.engine.transport.udp import Demux, UdpSocket, bind_udp


async def _exchange(datagrams: list[bytes], *, offload: bool, runs: list | None = None,
                    ) -> tuple[list[bytes], UdpSocket, UdpSocket]:
    """Send `datagrams` in one train; what arrived, in order. With `runs`, the
    receiving route takes runs too, and each run it got is appended there."""
    got: list[bytes] = []
    done = asyncio.Event()
    rx_demux = Demux()

    def take(data, addr):
        got.append(bytes(data))
        if len(got) == len(datagrams):
            done.set()

    def take_run(run, addr):
        runs.append(len(run))
        for data in run:
            take(data, addr)

    rx_demux.add(lambda d: True, take, many=take_run if runs is not None else None)
    rx = UdpSocket(bind_udp("127.0.0.1", 0), rx_demux, offload=offload)
    tx = UdpSocket(bind_udp("127.0.0.1", 0), Demux(), offload=offload)
    try:
        tx.sendto_many(datagrams, rx.local_address)
        await asyncio.wait_for(done.wait(), 5)
    finally:
        rx.close()
        tx.close()
    return got, tx, rx


def _train(sizes: list[int]) -> list[bytes]:
    return [bytes([i % 251]) * 8 + os.urandom(n - 8) for i, n in enumerate(sizes)]


@pytest.mark.asyncio
async def test_a_train_goes_out_in_few_sends_and_arrives_whole_and_in_order():
    datagrams = _train([1452] * 40 + [700])  # a short one may end a train
    got, tx, rx = await _exchange(datagrams, offload=True)
    assert got == datagrams
    assert tx.gso, "this kernel should offer UDP GSO (Linux >= 4.18)"
    assert 1 <= tx.gso_sends <= 2  # 41 datagrams of 1,452 bytes: at most 64 KB per send
    assert rx.gro and rx.gro_reads >= 1


@pytest.mark.asyncio
async def test_mixed_sizes_keep_their_boundaries():
    sizes = [1200, 1200, 300, 16000, 16000, 16000, 16000, 16000, 9000, 1452, 1452, 1452, 23]
    datagrams = _train(sizes)
    got, tx, _ = await _exchange(datagrams, offload=True)
    assert [len(d) for d in got] == sizes
    assert got == datagrams


@pytest.mark.asyncio
async def test_without_offload_the_same_datagrams_arrive():
    datagrams = _train([1452] * 10 + [99])
    got, tx, rx = await _exchange(datagrams, offload=False)
    assert got == datagrams
    assert tx.gso_sends == 0 and rx.gro_reads == 0 and not rx.gro


def test_runs_reach_a_route_that_takes_them_in_order_with_the_others():
    log = []
    demux = Demux()
    demux.add(lambda d: d[:1] == b"d", lambda d, a: log.append(("dht", d)), first=True)
    demux.add(lambda d: d[:1] == b"q", lambda d, a: log.append(("one", d)),
              many=lambda run, a: log.append(("run", list(run))))
    demux.add(lambda d: d[:1] == b"p", lambda d, a: log.append(("probe", d)))
    demux.dispatch_run([b"q1", b"q2", b"d1", b"q3", b"x", b"q4", b"p1", b"p2", b"q5"], ("h", 1))
    assert log == [("run", [b"q1", b"q2"]), ("dht", b"d1"), ("run", [b"q3", b"q4"]),
                   ("probe", b"p1"), ("probe", b"p2"), ("run", [b"q5"])]
    assert demux.dropped == 1  # b"x": nobody's


@pytest.mark.asyncio
async def test_a_gro_train_reaches_a_run_route_whole():
    datagrams = _train([1452] * 30)
    runs: list[int] = []
    got, _, rx = await _exchange(datagrams, offload=True, runs=runs)
    assert got == datagrams
    assert rx.gro_reads >= 1 and max(runs) > 1  # trains arrived as runs, not one call each
