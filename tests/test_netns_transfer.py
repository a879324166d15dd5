"""Share -> clone between two network namespaces joined by a veth pair (MTU 1500)."""

from __future__ import annotations

import json
import sys

import pytest

from cli import env, follow_share
from helpers import make_tree, tree, visible
from installed import dattui_cmd

pytestmark = pytest.mark.netns


def _share(host, src, home, *extra):
    proc = host.popen([*dattui_cmd(), "share", str(src), "--json", *extra],
                      stdout=__import__("subprocess").PIPE, text=True, env=env(home))
    first = follow_share(proc)[0]
    return proc, first


def _clone(host, link, dst, home, *extra):
    p = host.run([*dattui_cmd(), "clone", link, str(dst), "--json", *extra],
                 env=env(home), check=False, timeout=120)
    return p, [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def test_clone_across_veth_mtu_1500_with_peer_address(lab, tmp_path):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, "10.60.0.1", b, "10.60.0.2", mtu=1500)
    src = make_tree(tmp_path / "src")
    with open(src / "big2.bin", "wb") as f:
        f.write(bytes(range(256)) * 40000)
    share, first = _share(a, src, tmp_path / "ha", "--no-lan")
    p, lines = _clone(b, first["link"], tmp_path / "dst", tmp_path / "hb", "--no-lan",
                      "--peer", f"10.60.0.1:{first['port']}")
    assert p.returncode == 0, p.stderr
    conn = [l for l in lines if l["event"] == "peer_connected"][0]
    assert conn["address"] == f"10.60.0.1:{first['port']}" and conn["path"] == "direct"
    assert lines[-1]["event"] == "done"
    assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    share.terminate()


def test_lan_discovery_finds_the_share_without_an_address(lab, tmp_path):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, "10.61.0.1", b, "10.61.0.2", mtu=1500)
    src = make_tree(tmp_path / "src")
    share, first = _share(a, src, tmp_path / "ha")
    p, lines = _clone(b, first["link"], tmp_path / "dst", tmp_path / "hb", "--timeout", "20")
    assert p.returncode == 0, p.stderr
    conn = [l for l in lines if l["event"] == "peer_connected"][0]
    assert conn["address"].startswith("10.61.0.1:") and conn["path"] == "lan"
    assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    share.terminate()


def _lane_workers() -> int:
    import subprocess
    p = subprocess.run(["pgrep", "-f", "engine.lanes.worker"], capture_output=True, text=True)
    return len(p.stdout.split())


def test_lanes_carry_a_large_clone_across_veth(lab, tmp_path):
    """Real processes on both sides with --lanes 2: the share's lanes listen on
    ports of their own, the clone's lanes connect to them across the veth once
    a side is CPU-bound, and no lane process outlives its transfer."""
    import os
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, "10.62.0.1", b, "10.62.0.2", mtu=1500)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"part{i}.bin").write_bytes(os.urandom(64 * 1024 * 1024))
    share, first = _share(a, src, tmp_path / "ha", "--no-lan", "--lanes", "2")
    try:
        p, lines = _clone(b, first["link"], tmp_path / "dst", tmp_path / "hb", "--no-lan",
                          "--peer", f"10.62.0.1:{first['port']}", "--lanes", "2")
        assert p.returncode == 0, p.stderr
        logs = [l["message"] for l in lines if l["event"] == "logged"]
        assert any(m.startswith("lane 1 connected to 10.62.0.1:") for m in logs), logs
        assert lines[-1]["event"] == "done" and lines[-1]["bytes_received"] == 256 * 1024 * 1024
        assert tree(tmp_path / "dst") == tree(src)
    finally:
        share.terminate()
        share.wait(20)
    assert _lane_workers() == 0
