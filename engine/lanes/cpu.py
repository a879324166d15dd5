"""Is this process CPU-bound? The share of a core it used over the last
WINDOW seconds, from samples taken as a transfer ticks (clocks injected)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW = 1.0
CPU_BOUND = 0.8  # of one core: above this, one connection's packet work is the limit


class CpuGauge:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.process_time) -> None:
        self._clock = clock
        self._cpu = cpu
        self._samples: deque[tuple[float, float]] = deque()

    def sample(self) -> None:
        now = self._clock()
        self._samples.append((now, self._cpu()))
        while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW:
            self._samples.popleft()

    def load(self) -> float:
        """Cores used over the last WINDOW seconds or more; 0 before a full window."""
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 - t0 >= WINDOW else 0.0

    def busy(self) -> bool:
        return self.load() >= CPU_BOUND
