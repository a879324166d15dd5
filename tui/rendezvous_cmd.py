"""`dattui rendezvous --bind HOST:PORT [--alt-bind [HOST:]PORT|off]`: run a
rendezvous server until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import sys

from dattui.engine.discovery.static import parse_hostport
from dattui.engine.errors import UsageError
from dattui.engine.rendezvous.server import AUTO, run_rendezvous


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


async def run_rendezvous_cmd(args) -> int:
    host, port = parse_hostport(args.bind, 3478)
    alt = parse_alt(getattr(args, "alt_bind", None), host)

    def ready(server) -> None:
        addrs = server.udp_addresses
        extra = ""
        others = [f"{h}:{p}" for k, (h, p) in sorted(addrs.items()) if k != (0, 0)]
        if others:
            kind = "port and IP address" if (1, 1) in addrs else "port"
            extra = f"; STUN also on UDP {', '.join(others)} (alternate {kind}, RFC 5780 NAT tests)"
        print(f"rendezvous: STUN and meeting point on UDP {server.udp_address[0]}:{server.udp_address[1]}, "
              f"relay over UDP and TCP {server.tcp_address[0]}:{server.tcp_address[1]}{extra}; Ctrl-C stops",
              file=sys.stderr, flush=True)

    task = asyncio.ensure_future(run_rendezvous(host, port, tcp_port=args.tcp_port, alt=alt, ready=ready))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    except ValueError as exc:
        print(f"dattui: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dattui: cannot serve on {args.bind}: {exc.strerror}; pick another --bind"
              + (" or --alt-bind" if alt not in (None, AUTO) else ""), file=sys.stderr)
        return 1
    return 0
