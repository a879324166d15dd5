#!/usr/bin/env python3
"""Relayed vs direct throughput in the NAT lab, same run, same machine.

    sudo python bench/bench_relay.py [--size-mib 64] [--relay-rate RATE]

Needs root (network namespaces; tests/natlab.py builds the lab: an
"internet" bridge, two peers behind home-router NATs, one rendezvous host;
no traffic leaves those namespaces). It runs `dattui rendezvous` with its
defaults (or `--relay-rate`), shares a folder of one random file from peer 1
and clones it on peer 2 twice:

  punched  the NATs let the punch through (a direct QUIC path)
  relayed  peer 2's router drops UDP to and from peer 1's network, so only the
           rendezvous relay (over UDP) connects them

and prints, per run, the path the clone reported, seconds from the clone's
start to its exit and MB/s (MB = 10**6 bytes) over the file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cli import env  # noqa: E402
from nat_helpers import RDV, RDV_PORT, Share, dattui, rendezvous_args  # noqa: E402
from natlab import NatKind, add_peer, build_internet  # noqa: E402
from netlab import Lab  # noqa: E402


def clone(peer, link: str, dst: Path, home: Path) -> tuple[float, set[str], int]:
    t0 = time.monotonic()
    p = peer.host.run(dattui("clone", link, str(dst), "--json", "--no-lan", "--no-dht", "--timeout", "40",
                             *rendezvous_args()), env=env(home), check=False, timeout=600)
    secs = time.monotonic() - t0
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    paths = {x["path"] for l in lines if l["event"] == "progress" for x in l.get("peers", [])}
    return secs, paths, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--relay-rate", default=None, help="passed to dattui rendezvous (default: its own)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    size = args.size_mib << 20
    results = []
    with Lab() as lab, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inet = build_internet(lab)
        host = inet.add_server("rdv", *RDV)
        extra = ["--relay-rate", args.relay_rate] if args.relay_rate else []
        servers = [host.popen(dattui("rendezvous", "--bind", f"{ip}:{RDV_PORT}", *(extra if i == 0 else [])),
                              stderr=subprocess.PIPE, text=True) for i, ip in enumerate(RDV)]
        banner = servers[0].stderr.readline().strip()
        servers[1].stderr.readline()
        print(banner)
        a = add_peer(lab, inet, NatKind.CONE, 1)
        b = add_peer(lab, inet, NatKind.CONE, 2)
        src = tmp / "src"
        src.mkdir()
        (src / "data.bin").write_bytes(os.urandom(size))
        sh = Share(a.host, src, tmp / "hs")
        block = [["-p", "udp", "-d", a.public_ip, "-j", "DROP"], ["-p", "udp", "-s", a.public_ip, "-j", "DROP"]]
        for run in ("punched", "relayed"):
            if run == "relayed":
                for rule in block:
                    b.router.run(["iptables", "-I", "FORWARD", *rule])
            b.flush_conntrack()
            secs, paths, rc = clone(b, sh.link, tmp / f"dst-{run}", tmp / f"hc-{run}")
            ok = rc == 0 and (tmp / f"dst-{run}" / "data.bin").stat().st_size == size
            results.append((run, ",".join(sorted(paths)) or "?", secs, size / secs / 1e6 if ok else 0.0, ok))
        sh.proc.terminate()
        for s in servers:
            s.terminate()
        summary = servers[0].communicate(timeout=10)[1]
        m = re.search(r"relayed \d+ bytes.*", summary)
    print(f"{'run':8} {'path':10} {'seconds':>8} {'MB/s':>7}  ({args.size_mib} MiB, one file)")
    for run, path, secs, mbps, ok in results:
        print(f"{run:8} {path:10} {secs:8.2f} {mbps:7.1f}{'' if ok else '  FAILED'}")
    if m:
        print("server:", m.group(0))
    return 0 if all(r[-1] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
