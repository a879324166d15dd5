"""Relays that carry datasets: a relayed transfer well above the old 1 MiB/s
per-allocation cap, through allocations that end under it (NAT lab)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from helpers import tree, visible
from nat_helpers import RDV, RDV_PORT, Share, dattui
from natlab import NatKind, add_peer, build_internet
from test_nat_resilience import _finish, _start_clone, _wait_progress

pytestmark = pytest.mark.netns

SIZE = 32 * 1024 * 1024
RATE = 8_000_000          # bytes/s, the relay's configured bandwidth
DURATION = 2              # s, each allocation's maximum
OLD_RATE, OLD_BURST = 1 << 20, 256 * 1024   # the cap this replaces


class RelayServer:
    """`dattui rendezvous` on RDV[0] with a given relay configuration, and a
    plain one on RDV[1] (it answers STUN); `stop()` returns the first one's
    exit summary."""

    def __init__(self, host, *relay_args: str) -> None:
        self.main = host.popen(dattui("rendezvous", "--bind", f"{RDV[0]}:{RDV_PORT}", *relay_args),
                               stderr=subprocess.PIPE, text=True)
        line = self.main.stderr.readline()
        assert "relay bandwidth" in line, line
        self.banner = line
        self.other = host.popen(dattui("rendezvous", "--bind", f"{RDV[1]}:{RDV_PORT}"),
                                stderr=subprocess.PIPE, text=True)
        assert "rendezvous" in self.other.stderr.readline()

    def stop(self) -> dict[str, int]:
        self.other.terminate()
        self.main.terminate()
        rest = self.main.communicate(timeout=10)[1]
        m = re.search(r"relayed (\d+) bytes in (\d+) allocation\(s\) \((\d+) ended at the maximum "
                      r"duration; at most (\d+) bytes in one\), dropped (\d+) bytes", rest)
        assert m, rest
        keys = ("relayed", "allocations", "expired", "max_one", "dropped")
        return dict(zip(keys, map(int, m.groups())))


def test_relayed_transfer_beyond_the_old_cap_survives_allocation_ends(lab, tmp_path):
    inet = build_internet(lab)
    rdv = RelayServer(inet.add_server("rdv", *RDV), "--relay-rate", str(RATE),
                      "--relay-max-duration", str(DURATION))
    assert "relay bandwidth 8 MB/s" in rdv.banner and f"after {DURATION} s" in rdv.banner
    a = add_peer(lab, inet, NatKind.CONE, 1)
    b = add_peer(lab, inet, NatKind.CONE, 2)
    # punching fails for good (a firewall drops UDP between the two networks):
    # only the relay connects them
    b.router.run(["iptables", "-I", "FORWARD", "-p", "udp", "-d", a.public_ip, "-j", "DROP"])
    b.router.run(["iptables", "-I", "FORWARD", "-p", "udp", "-s", a.public_ip, "-j", "DROP"])
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(SIZE))
    stats = None
    try:
        sh = Share(a.host, src, tmp_path / "hs")
        lines: list = []
        proc = _start_clone(b, sh.link, tmp_path / "dst", tmp_path / "hc")
        mid = _wait_progress(proc, 0.05, lines)
        assert mid and mid["event"] == "progress"
        assert [p["path"] for p in mid["peers"]] == ["relay-udp"]
        assert _finish(proc, lines) == 0
        assert lines[-1]["event"] == "done"
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
        assert sum(1 for l in lines if l["event"] == "peer_connected") == 1  # never reconnected
        paths = {p["path"] for l in lines if l["event"] == "progress" for p in l["peers"]}
        assert paths == {"relay-udp"}
    finally:
        stats = rdv.stop()
    print("relay server:", stats)
    # the connection outlived allocations that ended under it, and went on through new ones
    assert stats["expired"] >= 1 and stats["allocations"] >= 2
    # nothing fetched twice: what the relay carried is the data plus QUIC's overhead and ACKs
    assert SIZE <= stats["relayed"] <= 1.25 * SIZE
    # one allocation (at most DURATION s, plus the server's 1 s tick) carried more than
    # the old cap allowed in that time, and no more than the configured rate allows
    assert stats["max_one"] > OLD_RATE * (DURATION + 1) + OLD_BURST
    assert stats["max_one"] <= RATE * (DURATION + 1) + 256 * 1024
