"""Transfer rates: bytes per second over a sliding window, clock injected."""

from __future__ import annotations

from collections import deque


class RateMeter:
    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self.total = 0
        self._samples: deque[tuple[float, int]] = deque()  # (second, bytes)

    def add(self, n: int, now: float) -> None:
        self.total += n
        sec = float(int(now * 4)) / 4  # quarter-second buckets bound memory
        if self._samples and self._samples[-1][0] == sec:
            self._samples[-1] = (sec, self._samples[-1][1] + n)
        else:
            self._samples.append((sec, n))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        if not self._samples:
            return 0.0
        return sum(n for _, n in self._samples) / self.window
