"""A share's lane processes, seen from the share: started when the first peer
that can use them attaches, told every version the share publishes, and
offered (LANES) to peers on direct paths once they listen, and again, marked
busy, when the share's process becomes CPU-bound (a clone uses lanes when
either side is)."""

from __future__ import annotations

import asyncio
import functools
import time

from .. import wire
from ..events import Logged, PathKind, PeerStatus
from ..serve import manifest_parts
from . import pipe
from .cpu import CpuGauge
from .process import LaneProcess

MIN_BYTES = 64 * 1024 * 1024  # a share smaller than this is not worth a process per lane
LANE_PATHS = (PathKind.LAN, PathKind.DIRECT)  # a lane's port is reachable only where the share's is
START_TIMEOUT = 10.0
WATCH = 0.25        # how often the share's CPU load is sampled while lanes run
BUSY_REPEAT = 5.0   # at most this often, peers hear that the share is CPU-bound


def lane_path_ok(peer) -> bool:
    return peer.path in LANE_PATHS and not getattr(peer.link.path, "relayed", False)


class ShareLanes:
    def __init__(self, swarm, count: int, options: dict) -> None:
        self.swarm = swarm
        self.count = count
        self.options = options
        self.procs: list[LaneProcess] = []
        self.ports: dict[LaneProcess, int] = {}
        self.stats: dict[LaneProcess, dict] = {}
        self._gone_bytes = 0      # served by lanes that have exited
        self._waiting: list = []  # peers to tell once the lanes listen
        self._start: asyncio.Task | None = None
        self._ready = False
        self.cpu = CpuGauge()
        self._busy_told = float("-inf")

    # ---- the share's calls -----------------------------------------------------
    def offer(self, peer) -> None:
        p = self.swarm.published
        if not lane_path_ok(peer) or p is None or p.total_bytes < MIN_BYTES:
            return
        if self._ready:
            self._tell(peer)
            return
        self._waiting.append(peer)
        if self._start is None:
            self._start = asyncio.ensure_future(self._start_all())

    def publish(self) -> None:
        """The share's version (a new one) to every lane."""
        for proc in self.procs:
            self._publish_to(proc)

    @property
    def bytes_sent(self) -> int:
        return self._gone_bytes + sum(s.get("bytes_sent", 0) for s in self.stats.values())

    def peer_statuses(self) -> tuple[PeerStatus, ...]:
        out = []
        for proc, st in self.stats.items():
            for p in st.get("peers", ()):
                try:
                    out.append(PeerStatus(**{**p, "path": PathKind(p["path"])}))
                except (TypeError, ValueError, KeyError):
                    continue
        return tuple(out)

    async def close(self) -> None:
        if self._start is not None:
            self._start.cancel()
        self.procs, procs = [], self.procs
        await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)

    # ---- lanes -----------------------------------------------------------------
    def _tell(self, peer, busy: bool = False) -> None:
        ports = tuple(self.ports.values())[:wire.MAX_LANES]
        if ports and not peer.link.closed:
            peer.send(wire.Lanes(ports, busy))

    async def _watch(self) -> None:
        """Tell the peers that could use lanes when this process is CPU-bound."""
        while self.procs:
            await asyncio.sleep(WATCH)
            self.cpu.sample()
            now = time.monotonic()
            if self.cpu.busy() and now - self._busy_told >= BUSY_REPEAT:
                self._busy_told = now
                for peer in self.swarm.peers:
                    if lane_path_ok(peer):
                        self._tell(peer, busy=True)

    async def _start_all(self) -> None:
        sw = self.swarm
        config = {"role": "share", "folder": str(sw.folder), "public_key": sw.public_key.hex(),
                  **self.options}
        for _ in range(self.count):
            proc = LaneProcess()
            proc.on_message = functools.partial(self._message, proc)
            proc.on_exit = functools.partial(self._exited, proc)
            try:
                await proc.start(config)
            except OSError as exc:
                sw.emit(Logged(sw.tid, "warning", f"cannot start a lane process: {exc}"))
                break
            self.procs.append(proc)
            self._publish_to(proc)
        deadline = time.monotonic() + START_TIMEOUT
        while len(self.ports) < len(self.procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._ready = True
        if self.ports:
            sw.emit(Logged(sw.tid, "info", f"{len(self.ports)} lane processes serve on UDP ports "
                                           + ", ".join(map(str, self.ports.values()))))
        for peer in self._waiting:
            self._tell(peer)
        self._waiting.clear()
        await self._watch()

    def _publish_to(self, proc: LaneProcess) -> None:
        sw = self.swarm
        for f in manifest_parts(sw.version, sw.encoded):
            proc.send(f)
        proc.send(wire.ManifestSignature(sw.version, sw.signature))

    def _message(self, proc: LaneProcess, msg) -> None:
        if isinstance(msg, pipe.LaneListening):
            self.ports[proc] = msg.port
        elif isinstance(msg, pipe.LaneStats):
            self.stats[proc] = msg.body

    def _exited(self, proc: LaneProcess) -> None:
        self.ports.pop(proc, None)
        self._gone_bytes += self.stats.pop(proc, {}).get("bytes_sent", 0)
        if proc in self.procs:
            self.procs.remove(proc)
