"""Running dattui share/clone/rendezvous inside the NAT lab."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from cli import env, follow_share
from installed import dattui_cmd

RDV = ("203.0.113.10", "203.0.113.11")
RDV_PORT = 3478


def dattui(*args) -> list[str]:
    return dattui_cmd(*args)


def rendezvous_args() -> list[str]:
    out = []
    for ip in RDV:
        out += ["--rendezvous", f"{ip}:{RDV_PORT}"]
    return out


class Rendezvous:
    """One `dattui rendezvous` per server address (two servers, as far as nodes can
    tell): nodes register with both and meet at the first; both answer STUN.
    (One server bound to 0.0.0.0 now answers each address from itself too:
    tests/test_rendezvous_pktinfo.py.)"""

    def __init__(self, server_host) -> None:
        self.procs = []
        for ip in RDV:
            proc = server_host.popen(dattui("rendezvous", "--bind", f"{ip}:{RDV_PORT}"),
                                     stderr=subprocess.PIPE, text=True)
            line = proc.stderr.readline()
            assert "rendezvous" in line, line
            self.procs.append(proc)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()


def start_rendezvous(server_host) -> Rendezvous:
    return Rendezvous(server_host)


class Share:
    def __init__(self, host, folder, home, debug: bool = False, dht: bool = False) -> None:
        args = [] if dht else ["--no-dht", *rendezvous_args()]
        self.proc = host.popen(dattui("share", folder, "--json", "--no-lan", *args),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE if debug else None,
                               text=True, env=env(home, **({"DATTUI_DEBUG": "1"} if debug else {})))
        self.lines = follow_share(self.proc)
        self.link = self.lines[0]["link"]


def clone(host, link, dst, home, *extra, timeout=90, debug: bool = False, dht: bool = False):
    t0 = time.monotonic()
    args = [] if dht else ["--no-dht", *rendezvous_args()]
    p = host.run(dattui("clone", link, dst, "--json", "--no-lan", "--timeout", "40",
                        *args, *extra), env=env(home, **({"DATTUI_DEBUG": "1"} if debug else {})),
                 check=False, timeout=timeout)
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    return p, lines, time.monotonic() - t0


def first_connection(lines) -> dict | None:
    for l in lines:
        if l["event"] == "peer_connected":
            return l
    return None


RDV_ALT_PORT = 3479


class Rendezvous5780:
    """One `dattui rendezvous` with four UDP sockets for RFC 5780 NAT behaviour
    discovery: 203.0.113.10 and .11, ports 3478 and 3479 (`--alt-bind`). Nodes
    meet at .10:3478; .11:3478 answers STUN (the mapping tests compare the two);
    a CHANGE-REQUEST is answered from the other socket. Takes the place of
    `start_rendezvous` (same addresses: `rendezvous_args()` fit both)."""

    def __init__(self, server_host) -> None:
        self.proc = server_host.popen(dattui("rendezvous", "--bind", f"{RDV[0]}:{RDV_PORT}",
                                             "--alt-bind", f"{RDV[1]}:{RDV_ALT_PORT}"),
                                      stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        assert "alternate port and IP address" in line, line
        self.procs = [self.proc]

    def stop(self) -> None:
        self.proc.terminate()


def start_rendezvous_rfc5780(server_host) -> Rendezvous5780:
    return Rendezvous5780(server_host)
