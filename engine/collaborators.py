"""Both sides see the transfer: a clone tells the peers that hold the whole
version (the share, finished clones) how much of it it holds, and the sharing
side turns that into per-peer progress, events and leave reasons.

Clone side: `report()` sends a wire PROGRESS to every such peer when it
changed, at most every REPORT_EVERY seconds (always when `force`).
Sharing side: a `Collaborators` keeps one `Held` per peer (in `peer.app`),
emits `PeerProgressed` at most every EVENT_EVERY seconds per peer and
`PeerCompleted` once per version, and names why a peer left in words about
the transfer ("left with the whole version", "paused at 42.0 %").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import wire
from .events import PeerCompleted, PeerProgressed
from .peer import PeerConnection
from .ratemeter import RateMeter

REPORT_EVERY = 0.5   # clone: a PROGRESS per seed at most this often
EVENT_EVERY = 1.0    # share: a PeerProgressed per peer at most this often


# ---- clone side ------------------------------------------------------------------

def report(swarm, peers, force: bool = False, now: float | None = None) -> None:
    """Tell every connected peer that holds the whole version how much of it
    `swarm` (a clone) holds."""
    if swarm.manifest is None:
        return
    now = time.monotonic() if now is None else now
    state = (swarm.version, swarm.bytes_have, len(swarm.done))
    for p in peers:
        if not isinstance(p, PeerConnection) or p.app.get("have") is not True or p.link.closed:
            continue  # lanes are the share's own processes: its main connection hears it
        if p.app.get("reported") == state:
            continue
        if not force and now - p.app.get("reported_at", 0.0) < REPORT_EVERY:
            continue
        p.app["reported"] = state
        p.app["reported_at"] = now
        p.send(wire.Progress(*state))


# ---- sharing side ----------------------------------------------------------------

@dataclass
class Held:
    version: int = 0
    bytes_have: int = 0
    files_done: int = 0
    complete: bool = False
    meter: RateMeter = field(default_factory=RateMeter)
    last_event: float = -1e9
    completed_version: int = 0


def _pct(have: int, total: int) -> str:
    return f"{100.0 * have / total:.1f} %" if total else "100 %"


class Collaborators:
    """Per-peer progress of the clones connected to a share."""

    def __init__(self, tid: str, manifest: Callable, emit: Callable) -> None:
        self.tid = tid
        self._manifest = manifest  # () -> the version served now, or None
        self.emit = emit

    @staticmethod
    def held(peer) -> Held | None:
        return peer.app.get("held")

    def progress(self, peer: PeerConnection, f: wire.Progress, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        h = peer.app.get("held")
        if h is None:
            h = peer.app["held"] = Held()
        if f.version != h.version:
            h.version, h.bytes_have, h.meter = f.version, f.bytes_have, RateMeter()
        else:
            h.meter.add(max(0, f.bytes_have - h.bytes_have), now)
            h.bytes_have = f.bytes_have
        h.files_done = f.files_done
        m = self._manifest()
        if m is None or f.version != m.version:
            h.complete = False
            return  # of another version: the clone fetches ours, then reports again
        total, files = m.total_bytes, len(m.files)
        h.complete = f.bytes_have >= total and f.files_done >= files
        if h.complete or now - h.last_event >= EVENT_EVERY:
            h.last_event = now
            self.emit(PeerProgressed(self.tid, peer.peer_id, peer.address, m.version,
                                     min(f.bytes_have, total), total, f.files_done, files,
                                     round(h.meter.rate(now), 1)))
        if h.complete and h.completed_version != m.version:
            h.completed_version = m.version
            self.emit(PeerCompleted(self.tid, peer.peer_id, peer.address, m.version, files, total))

    def status_of(self, peer, now: float) -> dict:
        """PeerStatus fields for one peer."""
        h = peer.app.get("held") if hasattr(peer, "app") else None
        m = self._manifest()
        if h is None or m is None or h.version != m.version:
            return {}
        return {"have_bytes": min(h.bytes_have, m.total_bytes), "have_total": m.total_bytes,
                "have_rate": h.meter.rate(now), "have_all": h.complete}

    def leave_reason(self, peer, reason: str) -> str:
        """Why a peer left, in words about the transfer."""
        h = peer.app.get("held")
        m = self._manifest()
        if h is None or m is None or h.version != m.version:
            return reason
        if h.complete:
            return "left with the whole version"
        where = _pct(h.bytes_have, m.total_bytes)
        if "paused" in reason:
            return f"paused at {where}"
        return f"left at {where} ({reason})"
