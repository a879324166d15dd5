"""Helper sockets for the birthday strategy, and sending with a chosen TTL.

The hard side of a punch (behind a NAT that maps per destination) opens up to
256 extra UDP sockets; each sends probes so that one of them may meet a probe
sprayed by the other side. The socket that wins carries the QUIC connection:
its datagrams go to the same QUIC endpoint as the node's own socket.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from .punch import is_probe

Address = tuple[str, int]


def sendto_ttl(sock: socket.socket, data: bytes, addr: Address, ttl: int | None) -> None:
    """Send one datagram, with IP_TTL set for it alone when `ttl` is given."""
    try:
        if ttl is None:
            sock.sendto(data, addr)
            return
        old = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        try:
            sock.sendto(data, addr)
        finally:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, old)
    except OSError:
        pass  # unreachable or full: punching tries again


class HelperSockets:
    """`count` extra sockets; probes go to `on_probe(data, addr, index)`,
    anything else (QUIC) to `on_other(data, addr, index)`."""

    def __init__(self, count: int, on_probe: Callable, on_other: Callable,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.socks: dict[int, socket.socket] = {}
        self._on_probe, self._on_other = on_probe, on_other
        for i in range(1, count + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            try:
                s.bind(("0.0.0.0", 0))
            except OSError:
                s.close()
                break
            self.socks[i] = s
            self.loop.add_reader(s.fileno(), self._read, i)

    def _read(self, i: int) -> None:
        s = self.socks.get(i)
        if s is None:
            return
        for _ in range(64):
            try:
                data, addr = s.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            (self._on_probe if is_probe(data) else self._on_other)(data, addr[:2], i)

    def sendto(self, i: int, data: bytes, addr: Address, ttl: int | None = None) -> None:
        s = self.socks.get(i)
        if s is not None:
            sendto_ttl(s, data, addr, ttl)

    def sender(self, i: int) -> Callable[[bytes, Address], None]:
        return lambda data, addr: self.sendto(i, data, addr)

    def keep_only(self, keep: int | None) -> None:
        """Close every socket but the winner (or all of them)."""
        for i in [i for i in self.socks if i != keep]:
            self._close(i)

    def _close(self, i: int) -> None:
        s = self.socks.pop(i)
        self.loop.remove_reader(s.fileno())
        s.close()

    def close(self) -> None:
        self.keep_only(None)
