"""Interface listing: loopback here, and a veth with addresses inside a
network namespace the test creates (nothing is sent anywhere)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dattui.engine.netinfo import Interface, is_private, local_addresses

ROOT = Path(__file__).resolve().parents[1]


def test_loopback_is_listed():
    ifs = local_addresses()
    assert all(isinstance(i, Interface) for i in ifs)
    lo = [i for i in ifs if "127.0.0.1" in i.ipv4]
    assert len(lo) == 1
    lo = lo[0]
    assert lo.is_loopback and lo.up and lo.index == socket.if_nametoindex(lo.name)
    assert [(i.index, i.name) for i in ifs] == sorted(socket.if_nameindex())
    try:
        with open("/proc/net/if_inet6") as f:
            rows = [line.split() for line in f]
    except OSError:
        rows = []
    if ["0" * 31 + "1", lo.name] in [[r[0], r[-1]] for r in rows if r]:
        assert "::1" in lo.ipv6


@pytest.mark.parametrize("ip, private", [
    ("10.1.2.3", True),
    ("172.16.0.1", True),
    ("172.31.255.255", True),
    ("172.32.0.1", False),
    ("192.168.1.1", True),
    ("169.254.3.4", True),
    ("127.0.0.1", True),
    ("100.64.0.1", False),
    ("8.8.8.8", False),
    ("192.0.2.1", False),
    ("fd12:3456::1", True),
    ("fe80::1", True),
    ("fe80::1%eth0", True),
    ("::1", True),
    ("2001:4860::8888", False),
    ("::ffff:192.168.0.1", True),
    ("::ffff:8.8.8.8", False),
    ("", False),
    ("not an ip", False),
    ("10.0.0.1/8", False),
])
def test_is_private(ip, private):
    assert is_private(ip) is private


_counter = itertools.count()

SCRIPT = r"""
import dataclasses, json, socket, sys
sys.path.insert(0, sys.argv[1])
from dattui.engine.netinfo import local_addresses
print(json.dumps({
    "ifs": [dataclasses.asdict(i) for i in local_addresses()],
    "index": {n: i for i, n in socket.if_nameindex()},
}))
"""


@pytest.fixture
def netns(request):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    assert shutil.which("ip"), "iproute2 is needed for the netns tests"
    name = f"dtl-ni-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    request.addfinalizer(
        lambda: subprocess.run(["ip", "netns", "del", name], capture_output=True)
    )
    return name


@pytest.mark.netns
def test_veth_in_namespace_is_listed(netns):
    pid = os.getpid()
    a, b = f"na{pid}", f"nb{pid}"

    def run(*cmd: str) -> str:
        return subprocess.run(["ip", "netns", "exec", netns, *cmd],
                              check=True, capture_output=True, text=True, timeout=20).stdout

    # Both ends of the pair live in the namespace: a is up with addresses,
    # b stays down with none.
    run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
    run("ip", "link", "set", "lo", "up")
    run("ip", "addr", "add", "10.77.0.1/24", "dev", a)
    run("ip", "addr", "add", "10.77.5.1/24", "dev", a)  # a secondary address
    run("ip", "addr", "add", "10.77.9.1/24", "dev", a, "label", f"{a}:1")
    ipv6 = os.path.exists("/proc/net/if_inet6")
    if ipv6:
        run("ip", "-6", "addr", "add", "fd77::1/64", "dev", a, "nodad")
    run("ip", "link", "set", a, "up")

    out = json.loads(run(sys.executable, "-c", SCRIPT, str(ROOT)))
    ifs = {i["name"]: i for i in out["ifs"]}
    assert set(ifs) == {"lo", a, b}
    assert ifs["lo"]["ipv4"] == ["127.0.0.1"] and ifs["lo"]["is_loopback"] and ifs["lo"]["up"]

    va = ifs[a]
    assert va["index"] == out["index"][a]
    assert va["ipv4"] == ["10.77.0.1", "10.77.5.1", "10.77.9.1"]
    assert va["up"] and va["multicast"] and not va["is_loopback"]
    if ipv6:
        assert "fd77::1" in va["ipv6"]

    vb = ifs[b]
    assert vb["ipv4"] == [] and not vb["up"] and vb["multicast"] and not vb["is_loopback"]
    assert [i["index"] for i in out["ifs"]] == sorted(out["index"].values())
