"""Several rendezvous servers: nodes register with each and meet at the first
that answers (NAT lab)."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers import tree, visible
from nat_helpers import RDV, RDV_PORT, Share, clone, dattui, first_connection
from natlab import NatKind, add_peer, build_internet

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("dead", [0, 1])
def test_peers_meet_when_one_of_two_servers_is_down(lab, tmp_path, dead):
    """Both nodes list RDV[0] then RDV[1]; only one of them runs."""
    inet = build_internet(lab)
    host = inet.add_server("rdv", *RDV)
    alive = RDV[1 - dead]
    proc = host.popen(dattui("rendezvous", "--bind", f"{alive}:{RDV_PORT}"), stderr=subprocess.PIPE, text=True)
    assert "rendezvous" in proc.stderr.readline()
    a = add_peer(lab, inet, NatKind.CONE, 1)
    b = add_peer(lab, inet, NatKind.MASQ, 2)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(1 << 20))
    try:
        sh = Share(a.host, src, tmp_path / "hs")
        p, lines, secs = clone(b.host, sh.link, tmp_path / "dst", tmp_path / "hc")
        assert p.returncode == 0, p.stderr[-2000:]
        conn = first_connection(lines)
        assert conn is not None and conn["path"] == "punched", conn
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
        assert secs < 30, secs  # no wait for the dead server's retries to run out
    finally:
        proc.terminate()
