"""Bandwidth limits: rates as people write them, a weekly schedule, a throttle
on a fake clock, and real share/clone processes held to a limit."""

from __future__ import annotations

import os
import subprocess

import pytest

from cli import ShareProcess, cmd, env, run_clone
from dattui.engine.bandwidth import Limits, Plan, Throttle, parse_rate, parse_rule
from dattui.engine.errors import UsageError


def test_rates_as_people_write_them():
    assert parse_rate("20MB") == 20e6 == parse_rate("20 MB/s") == parse_rate("20mbps") * 1
    assert parse_rate("2MiB") == 2 * 1024 ** 2
    assert parse_rate("500k") == 500e3
    assert parse_rate("100mbit") == 12.5e6
    for off in ("", "0", "off", "unlimited", "none"):
        assert parse_rate(off) is None
    for bad in ("fast", "20XB", "-5MB", "10"):
        with pytest.raises(UsageError):
            parse_rate(bad)


def test_schedule_first_match_wins_and_windows_wrap_past_midnight():
    plan = Plan.parse("100MB", "", ("mon-fri 08:00-18:00 up=20MB down=50MB",
                                    "22:00-06:00 up=off", "sat,sun down=1MB"))
    MON, FRI, SAT, SUN = 0, 4, 5, 6
    assert plan.limits_at(MON, 9 * 60) == Limits(20e6, 50e6)
    assert plan.limits_at(MON, 18 * 60) == Limits(100e6, None)        # the window's end is open
    assert plan.limits_at(FRI, 23 * 60) == Limits(None, None)          # night, any day
    assert plan.limits_at(SAT, 3 * 60) == Limits(None, None)           # Friday night's window
    assert plan.limits_at(SAT, 12 * 60) == Limits(100e6, 1e6)
    assert plan.limits_at(SUN, 7 * 60) == Limits(100e6, 1e6)
    assert parse_rule("fri-mon up=1MB").days == frozenset({4, 5, 6, 0})
    for bad in ("mon-fri", "someday up=1MB", "08:00-25:00 up=1MB", "up=1MB up=2MB"):
        with pytest.raises(UsageError):
            parse_rule(bad)


def test_throttle_holds_its_rate_on_a_fake_clock():
    rate, block = 2e6, 256 * 1024
    t = Throttle(rate, now=0.0)
    now, sent = 0.0, 0
    while now < 20.0:
        if t.allow(now):
            t.spend(block, now)
            sent += block
        else:
            now += t.wait(now)
    assert abs(sent - rate * 20) <= rate * Throttle.BURST_SECONDS + block
    # a new rate takes over without a saved-up flood, None lifts the limit
    t.set_rate(1e6, now)
    assert not t.allow(now) or t.tokens <= 1e6 * Throttle.BURST_SECONDS
    t.set_rate(None, now)
    assert t.allow(now) and t.wait(now) == 0.0


def test_a_bad_limit_is_one_line_before_anything_starts(tmp_path):
    p = subprocess.run(cmd("share", tmp_path, "--limit-up", "fast"), capture_output=True, text=True,
                       env=env(tmp_path / "h"), timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "is not a rate" in p.stderr
    assert not (tmp_path / ".dat").exists()


SIZE = 8 * 1024 * 1024


@pytest.mark.parametrize("side", ["down", "up"])
def test_a_limited_transfer_takes_at_least_size_over_rate(tmp_path, side):
    # A lower bound on the time is what a busy machine cannot break: it only
    # makes transfers slower. bench/bench_bandwidth.py measures how close.
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(SIZE))
    extra_share = ["--limit-up", "2MB"] if side == "up" else []
    extra_clone = ["--limit-down", "2MB"] if side == "down" else []
    sp = ShareProcess(src, tmp_path / "hs", "--port", "0", *extra_share)
    try:
        p, lines = run_clone(sp.link, tmp_path / "dst", tmp_path / "hc", "--peer",
                             f"127.0.0.1:{sp.port}", *extra_clone, timeout=120)
    finally:
        sp.stop()
    assert p.returncode == 0, p.stderr
    done = [line for line in lines if line["event"] == "done"][-1]
    assert (tmp_path / "dst" / "data.bin").read_bytes() == (src / "data.bin").read_bytes()
    burst = 2e6 * Throttle.BURST_SECONDS
    assert done["seconds"] >= (SIZE - burst - 256 * 1024) / 2e6, done


def test_background_limits_go_to_the_daemon_and_a_bad_one_changes_nothing(tmp_path):
    import asyncio

    from dattui.engine.daemon.client import DaemonClient
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    home = tmp_path / "h"
    e = env(home)
    try:
        p = subprocess.run(cmd("share", src, "--background", "--port", "0", "--no-lan",
                               "--limit-up", "3MB"), capture_output=True, text=True, env=e, timeout=90)
        assert p.returncode == 0, p.stderr
        assert "up 3 MB/s, down unlimited" in p.stderr
        p = subprocess.run(cmd("share", src, "--background", "--port", "0", "--no-lan",
                               "--limit-down", "slow"), capture_output=True, text=True, env=e, timeout=90)
        assert p.returncode == 2 and "is not a rate" in p.stderr and len(p.stderr.splitlines()) == 1

        async def read():
            client = await DaemonClient.connect(home)
            try:
                return await client.limits()
            finally:
                await client.close()
        assert asyncio.run(read()) == (3e6, None)
    finally:
        subprocess.run(cmd("stop"), capture_output=True, env=e, timeout=60)
