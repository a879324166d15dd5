"""In the NAT lab, with no rendezvous server, no DHT and no LAN discovery: a
public share and two clones behind two port-restricted cone NATs, each clone
given only `--peer SHARE`. The share introduces the clones to each other and
relays the punch introduction; they punch at once, connect over the punched
path and trade blocks (the share's upload is slow, tbf on its uplink)."""

from __future__ import annotations

import json
import random
import subprocess
import threading

import pytest

from cli import cmd, env, follow_share
from helpers import tree, visible
from natlab import NatKind, add_peer, build_internet

pytestmark = pytest.mark.netns

MiB = 1 << 20
PORT = 3282


def test_two_clones_behind_cone_nats_meet_through_the_share_alone(lab, tmp_path):
    inet = build_internet(lab)
    sh = add_peer(lab, inet, NatKind.PUBLIC, 1)
    clones = [add_peer(lab, inet, NatKind.CONE, 2), add_peer(lab, inet, NatKind.CONE, 3)]
    lab.rate_limit(sh.host, sh.ifname, 8)  # 1 MB/s: the clones have time to trade
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(random.Random(5).randbytes(6 * MiB))
    share = sh.host.popen(cmd("share", src, "--json", "--no-lan", "--no-dht", "--port", PORT),
                          stdout=subprocess.PIPE, text=True, env=env(tmp_path / "hs"))
    link = follow_share(share)[0]["link"]
    out: list = [None, None]

    def run(i: int) -> None:
        p = clones[i].host.run(cmd("clone", link, tmp_path / f"c{i}", "--json", "--no-lan",
                                   "--no-dht", "--port", PORT, "--timeout", "30",
                                   "--peer", f"{sh.public_ip}:{PORT}"),
                               env=env(tmp_path / f"h{i}"), check=False, timeout=90)
        out[i] = (p, [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    share.terminate()
    for i, (p, lines) in enumerate(out):
        assert p.returncode == 0, p.stderr
        assert lines[-1]["event"] == "done"
        assert visible(tree(tmp_path / f"c{i}")) == visible(tree(src))
        other = clones[1 - i].public_ip
        conns = [l for l in lines if l["event"] == "peer_connected"]
        print(f"\nclone {i}: " + "; ".join(f"{c['address']} {c['path']} {c['connect_seconds']} s"
                                          for c in conns))
        assert any(c["address"].startswith(sh.public_ip + ":") for c in conns)
        to_other = [c for c in conns if c["address"].startswith(other + ":")]
        assert to_other and to_other[0]["path"] == "punched", conns
        steps = [l["step"] for l in lines if l["event"] == "path_attempted"]
        assert "punched" in steps, steps
        sent = max((l["bytes_sent"] for l in lines if l["event"] == "progress"), default=0)
        print(f"clone {i} sent {sent} bytes to the other clone")
        assert sent > 0  # its only peers are the share, which asks for nothing, and the other clone
