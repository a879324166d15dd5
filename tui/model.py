"""What the dashboard knows: the newest status of every transfer, a short rate
history per transfer, and bounded buffers of recent events.

Pure and cheap: the app feeds it every event as it arrives and a status
snapshot at most `refresh_hz` times a second; screens read it when they redraw.
Nothing here redraws, so a flood of events costs an append each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

from dattui.engine.events import (
    Event,
    PeerConnected,
    PeerProgressed,
    PeerDisconnected,
    PathAttempted,
    PeerFound,
    Role,
    TransferStatus,
)

from .format import name_of

__all__ = ["Dashboard", "Entry", "HISTORY_SECONDS"]

HISTORY_SECONDS = 120  # the rate graph spans two minutes, one sample a second


class Entry(NamedTuple):
    seq: int       # 1, 2, 3... in arrival order
    stamp: float   # wall clock when it arrived (time.time())
    event: Event


_ATTEMPT_TYPES = (PeerFound, PathAttempted, PeerConnected, PeerDisconnected)


class Dashboard:
    def __init__(
        self,
        *,
        history_seconds: int = HISTORY_SECONDS,
        event_capacity: int = 5000,
        attempt_capacity: int = 1000,
    ) -> None:
        self.transfers: dict[str, TransferStatus] = {}
        self.version = 0  # bumped when any status changed
        self._history_len = history_seconds
        self._history: dict[str, deque[float]] = {}
        self._history_second: dict[str, int] = {}
        self._events: deque[Entry] = deque(maxlen=event_capacity)
        self._attempts: deque[Entry] = deque(maxlen=attempt_capacity)
        self.event_seq = 0
        self.attempt_seq = 0
        self._names: dict[str, str] = {}

    # ---- status ---------------------------------------------------------------

    def apply(self, statuses: Iterable[TransferStatus], now: float) -> bool:
        """Take a new snapshot of every transfer; `now` is a monotonic clock in
        seconds (one rate sample is kept per second). True if anything changed."""
        new = {s.tid: s for s in statuses}
        changed = list(new) != list(self.transfers) or any(
            self.transfers.get(tid) != s for tid, s in new.items()
        )
        self.transfers = new
        second = int(now)
        for tid, s in new.items():
            self._names[tid] = name_of(s)
            rate = s.rate_down + s.rate_up
            hist = self._history.get(tid)
            if hist is None:
                hist = self._history[tid] = deque(maxlen=self._history_len)
            if hist and self._history_second.get(tid) == second:
                hist[-1] = rate  # the current second: keep the newest value
            else:
                hist.append(rate)
                self._history_second[tid] = second
        for tid in list(self._history):
            if tid not in new:
                del self._history[tid]
                self._history_second.pop(tid, None)
        if changed:
            self.version += 1
        return changed

    def history(self, tid: str) -> list[float]:
        """The rate (bytes/s, down + up) over the last `history_seconds`,
        oldest first, padded with zeros on the left to the full window; the
        oldest value is always 0."""
        hist = self._history.get(tid, ())
        pad = self._history_len - len(hist)
        data = [0.0] * pad + list(hist)
        # the graph scales from its smallest value: keep a zero in it so that a
        # steady rate draws as a full bar, not as an empty line
        data[0] = 0.0
        return data

    def names(self) -> dict[str, str]:
        """tid -> folder name, for every transfer ever seen."""
        return self._names

    def main_rate(self, status: TransferStatus) -> float:
        return status.rate_down if status.role is Role.CLONE else status.rate_up

    # ---- events ---------------------------------------------------------------

    def add_event(self, ev: Event, stamp: float) -> None:
        """Keep `ev` (cheap: an append to bounded buffers). A clone's progress
        as its share hears it is in the status snapshots, not the log."""
        if isinstance(ev, PeerProgressed):
            return
        self.event_seq += 1
        self._events.append(Entry(self.event_seq, stamp, ev))
        if isinstance(ev, _ATTEMPT_TYPES):
            self.attempt_seq += 1
            self._attempts.append(Entry(self.attempt_seq, stamp, ev))

    @staticmethod
    def _after(buf: deque[Entry], seq: int, limit: int) -> tuple[list[Entry], int]:
        """Entries with seq > `seq`, at most the newest `limit` of them, and how
        many newer ones were dropped (too many, or already out of the buffer)."""
        if not buf or buf[-1].seq <= seq:
            return [], 0
        newest = buf[-1].seq
        wanted = newest - seq
        take = min(wanted, limit, len(buf))
        out = [buf[i] for i in range(len(buf) - take, len(buf))]
        return out, wanted - take

    def events_after(self, seq: int, limit: int = 500) -> tuple[list[Entry], int]:
        return self._after(self._events, seq, limit)

    def attempts_after(self, seq: int, limit: int = 500) -> tuple[list[Entry], int]:
        return self._after(self._attempts, seq, limit)
