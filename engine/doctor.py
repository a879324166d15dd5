"""Connectivity checks, as a stream of results (not printed text).

This first set looks only at this machine; rendezvous, NAT and DHT checks
plug in here (see the doctor issue).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

from . import netinfo
from .daemon.interface import CheckResult


async def local_checks(port: int | None) -> AsyncIterator[CheckResult]:
    ifaces = [i for i in netinfo.local_addresses() if i.up and not i.is_loopback]
    v4 = [a for i in ifaces for a in i.ipv4]
    v6 = [a for i in ifaces for a in i.ipv6 if not a.startswith("fe80")]
    if v4 or v6:
        yield CheckResult("local_addresses", True, f"local addresses: {', '.join(v4 + v6)}")
    else:
        yield CheckResult("local_addresses", False, "no network interface has an address",
                          advice="connect this machine to a network")
    if port:
        yield CheckResult("port", True, f"dattui listens on UDP port {port}")
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("0.0.0.0", 3282))
            yield CheckResult("port", True, "UDP port 3282 is free")
        except OSError:
            yield CheckResult("port", None, "UDP port 3282 is taken: dattui will use the next free one")
        finally:
            s.close()
    mc = [i.name for i in ifaces if i.multicast and i.ipv4]
    if mc:
        yield CheckResult("lan", True, f"peers on the local network can be found on {', '.join(mc)}")
    else:
        yield CheckResult("lan", False, "no interface can reach the local network by multicast",
                          advice="use --peer HOST:PORT to connect to a known address")
