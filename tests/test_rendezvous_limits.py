"""`dattui rendezvous` relay limits: flags, config keys, defaults."""

from __future__ import annotations

import argparse

import pytest

from dattui import config as config_mod
from dattui.engine.errors import UsageError
from dattui.engine.rendezvous.server_core import ServerLimits
from dattui.tui.main import build_parser
from dattui.tui.rendezvous_cmd import describe_limits, limits_from, parse_rate


@pytest.mark.parametrize("text,want", [
    ("0", 0), ("125000", 125_000), ("100M", 100_000_000), ("100MB", 100_000_000), ("1G", 10**9),
    ("50MiB", 50 << 20), ("1.5M", 1_500_000), ("1gb/s", 10**9), ("8k", 8000), ("4Ki", 4096),
])
def test_parse_rate(text, want):
    assert parse_rate(text, "--relay-rate") == want


@pytest.mark.parametrize("text", ["", "fast", "-1", "5x", "5G"])
def test_parse_rate_refuses(text):
    with pytest.raises(UsageError, match="--relay-rate"):
        parse_rate(text, "--relay-rate")


def test_defaults_carry_datasets():
    lim = ServerLimits()
    assert lim.relay_rate == 0 and lim.relay_rate_per_allocation == 0 and lim.relay_max_duration == 0
    assert lim.relay_idle == 60
    cfg = config_mod.defaults()
    got = limits_from(build_parser().parse_args(["rendezvous"]), cfg)
    assert (got.relay_rate, got.relay_rate_per_allocation, got.relay_max_duration, got.relay_idle) == (0, 0, 0, 60)
    # the anti-abuse limits are untouched
    assert got.request_rate == lim.request_rate and got.max_allocations_per_ip == lim.max_allocations_per_ip
    assert describe_limits(got) == "relay bandwidth no limit, allocations end after 60 s idle"


def test_config_then_flags(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[rendezvous]\nrelay_rate = 50000000\nrelay_max_duration = 600\n")
    cfg = config_mod.load(path)
    args = build_parser().parse_args(["rendezvous"])
    got = limits_from(args, cfg)
    assert got.relay_rate == 50_000_000 and got.relay_max_duration == 600
    args = build_parser().parse_args(["rendezvous", "--relay-rate", "1G", "--relay-rate-per-allocation", "100M",
                                      "--relay-max-duration", "0", "--relay-idle", "30"])
    got = limits_from(args, cfg)
    assert (got.relay_rate, got.relay_rate_per_allocation, got.relay_max_duration, got.relay_idle) == \
        (10**9, 10**8, 0, 30)
    assert describe_limits(got) == ("relay bandwidth 1 GB/s, at most 100 MB/s per connection, "
                                    "allocations end after 30 s idle")
    with pytest.raises(UsageError, match="--relay-idle"):
        limits_from(argparse.Namespace(relay_idle=0), cfg)


@pytest.mark.parametrize("text,words", [
    ("[rendezvous]\nrelay_rate = -1\n", "rendezvous.relay_rate"),
    ("[rendezvous]\nrelay_rate = \"1G\"\n", "an integer"),
    ("[rendezvous]\nrelay_idle = 0\n", "rendezvous.relay_idle"),
    ("[rendezvous]\nrelay_max_duration = -5\n", "rendezvous.relay_max_duration"),
    ("[rendezvous]\nrelay_speed = 5\n", "unknown key rendezvous.relay_speed"),
])
def test_config_errors(tmp_path, text, words):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=words):
        config_mod.load(path)
