"""Share -> clone between two network namespaces joined by a veth pair (MTU 1500)."""

from __future__ import annotations

import json
import sys

import pytest

from cli import env, follow_share
from helpers import make_tree, tree, visible

pytestmark = pytest.mark.netns


def _share(host, src, home, *extra):
    proc = host.popen([sys.executable, "-m", "tui.main", "share", str(src), "--json", *extra],
                      stdout=__import__("subprocess").PIPE, text=True, env=env(home))
    first = follow_share(proc)[0]
    return proc, first


def _clone(host, link, dst, home, *extra):
    p = host.run([sys.executable, "-m", "tui.main", "clone", link, str(dst), "--json", *extra],
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
