"""`dattui doctor`: why two machines cannot connect, and what to do about it.

    dattui doctor [--rendezvous HOST:PORT ...] [--stun HOST:PORT ...] [--no-dht] [--no-lan]
                  [--no-port-mapping] [--dht-bootstrap HOST:PORT,...] [--port N] [--json] [-v]
    dattui doctor --peer                 host a two-machine test: prints a one-time test id
    dattui doctor --peer ID              join it from the other machine
    dattui doctor --for-it               what to ask the network team to allow, as a text to send

Each check is printed as it finishes (✓ good, ✗ a problem, ? could not tell
or for information), its advice indented below, then the verdict and the
steps to take. `-v` adds each check's details. `--json` prints one object,
the whole report (see `engine.doctor.Doctor.report`).

The peer test prints each path (lan, direct, punched, relay-udp, relay-tcp)
as it is tried: works (with the round trip), failed, or not tried, and why;
then the best path on each side and the throughput sample over it. With
`--json`: a "peer_test_id" line (host), one "peer_path" line per path, and
a "peer_test" line with everything.

Exit status: 0 when direct connections will work (verdict "direct"), 1 for
every other verdict (relay only, UDP blocked, no server answers, no network,
could not tell); 2 for a usage error. The peer test exits 0 when the sample
went through, 1 when it did not.
"""

from __future__ import annotations

import json
import sys
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parser is built on every run: the engine is imported only when used
    from dattui.engine.daemon.interface import CheckResult
    from dattui.engine.doctor import DoctorOptions

MARK = {True: "✓", False: "✗", None: "?"}


def add_arguments(p) -> None:
    """The doctor's own options (the common ones come from main._common)."""
    p.add_argument("--peer", nargs="?", const="", default=None, metavar="ID",
                   help="two-machine test: without ID, host one and print its id; with ID, join it")
    p.add_argument("--stun", action="append", metavar="HOST:PORT",
                   help="an extra STUN server for the NAT tests (repeatable)")
    p.add_argument("--sample-mib", type=float, default=8.0, metavar="MIB",
                   help="peer test: size of the throughput sample each way (default 8 MiB)")
    p.add_argument("--sample-seconds", type=float, default=3.0, metavar="SECONDS",
                   help="peer test: the throughput sample stops after this long (default 3)")
    p.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                   help="peer test: how long the host waits for the other machine (default 600)")
    p.add_argument("--no-port-mapping", action="store_true",
                   help="do not ask the gateway about UPnP-IGD, NAT-PMP or PCP")
    p.add_argument("-v", "--verbose", action="store_true", help="show each check's details")
    p.add_argument("--for-it", action="store_true",
                   help="print a short text for your network team: exactly which destinations, ports "
                        "and protocols this machine needs allowed out (nothing is sent)")


def doctor_options(args, cfg) -> DoctorOptions:
    from dattui.engine.doctor import DoctorOptions

    return DoctorOptions(
        rendezvous=tuple(args.rendezvous or ()) + tuple(cfg.discovery.rendezvous),
        stun=tuple(args.stun or ()),
        host=cfg.node.bind,
        port=args.port if args.port is not None else cfg.node.port,
        lan=cfg.discovery.lan and not args.no_lan,
        port_mapping=not args.no_port_mapping,
        dht=cfg.discovery.dht and not args.no_dht,
        dht_bootstrap=tuple(args.dht_bootstrap.split(",")) if args.dht_bootstrap
        else tuple(cfg.discovery.dht_bootstrap))


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(textwrap.fill(line, width=100, initial_indent=prefix, subsequent_indent=" " * len(prefix))
                     for line in text.splitlines() if line.strip())


def format_check(r: CheckResult, verbose: bool = False) -> str:
    if r.name == "verdict":
        lines = [f"\n{MARK[r.ok]} verdict: {r.summary}"]
        for step in r.advice.splitlines():
            lines.append(_indent(step, "    - "))
        return "\n".join(lines)
    lines = [f"{MARK[r.ok]} {r.summary}"]
    if verbose and r.detail:
        lines.append(_indent(r.detail))
    if r.advice:
        lines.append(_indent(r.advice, "    → "))
    return "\n".join(lines)


async def run_doctor(args, cfg) -> int:
    from dattui.engine.doctor import Doctor

    opts = doctor_options(args, cfg)
    if getattr(args, "for_it", False):
        print(for_it(opts))
        return 0
    if args.peer is not None:
        return await _run_peer(args, cfg, opts)
    doc = Doctor(opts)
    async for r in doc.run():
        if not args.json:
            print(format_check(r, args.verbose), flush=True)
    if args.json:
        print(json.dumps(doc.report(), indent=None, separators=(",", ":")), flush=True)
    return 0 if doc.verdict is not None and doc.verdict.kind == "direct" else 1


def for_it(opts: DoctorOptions) -> str:
    """The `--for-it` text for this machine's configuration. Server names are
    resolved (a DNS lookup; an IP address is taken as it is)."""
    import os
    import socket

    from dattui.engine import netinfo
    from dattui.engine.discovery.static import parse_hostport
    from dattui.engine.doctor_checks.forit import RENDEZVOUS_PORT, ItFacts, for_it_text
    from dattui.engine.traversal.proxy import proxy_for

    servers = []
    proxies = set()
    for text in dict.fromkeys(opts.rendezvous):
        host, port = parse_hostport(text, RENDEZVOUS_PORT)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            ips = tuple(dict.fromkeys(i[4][0] for i in infos))
        except OSError:
            ips = ()
        servers.append((text, ips, port))
        proxy = proxy_for(host, port, os.environ)
        if proxy is not None:
            proxies.add(str(proxy))
    local = tuple(ip for i in netinfo.local_addresses() if i.up and not i.is_loopback for ip in i.ipv4)
    return for_it_text(ItFacts(hostname=socket.gethostname(), local_ips=local, port=opts.port,
                               servers=tuple(servers), dht=opts.dht, dht_bootstrap=opts.dht_bootstrap,
                               lan=opts.lan, port_mapping=opts.lan and opts.port_mapping,
                               proxy=", ".join(sorted(proxies)) or None))


# -- the two-machine test ------------------------------------------------------------------

PATH_MARK = {True: "✓", False: "✗", None: "-"}


def format_path(p) -> str:
    rtt = f" ({p.rtt_ms:.1f} ms round trip)" if p.ok and p.rtt_ms is not None else ""
    return f"{PATH_MARK[p.ok]} {p.path}: {'works' if p.ok else 'failed' if p.ok is False else 'not tried'}{rtt}" \
        + "\n" + _indent(p.reason)


def _rate(bps: float | None) -> str:
    if not bps:
        return "?"
    return f"{bps / (1 << 20):.1f} MiB/s"


def _print_peer(res, json_mode: bool) -> None:
    from dattui.engine.doctor_checks.peer import best_path

    from . import jsonout

    if json_mode:
        jsonout.emit({"event": "peer_test", **res.as_dict()})
        return
    if not res.paths:
        print(f"✗ no test: {res.error or 'the other machine was not reached'}")
        print(_indent("run `dattui doctor` on both machines to see why; both need the same "
                      "--rendezvous server", "    → "))
        return
    theirs = best_path(res.peer_paths)
    print()
    if res.best:
        print(f"{'✓' if res.ok else '✗'} best path from this machine: {res.best}"
              + (f" ({res.rtt_ms:.1f} ms round trip)" if res.rtt_ms is not None else ""))
        print(_indent(f"why: {res.why}"))
    else:
        print("✗ no path works from this machine")
    if theirs is not None:
        print(_indent(f"the other machine's best path: {theirs.path}"
                      + (f" ({theirs.rtt_ms:.1f} ms)" if theirs.rtt_ms is not None else "")))
    worked = [p.path for p in res.peer_paths if p.ok]
    print(_indent("paths that work from the other machine: " + (", ".join(worked) or "none")))
    if res.sample_path and res.throughput:
        print(_indent(f"throughput over {res.sample_path}: {res.bytes / (1 << 20):.1f} MiB received in "
                      f"{res.seconds:.2f} s = {_rate(res.throughput)}"))
        if res.peer_received:
            print(_indent(f"the other machine received {res.peer_received['bytes'] / (1 << 20):.1f} MiB "
                          f"at {_rate(res.peer_received['throughput'])}"))
    if res.error:
        print(_indent(res.error, "    → "))


async def _run_peer(args, cfg, opts: DoctorOptions) -> int:
    from dattui.engine.doctor_checks import peer_proto
    from dattui.engine.doctor_checks.peer import host_peer_test, join_peer_test

    from . import jsonout

    size = max(1, int(args.sample_mib * (1 << 20)))
    seconds = max(0.1, float(args.sample_seconds))

    def on_path(p) -> None:
        if args.json:
            jsonout.emit({"event": "peer_path", **p.as_dict()})
        else:
            print(format_path(p), flush=True)

    if args.peer:
        test_id = peer_proto.parse_test_id(args.peer)  # a one-line usage error before anything starts
        if not args.json:
            print("joining the peer test; trying every path (lan, direct, punched, relay-udp, relay-tcp)…",
                  flush=True)
        res = await join_peer_test(opts, test_id, size=size, seconds=seconds,
                                   find_timeout=min(args.wait, 60.0), on_path=on_path)
    else:
        def ready(test_id: str) -> None:
            if args.json:
                jsonout.emit({"event": "peer_test_id", "id": test_id})
                return
            extra = " ".join(f"--rendezvous {r}" for r in opts.rendezvous)
            print(f"peer test id: {peer_proto.format_test_id(test_id)}\n"
                  f"on the other machine run:\n    dattui doctor --peer {peer_proto.format_test_id(test_id)}"
                  f"{' ' + extra if extra else ''}\n"
                  f"waiting for it (up to {args.wait:g} s; Ctrl-C stops)…", flush=True)

        res = await host_peer_test(opts, size=size, seconds=seconds, wait=args.wait, on_ready=ready,
                                   on_path=on_path)
    _print_peer(res, args.json)
    sys.stdout.flush()
    return 0 if res.ok else 1
