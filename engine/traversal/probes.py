"""One route for punch probes on a node's socket, shared by whoever punches.

Punch probes carry a 16-byte session; a punch started by peer exchange
registers its session here, and the rendezvous source takes whatever no
session claims (it matches its own attempts). Addresses a punch got through
are remembered (bounded) so that an incoming QUIC connection from one is
labelled punched.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable

from .punch import is_probe

Address = tuple[str, int]
Handler = Callable[[bytes, Address], None]
PUNCHED_MEMORY = 1024

_routers: "weakref.WeakKeyDictionary[object, ProbeRouter]" = weakref.WeakKeyDictionary()


class ProbeRouter:
    def __init__(self) -> None:
        self.sessions: dict[bytes, Handler] = {}
        self.fallbacks: list[Handler] = []
        self._punched: OrderedDict[Address, None] = OrderedDict()

    def dispatch(self, data: bytes, addr: Address) -> None:
        handler = self.sessions.get(data[5:21])
        if handler is not None:
            handler(data, addr)
            return
        for fallback in self.fallbacks:
            fallback(data, addr)

    def punched(self, addr: Address) -> None:
        self._punched[addr] = None
        self._punched.move_to_end(addr)
        if len(self._punched) > PUNCHED_MEMORY:
            self._punched.popitem(last=False)

    def was_punched(self, addr: Address) -> bool:
        return addr in self._punched


def probe_router(node) -> ProbeRouter:
    """The node's router, routed from its socket's demultiplexer on first use."""
    router = _routers.get(node)
    if router is None:
        router = _routers[node] = ProbeRouter()
        node.demux.add(is_probe, router.dispatch, first=True)
    return router
