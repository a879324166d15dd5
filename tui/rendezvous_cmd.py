"""`dattui rendezvous --bind HOST:PORT`: run a rendezvous server until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import sys

from engine.discovery.static import parse_hostport
from engine.rendezvous.server import run_rendezvous


async def run_rendezvous_cmd(args) -> int:
    host, port = parse_hostport(args.bind, 3478)

    def ready(server) -> None:
        print(f"rendezvous: STUN and meeting point on UDP {server.udp_address[0]}:{server.udp_address[1]}, "
              f"relay over UDP and TCP {server.tcp_address[0]}:{server.tcp_address[1]}; Ctrl-C stops",
              file=sys.stderr, flush=True)

    task = asyncio.ensure_future(run_rendezvous(host, port, tcp_port=args.tcp_port, ready=ready))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    except OSError as exc:
        print(f"dattui: cannot serve on {args.bind}: {exc.strerror}; pick another --bind", file=sys.stderr)
        return 1
    return 0
