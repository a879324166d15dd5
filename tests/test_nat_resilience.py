"""A transfer that survives a cut link and a peer that changes address."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from cli import env
from helpers import tree, visible
from nat_helpers import RDV, Share, dattui, rendezvous_args, start_rendezvous
from natlab import NatKind, add_peer, build_internet

pytestmark = pytest.mark.netns
SIZE = 48 * 1024 * 1024


def _dataset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big.bin", "wb") as f:
        f.write(os.urandom(SIZE))
    return src


def _start_clone(peer, link, dst, home):
    proc = peer.host.popen(dattui("clone", link, dst, "--json", "--no-lan", "--no-dht",
                                  "--timeout", "40", *rendezvous_args()),
                           stdout=subprocess.PIPE, text=True, env=env(home))
    return proc


def _wait_progress(proc, fraction, lines):
    for line in proc.stdout:
        obj = json.loads(line)
        lines.append(obj)
        if obj["event"] == "progress" and obj["bytes_total"] and \
                obj["bytes_have"] >= fraction * obj["bytes_total"]:
            return obj
        if obj["event"] == "done":
            return obj
    return None


def _finish(proc, lines, timeout=120):
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(json.loads(line))
        if time.monotonic() > deadline:
            break
    return proc.wait(timeout=30)


@pytest.mark.parametrize("share_kind,clone_kind", [(NatKind.CONE, NatKind.CONE)])
def test_transfer_survives_a_cut_link(lab, tmp_path, share_kind, clone_kind):
    inet = build_internet(lab)
    rdv = start_rendezvous(inet.add_server("rdv", *RDV))
    a = add_peer(lab, inet, share_kind, 1)
    b = add_peer(lab, inet, clone_kind, 2)
    lab.rate_limit(a.router, "eth0", 40)  # about 10 s for the whole file
    src = _dataset(tmp_path)
    try:
        sh = Share(a.host, src, tmp_path / "hs")
        lines: list = []
        proc = _start_clone(b, sh.link, tmp_path / "dst", tmp_path / "hc")
        mid = _wait_progress(proc, 0.2, lines)
        assert mid and mid["event"] == "progress", "the transfer ended before the cut"
        b.cut()
        time.sleep(5)
        b.restore()
        assert _finish(proc, lines) == 0
        assert lines[-1]["event"] == "done"
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        rdv.stop()


def test_transfer_survives_the_clone_changing_address(lab, tmp_path):
    inet = build_internet(lab)
    rdv = start_rendezvous(inet.add_server("rdv", *RDV))
    a = add_peer(lab, inet, NatKind.PUBLIC, 1)
    b = add_peer(lab, inet, NatKind.CONE, 2)
    lab.rate_limit(a.host, "eth0", 40)
    src = _dataset(tmp_path)
    try:
        sh = Share(a.host, src, tmp_path / "hs")
        lines: list = []
        proc = _start_clone(b, sh.link, tmp_path / "dst", tmp_path / "hc")
        mid = _wait_progress(proc, 0.2, lines)
        assert mid and mid["event"] == "progress"
        old = b.public_ip
        new = b.change_address()  # a laptop moving to another network: new address, NAT state gone
        assert new != old
        assert _finish(proc, lines) == 0
        assert lines[-1]["event"] == "done"
        # the share saw the clone at its new address
        addrs = {p["address"].split(":")[0] for l in sh.lines if l["event"] == "progress"
                 for p in l.get("peers", [])}
        assert new in addrs
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        rdv.stop()


def test_relayed_connection_moves_to_a_punched_path_without_interruption(lab, tmp_path):
    inet = build_internet(lab)
    rdv = start_rendezvous(inet.add_server("rdv", *RDV))
    a = add_peer(lab, inet, NatKind.CONE, 1)
    b = add_peer(lab, inet, NatKind.CONE, 2)
    lab.rate_limit(a.router, "eth0", 40)
    # a firewall on the clone's side drops UDP to and from the share's network for now:
    # punching fails, the rendezvous (and its relay) still works
    rule = ["-p", "udp", "-d", a.public_ip, "-j", "DROP"]
    rule_back = ["-p", "udp", "-s", a.public_ip, "-j", "DROP"]
    b.router.run(["iptables", "-I", "FORWARD", *rule])
    b.router.run(["iptables", "-I", "FORWARD", *rule_back])
    src = _dataset(tmp_path)
    try:
        sh = Share(a.host, src, tmp_path / "hs")
        lines: list = []
        proc = _start_clone(b, sh.link, tmp_path / "dst", tmp_path / "hc")
        mid = _wait_progress(proc, 0.1, lines)
        assert mid and mid["event"] == "progress"
        assert [p["path"] for p in mid["peers"]] == ["relay-udp"]
        b.router.run(["iptables", "-D", "FORWARD", *rule])
        b.router.run(["iptables", "-D", "FORWARD", *rule_back])
        assert _finish(proc, lines) == 0
        paths = [p["path"] for l in lines if l["event"] == "progress" for p in l["peers"]]
        assert "relay-udp" in paths and paths[-1] == "punched"
        assert sum(1 for l in lines if l["event"] == "peer_connected") == 1  # never reconnected
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        rdv.stop()
