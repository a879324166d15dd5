"""How a QUIC connection's datagrams travel: straight from the node's socket,
from a helper socket (birthday punching), or through a relay.

A connection keeps one stable virtual address for aioquic; its `path` can be
replaced underneath (relay -> punched, or a NAT rebinding) without aioquic or
the transfer noticing.
"""

from __future__ import annotations

from collections.abc import Callable

from ..events import PathKind

Address = tuple[str, int]


class DirectPath:
    """Datagrams sent with `sendto` (the node's socket or a helper socket) to `addr`."""

    relayed = False

    def __init__(self, sendto: Callable[[bytes, Address], None], addr: Address, kind: PathKind) -> None:
        self._sendto = sendto
        self.addr = addr
        self.kind = kind

    def send(self, data: bytes) -> None:
        self._sendto(data, self.addr)

    def same_socket(self, sendto) -> bool:
        return self._sendto == sendto

    def __repr__(self) -> str:
        return f"DirectPath({self.addr}, {self.kind.value})"


class RelayPath:
    """Datagrams wrapped for a relay (over UDP or TCP) that forwards them."""

    relayed = True

    def __init__(self, send: Callable[[bytes], None], addr: Address, kind: PathKind,
                 channel: bytes | None = None) -> None:
        self._send = send
        self.addr = addr  # the relay's address, for display
        self.kind = kind
        self.channel = channel  # the relay allocation it goes through (None: unnamed)

    def same_relay(self, other) -> bool:
        """Whether `other` goes through the same relay allocation."""
        return getattr(other, "channel", None) == self.channel and other.addr == self.addr

    def send(self, data: bytes) -> None:
        self._send(data)

    def same_socket(self, sendto) -> bool:
        return False

    def __repr__(self) -> str:
        return f"RelayPath({self.addr}, {self.kind.value})"
