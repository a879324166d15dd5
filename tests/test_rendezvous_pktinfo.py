"""`dattui rendezvous` bound to 0.0.0.0 on a host with two addresses answers
from the address each request came to (IP_PKTINFO), in a network namespace."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from installed import dattui_cmd

pytestmark = pytest.mark.netns

SERVER_IPS = ("203.0.113.10", "203.0.113.11")
CLIENT_IP = "203.0.113.20"

# Run in the client's namespace: STUN Binding requests (plain, and with
# CHANGE-REQUEST "change port") to each server address; prints where each
# answer came from. Plain Python: no dattui code on the client's side.
CLIENT = r"""
import json, os, socket, struct, sys
out = []
for ip in sys.argv[1].split(","):
    for change in (0, 2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.settimeout(3)
        attrs = struct.pack("!HHI", 3, 4, change) if change else b""
        tid = os.urandom(12)
        s.sendto(struct.pack("!HHI", 1, len(attrs), 0x2112A442) + tid + attrs,
                 (ip, 3478))
        try:
            data, src = s.recvfrom(2048)
            out.append([ip, change, src[0], src[1], data[8:20] == tid])
        except socket.timeout:
            out.append([ip, change, None, None, False])
        s.close()
print(json.dumps(out))
"""


def test_wildcard_server_answers_from_the_address_asked(lab):
    server = lab.add_host("rdv")
    client = lab.add_host("client")
    lab.link(server, SERVER_IPS[0], client, CLIENT_IP)
    server.run(["ip", "addr", "add", f"{SERVER_IPS[1]}/24", "dev", "eth0"])
    proc = server.popen(dattui_cmd("rendezvous", "--bind", "0.0.0.0:3478"), stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "0.0.0.0:3478" in line and "alternate port" in line, line
        got = json.loads(client.run([sys.executable, "-c", CLIENT, ",".join(SERVER_IPS)]).stdout)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for ip, change, src_ip, src_port, same_tid in got:
        assert same_tid, (ip, change, src_ip)
        # the answer comes from the address asked, also from the alternate port
        assert (src_ip, src_port) == (ip, 3479 if change else 3478), (ip, change, src_ip, src_port)
