"""Bandwidth limits: rates, a weekly schedule, and the throttle that holds them.

Sans-IO: nothing here reads a clock or touches a socket; the caller passes
`now` (monotonic seconds) and the local time of day.

Rates are written as people write them: "20MB" or "20MB/s" (10^6 bytes),
"2MiB" (2^20), "500k", "100mbit" (bits). "", "0", "off" or "unlimited" mean
no limit. A schedule rule is one string:

    "mon-fri 08:00-18:00 up=20MB down=50MB"
    "sat,sun up=off"
    "22:00-06:00 down=unlimited"

days (mon..sun, ranges and lists; omitted: every day), an optional time
window (may wrap past midnight), then `up=` and/or `down=`. The first rule
that matches the local time gives the limits it names; what it does not name,
and the times no rule matches, take the base limits (`--limit-up/--limit-down`
or `[bandwidth] limit_up/limit_down`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UsageError

_UNITS = {
    "": 1, "b": 1,
    "k": 1e3, "kb": 1e3, "ki": 1024, "kib": 1024,
    "m": 1e6, "mb": 1e6, "mi": 1024 ** 2, "mib": 1024 ** 2,
    "g": 1e9, "gb": 1e9, "gi": 1024 ** 3, "gib": 1024 ** 3,
    "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*?)(?:/s|ps)?\s*$", re.I)
_OFF = ("", "0", "off", "none", "unlimited")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_rate(text: str) -> float | None:
    """Bytes per second, or None for no limit. UsageError on anything else."""
    t = str(text).strip().lower()
    if t in _OFF:
        return None
    m = _RATE.match(t)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise UsageError(f"bandwidth {text!r} is not a rate: write e.g. 20MB (per second), "
                         "2MiB, 500k, 100mbit, or off")
    rate = float(m.group(1)) * _UNITS[unit]
    if rate < 1024:
        raise UsageError(f"bandwidth {text!r} is below 1 KiB/s: too slow to move a block; "
                         "write off for no limit")
    return rate


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "unlimited"
    return f"{rate / 1e6:.3g} MB/s" if rate >= 1e6 else f"{rate / 1e3:.3g} kB/s"


@dataclass(frozen=True, slots=True)
class Limits:
    up: float | None = None    # bytes/s, None: unlimited
    down: float | None = None


_UNSET = object()


@dataclass(frozen=True, slots=True)
class Rule:
    days: frozenset[int]       # 0 = Monday
    start: int | None          # minute of the day the window opens, None: all day
    end: int | None
    up: object = _UNSET        # float | None, or _UNSET: the base limit
    down: object = _UNSET

    def matches(self, weekday: int, minute: int) -> bool:
        if self.start is None or self.end is None:
            return weekday in self.days
        if self.start <= self.end:
            return weekday in self.days and self.start <= minute < self.end
        # wraps past midnight: the part after midnight belongs to the day it started
        if minute >= self.start:
            return weekday in self.days
        return minute < self.end and (weekday - 1) % 7 in self.days


def _days(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        if a not in DAYS or (b and b not in DAYS):
            raise ValueError(part)
        i, j = DAYS.index(a), DAYS.index(b or a)
        out.update(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
    return frozenset(out)


def _minute(text: str) -> int:
    h, _, m = text.partition(":")
    hour, minute = int(h), int(m or 0)
    if not (0 <= hour <= 24 and 0 <= minute < 60) or hour * 60 + minute > 24 * 60:
        raise ValueError(text)
    return hour * 60 + minute


def parse_rule(text: str) -> Rule:
    """One schedule rule (see the module's docstring). UsageError if malformed."""
    days, start, end, limits = frozenset(range(7)), None, None, {}
    try:
        for word in text.lower().split():
            if "=" in word:
                key, _, value = word.partition("=")
                if key not in ("up", "down") or key in limits:
                    raise ValueError(word)
                limits[key] = parse_rate(value)
            elif re.fullmatch(r"\d{1,2}(:\d\d)?-\d{1,2}(:\d\d)?", word):
                a, b = word.split("-")
                start, end = _minute(a), _minute(b)
            else:
                days = _days(word)
    except ValueError as exc:
        raise UsageError(f"bandwidth schedule rule {text!r}: cannot read {exc}; write e.g. "
                         '"mon-fri 08:00-18:00 up=20MB down=50MB"') from None
    if not limits:
        raise UsageError(f"bandwidth schedule rule {text!r} sets neither up= nor down=")
    return Rule(days, start, end, limits.get("up", _UNSET), limits.get("down", _UNSET))


@dataclass(frozen=True, slots=True)
class Plan:
    """Base limits and the schedule's rules, first match wins."""
    base: Limits = Limits()
    rules: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, up: str = "", down: str = "", schedule: tuple[str, ...] = ()) -> "Plan":
        return cls(Limits(parse_rate(up), parse_rate(down)), tuple(parse_rule(r) for r in schedule))

    def limits_at(self, weekday: int, minute: int) -> Limits:
        for rule in self.rules:
            if rule.matches(weekday, minute):
                return Limits(self.base.up if rule.up is _UNSET else rule.up,          # type: ignore[arg-type]
                              self.base.down if rule.down is _UNSET else rule.down)    # type: ignore[arg-type]
        return self.base


class Throttle:
    """A token bucket whose rate can change while it runs (None: unlimited).
    `allow(now)` says whether more may be sent now; `spend(n, now)` takes n
    bytes (it may go below zero: one block is never split); `wait(now)` is
    how long until `allow` turns true again. The bucket holds at most
    BURST_SECONDS of the rate, so a pause is not followed by a flood."""

    BURST_SECONDS = 0.25
    __slots__ = ("rate", "tokens", "last")

    def __init__(self, rate: float | None, now: float) -> None:
        self.rate = rate
        self.tokens = rate * self.BURST_SECONDS if rate is not None else 0.0
        self.last = now

    def _refill(self, now: float) -> None:
        if self.rate is not None and now > self.last:
            self.tokens = min(self.rate * self.BURST_SECONDS, self.tokens + (now - self.last) * self.rate)
        self.last = max(self.last, now)

    def set_rate(self, rate: float | None, now: float) -> None:
        self._refill(now)
        if rate != self.rate:
            self.rate = rate
            self.tokens = min(self.tokens, 0.0) if rate is not None else 0.0

    def allow(self, now: float) -> bool:
        if self.rate is None:
            return True
        self._refill(now)
        return self.tokens > 0

    def spend(self, nbytes: int, now: float) -> None:
        if self.rate is not None:
            self._refill(now)
            self.tokens -= nbytes

    def wait(self, now: float) -> float:
        if self.allow(now):
            return 0.0
        return -self.tokens / self.rate + 1e-3  # type: ignore[operator]
