"""Token bucket: the one rate limit every protocol core uses (clock injected)."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `take` spends `cost`."""

    __slots__ = ("tokens", "last", "rate", "burst")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.last = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def full(self, now: float) -> bool:
        """Whether the bucket would be full at `now` (nothing spent lately)."""
        return self.tokens + (now - self.last) * self.rate >= self.burst
