"""Path MTU discovery across real links between namespaces: a share and a clone
find the datagram size the path carries (jumbo frames, plain Ethernet, and a
router that silently drops what is too big)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cli import env, follow_share
from helpers import tree, visible
from installed import dattui_cmd

pytestmark = pytest.mark.netns


def _data(path, mib: int):
    path.mkdir()
    for i in range(4):
        (path / f"part{i}.bin").write_bytes(os.urandom(mib * (1 << 20) // 4))
    return path


def _transfer(share_host, clone_host, share_ip, tmp_path, mib: int):
    src = _data(tmp_path / "src", mib)
    share = share_host.popen([*dattui_cmd(), "share", str(src), "--json",
                              "--no-lan"], stdout=subprocess.PIPE, text=True, env=env(tmp_path / "ha"))
    try:
        first = follow_share(share)[0]
        p = clone_host.run([*dattui_cmd(), "clone", first["link"],
                            str(tmp_path / "dst"), "--json", "--no-lan",
                            "--peer", f"{share_ip}:{first['port']}"],
                           env=env(tmp_path / "hb"), check=False, timeout=180)
    finally:
        share.terminate()
        share.wait(10)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines[-1]["event"] == "done"
    assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    return [peer["datagram_size"] for l in lines if l["event"] == "progress" for peer in l["peers"]]


def test_jumbo_frames_are_found_and_used(lab, tmp_path):
    a, b = lab.add_host("a"), lab.add_host("b")
    link = lab.link(a, "10.70.0.1", b, "10.70.0.2", mtu=9000)
    lab.rate_limit(a, link.ifname_a, mbit=200)  # a few seconds, so progress lines show the size
    sizes = _transfer(a, b, "10.70.0.1", tmp_path, mib=64)
    assert sizes and sizes[-1] == 8952, sizes  # 16000 is refused by the interface, 8952 fits


def test_plain_ethernet_stays_at_the_base_size(lab, tmp_path):
    a, b = lab.add_host("a"), lab.add_host("b")
    link = lab.link(a, "10.71.0.1", b, "10.71.0.2", mtu=1500)
    lab.rate_limit(a, link.ifname_a, mbit=100)
    sizes = _transfer(a, b, "10.71.0.1", tmp_path, mib=24)
    assert sizes and set(sizes) == {1452}, sizes


def test_a_router_that_silently_drops_big_packets_is_no_black_hole(lab, tmp_path):
    """Jumbo interfaces on both ends, a 1500-byte hop in the middle whose router
    sends no ICMP "fragmentation needed": probes above 1500 vanish, so the
    search must settle on the base size, and the transfer must still finish."""
    a, r, b = lab.add_host("a"), lab.add_router("r"), lab.add_host("b")
    la = lab.link(a, "10.72.1.1", r, "10.72.1.254", mtu=9000)
    lab.link(r, "10.72.2.254", b, "10.72.2.1", mtu=1500)
    a.add_route("10.72.2.0/24", via="10.72.1.254")
    b.add_route("10.72.1.0/24", via="10.72.2.254")
    # r's end towards b claims 9000 (so r forwards jumbo packets without a word)
    # while b's end is 1500: veth drops what is larger than the receiving end's
    # MTU, and no ICMP goes back - a true black hole for big packets
    r.sh("ip link set dev eth1 mtu 9000")
    r.sh("iptables -A OUTPUT -p icmp -j DROP")
    lab.rate_limit(a, la.ifname_a, mbit=100)
    sizes = _transfer(a, b, "10.72.1.1", tmp_path, mib=24)
    assert sizes and sizes[-1] == 1452, sizes


def test_a_path_that_shrinks_mid_transfer_falls_back_and_finishes(lab, tmp_path):
    """The size was 8952; then the receiving end's MTU drops to 1500 without a
    word. The sender sees nothing acknowledged, falls back to the base size
    and the transfer completes."""
    import time

    a, b = lab.add_host("a"), lab.add_host("b")
    link = lab.link(a, "10.73.0.1", b, "10.73.0.2", mtu=9000)
    lab.rate_limit(a, link.ifname_a, mbit=80)
    src = _data(tmp_path / "src", 48)
    share = a.popen([*dattui_cmd(), "share", str(src), "--json", "--no-lan"],
                    stdout=subprocess.PIPE, text=True, env=env(tmp_path / "ha"))
    try:
        lines = follow_share(share)
        port = lines[0]["port"]
        clone = b.popen([*dattui_cmd(), "clone", lines[0]["link"],
                         str(tmp_path / "dst"), "--json", "--no-lan", "--peer", f"10.73.0.1:{port}"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env=env(tmp_path / "hb"))

        def share_sizes():
            return [p["datagram_size"] for l in list(lines) if l["event"] == "progress"
                    for p in l["peers"]]

        deadline = time.monotonic() + 30
        while 8952 not in share_sizes() and time.monotonic() < deadline and clone.poll() is None:
            time.sleep(0.1)
        assert 8952 in share_sizes(), share_sizes()
        b.sh(f"ip link set dev {link.ifname_b} mtu 1500")
        out, err = clone.communicate(timeout=120)
        assert clone.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["event"] == "done"
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
        time.sleep(1.2)  # one more progress line from the share
        assert share_sizes()[-1] == 1452, share_sizes()
    finally:
        share.terminate()
        share.wait(10)
