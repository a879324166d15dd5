"""A lane process: `python -m dattui.engine.lanes.worker`, started by a share or a
clone (process.py) with its pipe on stdin and stdout. The first message is its
LaneConfig; `role` says which lane it is. It exits when its pipe closes (its
main process stopped it or is gone) or, for a clone's lane, when its
connection ends."""

from __future__ import annotations

import asyncio
import os
import sys

from ..transport.identity import NodeIdentity
from . import pipe
from .process import PipeEnd, enlarge

STATS_INTERVAL = 0.25


def lane_node(config: dict, host: str):
    """A node of its own (a fresh identity, any free port) for one lane."""
    from ..node import Node
    return Node(NodeIdentity(os.urandom(32)), host=host, port=0,
                max_datagram_size=int(config.get("max_datagram_size", 1452)),
                path_mtu_discovery=bool(config.get("path_mtu_discovery", True)),
                udp_offload=bool(config.get("udp_offload", True)))


async def report(end: PipeEnd, stats, *stops: asyncio.Event) -> None:
    """LaneStats (of `stats()`) every STATS_INTERVAL until one of `stops` is set."""
    while not any(e.is_set() for e in stops):
        await asyncio.sleep(STATS_INTERVAL)
        end.send(pipe.LaneStats(stats()))


class Inbox:
    """Messages from the main process, held until the lane's role takes them."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.handler = None
        self.gone = asyncio.Event()

    def put(self, msg) -> None:
        if self.handler is not None:
            self.handler(msg)
        else:
            self.queue.put_nowait(msg)

    def take(self, handler) -> None:
        """From now on every message goes to `handler`, those waiting first."""
        while not self.queue.empty():
            handler(self.queue.get_nowait())
        self.handler = handler


async def main() -> int:
    inbox = Inbox()
    end = PipeEnd(inbox.put, inbox.gone.set)
    enlarge(1)
    read_fd, write_fd = os.dup(0), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # a stray print must not land in the pipe
    await end.connect(read_fd, write_fd)
    get = asyncio.ensure_future(inbox.queue.get())
    gone = asyncio.ensure_future(inbox.gone.wait())
    await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not get.done() or not isinstance(get.result(), pipe.LaneConfig):
        get.cancel()
        return 2
    config = get.result().body
    try:
        if config.get("role") == "share":
            from .share_lane import run
        elif config.get("role") == "clone":
            from .clone_lane import run
        else:
            return 2
        await run(config, end, inbox)
    except Exception as exc:  # tell the main process why, in one line
        end.send(pipe.LaneClosed(f"lane failed: {type(exc).__name__}: {exc}"))
        await asyncio.sleep(0.05)
        return 1
    finally:
        end.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
