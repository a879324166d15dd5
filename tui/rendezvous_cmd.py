"""`dattui rendezvous --bind HOST:PORT [--alt-bind [HOST:]PORT|off]`: run a
rendezvous server until Ctrl-C."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys

from dattui.engine import bandwidth as bw
from dattui.engine.discovery.static import parse_hostport
from dattui.engine.errors import UsageError
from dattui.engine.rendezvous.server import AUTO, run_rendezvous
from dattui.engine.rendezvous.server_core import ServerLimits



def parse_rate(text: str, flag: str) -> int:
    """Bytes per second as `--limit-up` takes them (engine/bandwidth.py:
    "100MB", "50MiB", "1gbit"), 0 for "0"/"off": no limit."""
    if not text.strip():
        raise UsageError(f"{flag}: give bytes per second, e.g. 100MB, or 0 for no limit")
    try:
        value = bw.parse_rate(text)
    except UsageError as exc:
        raise UsageError(f"{flag}: {exc} (0: no limit)") from None
    if value is not None and value > 0xFFFFFFFF:
        raise UsageError(f"{flag} {text}: at most 4294967295 bytes per second (about 4.2 GB/s; 0: no limit)")
    return 0 if value is None else int(value)


def limits_from(args, cfg) -> ServerLimits:
    """The server's limits: config `[rendezvous]`, overridden by the flags."""
    rc = cfg.rendezvous
    rate, per = rc.relay_rate, rc.relay_rate_per_allocation
    duration, idle = rc.relay_max_duration, rc.relay_idle
    if getattr(args, "relay_rate", None) is not None:
        rate = parse_rate(args.relay_rate, "--relay-rate")
    if getattr(args, "relay_rate_per_allocation", None) is not None:
        per = parse_rate(args.relay_rate_per_allocation, "--relay-rate-per-allocation")
    if getattr(args, "relay_max_duration", None) is not None:
        duration = args.relay_max_duration
        if duration < 0:
            raise UsageError("--relay-max-duration: 0 (no limit) or a positive number of seconds")
    if getattr(args, "relay_idle", None) is not None:
        idle = args.relay_idle
        if idle <= 0:
            raise UsageError("--relay-idle: a positive number of seconds")
    return dataclasses.replace(ServerLimits(), relay_rate=rate, relay_rate_per_allocation=per,
                               relay_max_duration=float(duration), relay_idle=float(idle))


def _rate_words(rate: int) -> str:
    if not rate:
        return "no limit"
    return f"{rate / 1e9:.3g} GB/s" if rate >= 10**9 else f"{rate / 1e6:.3g} MB/s"


def describe_limits(lim: ServerLimits) -> str:
    words = f"relay bandwidth {_rate_words(lim.relay_rate)}"
    if lim.relay_rate_per_allocation:
        words += f", at most {_rate_words(lim.relay_rate_per_allocation)} per connection"
    words += ", allocations end after " + (f"{lim.relay_max_duration:g} s" if lim.relay_max_duration
                                           else f"{lim.relay_idle:g} s idle")
    return words


def parse_alt(text: str | None, bind_host: str):
    """--alt-bind: None (not given) -> automatic; "off" -> None; "PORT" -> the
    bind address with that port; "HOST:PORT" -> a second IP address."""
    if text is None:
        return AUTO
    text = text.strip()
    if text.lower() in ("off", "none", "no"):
        return None
    if text.isdigit():
        port = int(text)
        if not 0 < port < 65536:
            raise UsageError(f"--alt-bind {text}: a port is 1-65535")
        return bind_host, port
    return parse_hostport(text, 0)  # a missing port is a one-line usage error


async def run_rendezvous_cmd(args, cfg) -> int:
    host, port = parse_hostport(args.bind, 3478)
    alt = parse_alt(getattr(args, "alt_bind", None), host)
    limits = limits_from(args, cfg)
    running: list = []

    def ready(server) -> None:
        running.append(server)
        addrs = server.udp_addresses
        extra = ""
        others = [f"{h}:{p}" for k, (h, p) in sorted(addrs.items()) if k != (0, 0)]
        if others:
            kind = "port and IP address" if (1, 1) in addrs else "port"
            extra = f"; STUN also on UDP {', '.join(others)} (alternate {kind}, RFC 5780 NAT tests)"
        print(f"rendezvous: STUN and meeting point on UDP {server.udp_address[0]}:{server.udp_address[1]}, "
              f"relay over UDP and TCP {server.tcp_address[0]}:{server.tcp_address[1]}{extra}; "
              f"{describe_limits(limits)}; Ctrl-C stops",
              file=sys.stderr, flush=True)

    def summary() -> None:
        if running:
            st = running[0].core.stats
            print(f"rendezvous: relayed {st.relayed_bytes} bytes in {st.allocations_made} allocation(s) "
                  f"({st.allocations_expired} ended at the maximum duration; at most "
                  f"{st.max_allocation_bytes} bytes in one), "
                  f"dropped {st.relay_dropped_bytes} bytes over the rate", file=sys.stderr, flush=True)

    task = asyncio.ensure_future(run_rendezvous(host, port, tcp_port=args.tcp_port, alt=alt, ready=ready,
                                                limits=limits))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        summary()
    except ValueError as exc:
        print(f"dattui: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dattui: cannot serve on {args.bind}: {exc.strerror}; pick another --bind"
              + (" or --alt-bind" if alt not in (None, AUTO) else ""), file=sys.stderr)
        return 1
    return 0
