"""Socket buffers sized to the path: what the fastest connection brings in
BUFFER_SECONDS, between 4 and 64 MiB, grown (never shrunk) as a transfer runs."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from dattui.engine.transport import udp
from helpers import engine, make_tree


@pytest.mark.parametrize("rate,want", [
    (0, udp.DEFAULT_BUFFER), (100e6, udp.DEFAULT_BUFFER), (1e9, 20_000_000),
    (1.25e9, 25_000_000), (1e11, udp.MAX_BUFFER)])
def test_buffer_for_a_path(rate, want):
    assert udp.buffer_for(rate) == want


async def test_a_socket_grows_for_a_fast_path_and_never_shrinks():
    sock = udp.bind_udp("127.0.0.1", 0)
    us = udp.UdpSocket(sock, udp.Demux())
    try:
        assert us.size_buffers(50e6) == udp.DEFAULT_BUFFER  # 4 MiB carries it
        assert us.size_buffers(1e9) == 20_000_000
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        sent = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2
        if os.geteuid() == 0:  # beyond net.core.rmem_max only as root (CI is root)
            assert got >= 20_000_000 and sent >= 20_000_000
        assert us.size_buffers(1e6) == 20_000_000  # a slower path later: kept
        assert us.size_buffers(1.05e9) == 20_000_000  # less than a quarter more: not worth a call
    finally:
        us.close()


async def test_a_node_sizes_its_socket_to_its_fastest_transfer(tmp_path, monkeypatch):
    monkeypatch.setattr(udp, "BUFFER_SECONDS", 2.0)  # a loopback transfer's rate then asks > 4 MiB
    src = make_tree(tmp_path / "src")
    (src / "more.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    try:
        tid = await a.share(src)
        ctid = await b.clone(a.transfer(tid).link, tmp_path / "dst", peers=[f"127.0.0.1:{a.port}"])
        await asyncio.wait_for(b.wait(ctid, find_timeout=10), 60)
        for e in (a, b):
            e.node.size_buffers()  # as its keepalive loop does every second
            assert e.node.socket.buffer > udp.DEFAULT_BUFFER
    finally:
        await b.close()
        await a.close()
