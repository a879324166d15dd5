"""The researcher's workflow between two network namespaces that find each
other on the LAN."""

from __future__ import annotations

import json
import subprocess

import pytest

from cli import env, follow_share
from helpers import make_tree, tree, visible
from installed import dattui_cmd
from test_workflow import wait_line

pytestmark = pytest.mark.netns


def test_lan_transfer_one_connection_and_both_sides_see_it(lab, tmp_path):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, "10.63.0.1", b, "10.63.0.2", mtu=1500)
    src = make_tree(tmp_path / "src")
    share = a.popen([*dattui_cmd(), "share", str(src), "--json"], stdout=subprocess.PIPE,
                    text=True, env=env(tmp_path / "ha"))
    try:
        share_lines = follow_share(share)
        p = b.run([*dattui_cmd(), "clone", share_lines[0]["link"], str(tmp_path / "dst"), "--json",
                   "--timeout", "20"], env=env(tmp_path / "hb"), check=False, timeout=120)
        assert p.returncode == 0, p.stderr
        lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
        connected = [l for l in lines if l["event"] == "peer_connected"]
        assert len(connected) == 1 and connected[0]["path"] == "lan"
        assert not [l for l in lines if l["event"] == "peer_disconnected"]
        # the share saw one collaborator, its progress, its completion, and why it left
        left = wait_line(share_lines, lambda l: l["event"] == "peer_disconnected")
        assert left["reason"] == "left with the whole version"
        assert [l["event"] for l in share_lines].count("peer_connected") == 1
        assert any(l["event"] == "peer_completed" for l in share_lines)
        assert not any("duplicate" in json.dumps(l) for l in share_lines + lines)
    finally:
        share.terminate()
        share.wait(10)
