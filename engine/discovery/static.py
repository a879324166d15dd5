"""Peers given on the command line (`--peer HOST:PORT`): dialled at once and
again every RETRY seconds while no connection to them is up."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from ..errors import UsageError

RETRY = 2.0


def parse_hostport(text: str, default_port: int = 3282) -> tuple[str, int]:
    s = text.strip()
    host, port = s, default_port
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif s.count(":") == 1:
        host, port = s.split(":")
    try:
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise UsageError(f"not a HOST:PORT address: {text!r}; write it like 192.0.2.7:3282") from None
    if not host:
        raise UsageError(f"not a HOST:PORT address: {text!r}; the host is missing")
    return host, port


def resolve(host: str, port: int) -> tuple[str, int]:
    try:
        info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {host!r}: {exc.strerror}; check the name or use an IP address") from None
    return info[0][4][0], info[0][4][1]


class StaticPeers:
    name = "peer-arg"

    def __init__(self, found: Callable[[bytes, tuple[str, int], str], None]) -> None:
        self._found = found
        self._peers: dict[bytes, list[tuple[str, int]]] = {}
        self._paused: dict[bytes, list[tuple[str, int]]] = {}
        self._task: asyncio.Task | None = None

    def add(self, dkey: bytes, addr: tuple[str, int]) -> None:
        lst = self._peers.setdefault(dkey, [])
        if addr not in lst:
            lst.append(addr)
        self._found(dkey, addr, self.name)
        if self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    def remove(self, dkey: bytes) -> None:
        self._peers.pop(dkey, None)

    def forget_paused(self, dkey: bytes) -> None:
        self._paused.pop(dkey, None)

    def pause(self, dkey: bytes) -> None:
        if dkey in self._peers:
            self._paused[dkey] = self._peers.pop(dkey)

    def unpause(self, dkey: bytes) -> None:
        if dkey in self._paused:
            self._peers[dkey] = self._paused.pop(dkey)
            for addr in self._peers[dkey]:
                self._found(dkey, addr, self.name)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY)
            for dkey, addrs in list(self._peers.items()):
                for addr in addrs:
                    self._found(dkey, addr, self.name)

    def close(self) -> None:
        if self._task:
            self._task.cancel()
