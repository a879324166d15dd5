"""Another program holding the LAN discovery port (without sharing it) costs
LAN discovery, with a warning, never the transfer and never a traceback.
In a namespace of its own, so the port is surely free to take first."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli import env, follow_share
from installed import dattui_cmd

pytestmark = pytest.mark.netns

HOLD = "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); " \
       "s.bind(('', 3283)); print('held', flush=True); sys.stdin.read()"


def test_share_and_clone_run_when_the_lan_port_is_taken(lab, tmp_path):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, "10.62.0.1", b, "10.62.0.2", mtu=1500)
    holders = [h.popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       text=True) for h in (a, b)]
    try:
        assert all(h.stdout.readline().strip() == "held" for h in holders)
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.txt").write_text("hello\n")
        share = a.popen([*dattui_cmd(), "share", str(src), "--json"], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, env=env(tmp_path / "ha"))
        lines = follow_share(share)
        p = b.run([*dattui_cmd(), "clone", lines[0]["link"], str(tmp_path / "dst"), "--json",
                   "--peer", f"10.62.0.1:{lines[0]['port']}"], env=env(tmp_path / "hb"), check=False,
                  timeout=120)
        share.terminate()
        share.wait(30)
    finally:
        for h in holders:
            h.kill()
    clone_lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert (tmp_path / "dst" / "a.txt").read_text() == "hello\n"
    for got in (lines, clone_lines):
        assert any(x.get("event") == "logged" and "no LAN discovery" in x.get("message", "") for x in got), got
    assert "Traceback" not in share.stderr.read()
