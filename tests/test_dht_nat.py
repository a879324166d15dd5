"""Share and clone find each other through the Mainline DHT alone: a DHT made
only of libtorrent nodes, no LAN discovery, no rendezvous server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_tree, tree, visible
from nat_helpers import Share, clone, first_connection
from natlab import NatKind, add_peer, build_internet

pytestmark = pytest.mark.netns
pytest.importorskip("libtorrent")

DHT_IPS = [f"203.0.113.{20 + i}" for i in range(5)]
BOOT = ",".join(f"{ip}:6881" for ip in DHT_IPS)


def _home(path: Path) -> Path:
    path.mkdir(parents=True, mode=0o700)
    (path / "config.toml").write_text(
        "[discovery]\nlan = false\ndht = true\ndht_bootstrap = [%s]\n"
        % ", ".join(f'"{ip}:6881"' for ip in DHT_IPS))
    return path


def _dht(inet):
    host = inet.add_server("dht", *DHT_IPS)
    proc = host.popen([sys.executable, str(Path(__file__).with_name("lt_dht_nodes.py")),
                       *(f"{ip}:6881" for ip in DHT_IPS)],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("kinds", [(NatKind.PUBLIC, NatKind.PUBLIC), (NatKind.CONE, NatKind.CONE)],
                         ids=["public-public", "cone-cone"])
def test_share_and_clone_meet_through_a_libtorrent_dht(lab, tmp_path, kinds):
    inet = build_internet(lab)
    dht = _dht(inet)
    a = add_peer(lab, inet, kinds[0], 1)
    b = add_peer(lab, inet, kinds[1], 2)
    src = make_tree(tmp_path / "src")
    try:
        sh = Share(a.host, src, _home(tmp_path / "hs"), dht=True)
        p, lines, secs = clone(b.host, sh.link, tmp_path / "dst", _home(tmp_path / "hc"), dht=True)
        assert p.returncode == 0, p.stderr
        conn = first_connection(lines)
        assert conn is not None and conn["address"].startswith(a.public_ip + ":")
        found = [l for l in lines if l["event"] == "peer_found"]
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        dht.stdin.close()
        dht.terminate()
