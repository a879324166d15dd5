"""Self-tests for tests/netlab.py (network namespaces; root only)."""

import subprocess
import sys

import pytest

import netlab

pytestmark = pytest.mark.netns

PY = sys.executable

UDP_ECHO_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    if data == b"quit":
        break
    s.sendto(data + b"|" + addr[0].encode(), addr)
"""

UDP_ECHO_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for attempt in range(20):
    s.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
    try:
        data, _ = s.recvfrom(65535)
        print(data.decode())
        break
    except socket.timeout:
        continue
else:
    sys.exit("no echo")
"""

# Send one DF datagram of the given payload size: prints "ok" or "EMSGSIZE".
UDP_DF_SEND = r"""
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# IP_MTU_DISCOVER=10, IP_PMTUDISC_DO=2 (no socket constants before Python 3.12)
s.setsockopt(socket.IPPROTO_IP, getattr(socket, 'IP_MTU_DISCOVER', 10), getattr(socket, 'IP_PMTUDISC_DO', 2))
s.connect((sys.argv[1], int(sys.argv[2])))
try:
    s.send(b"x" * int(sys.argv[3]))
    print("ok")
except OSError as e:
    print("EMSGSIZE" if e.errno == errno.EMSGSIZE else repr(e))
"""

# Blast N numbered datagrams; the receiver counts what arrived.
UDP_COUNT_RECV = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
s.settimeout(1.0)
n = 0
try:
    while True:
        s.recvfrom(2048)
        n += 1
except socket.timeout:
    pass
print(n, flush=True)
"""

UDP_BLAST = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(b"%d" % i, (sys.argv[1], int(sys.argv[2])))
    if i % 50 == 0:
        time.sleep(0.001)
"""

TCP_SINK = r"""
import socket, sys, time
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
c, _ = srv.accept()
t0 = None; n = 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    if t0 is None:
        t0 = time.monotonic()
    n += len(b)
print(n, time.monotonic() - t0, flush=True)
"""

TCP_SOURCE = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.sendall(b"\0" * int(sys.argv[3]))
c.close()
"""


def start_ready(host, script, *args):
    p = host.popen([PY, "-c", script, *map(str, args)], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip() == "ready", f"server did not start: {line!r}"
    return p


def test_two_hosts_udp_echo_and_mtu(lab):
    a = lab.add_host("a")
    b = lab.add_host("b")
    link = lab.link(a, "10.77.0.1", b, "10.77.0.2", mtu=1500)
    assert (link.ifname_a, link.ifname_b) == ("eth0", "eth0")
    assert a.ip == "10.77.0.1" and b.ip == "10.77.0.2"
    assert a.mtu("eth0") == 1500 and b.mtu("eth0") == 1500
    assert "state UP" in a.sh("ip -o link show dev eth0") or "LOWER_UP" in a.sh("ip -o link show dev eth0")
    assert "UP" in a.sh("ip -o link show dev lo")

    srv = start_ready(b, UDP_ECHO_SERVER, "10.77.0.2", 4000)
    out = a.run([PY, "-c", UDP_ECHO_CLIENT, "10.77.0.2", 4000], timeout=30).stdout.strip()
    assert out == "hello|10.77.0.1"
    # and the other way round (b's server answered a; now a serves b over loopback+veth)
    srv2 = start_ready(a, UDP_ECHO_SERVER, "0.0.0.0", 4001)
    out = b.run([PY, "-c", UDP_ECHO_CLIENT, "10.77.0.1", 4001], timeout=30).stdout.strip()
    assert out == "hello|10.77.0.2"
    for p in (srv, srv2):
        p.kill()
        p.wait()

    # MTU 1500: 1472-byte UDP payload fits with DF, 1473 does not (20 IP + 8 UDP header).
    assert a.run([PY, "-c", UDP_DF_SEND, "10.77.0.2", 9, 1472]).stdout.strip() == "ok"
    assert a.run([PY, "-c", UDP_DF_SEND, "10.77.0.2", 9, 1473]).stdout.strip() == "EMSGSIZE"


def test_small_mtu_link(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, "10.78.0.1", b, "10.78.0.2", mtu=1280)
    assert a.mtu("eth0") == 1280 and b.mtu("eth0") == 1280
    assert a.run([PY, "-c", UDP_DF_SEND, "10.78.0.2", 9, 1252]).stdout.strip() == "ok"
    assert a.run([PY, "-c", UDP_DF_SEND, "10.78.0.2", 9, 1253]).stdout.strip() == "EMSGSIZE"


def test_namespaces_isolated_from_root(lab):
    a = lab.add_host("a")
    lab.link(a, "10.79.0.1", lab.add_host("b"), "10.79.0.2")
    links = a.sh("ip -o link show")
    assert "lo" in links and "eth0" in links
    assert len(links.strip().splitlines()) == 2  # only lo + our veth inside
    # our veth never shows up in the root namespace
    root = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert a.ns not in root


def test_teardown_kills_processes_and_removes_namespaces():
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    with netlab.Lab() as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        lab.link(a, "10.80.0.1", b, "10.80.0.2")
        names = [a.ns, b.ns]
        tracked = a.popen(["sleep", "600"])
        # a process the lab did not start itself, also inside a namespace
        untracked = subprocess.Popen(["ip", "netns", "exec", b.ns, "sleep", "600"])
        # one that ignores SIGTERM
        stubborn = a.popen([PY, "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                      "print('ready', flush=True); time.sleep(600)"],
                           stdout=subprocess.PIPE, text=True)
        assert stubborn.stdout.readline().strip() == "ready"
        assert all(netlab.ns_exists(n) for n in names)
        assert tracked.pid in netlab._ns_pids(a.ns)
    for n in names:
        assert not netlab.ns_exists(n)
    assert tracked.poll() is not None and stubborn.poll() is not None
    untracked.wait(timeout=5)
    lab.close()  # idempotent


def test_teardown_after_failure_halfway():
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    names = []
    with pytest.raises(netlab.NetlabError):
        with netlab.Lab() as lab:
            a = lab.add_host("a")
            names.append(a.ns)
            lab.link(a, "10.81.0.1", lab.add_host("b"), "10.81.0.2")
            names.append(lab.hosts[-1].ns)
            lab.link(a, "not-an-ip", lab.add_host("c"), "10.81.1.2")  # fails midway
    assert len(lab.hosts) == 3
    for n in names + [lab.hosts[-1].ns]:
        assert not netlab.ns_exists(n)


def test_cleanup_stale_removes_dead_pid_namespaces():
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    # a pid that is certainly dead: a finished child
    p = subprocess.Popen(["true"])
    p.wait()
    stale = f"dt{p.pid}n1"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in netlab.cleanup_stale()
        assert not netlab.ns_exists(stale)
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)


def test_random_loss(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, "10.82.0.1", b, "10.82.0.2")
    lab.random_loss(b, 0.3, chains=("INPUT",))
    rx = start_ready(b, UDP_COUNT_RECV, "10.82.0.2", 5000)
    a.run([PY, "-c", UDP_BLAST, "10.82.0.2", 5000, 2000])
    got = int(rx.stdout.readline())
    rx.wait(timeout=10)
    assert 1100 < got < 1700, got  # expect ~1400 of 2000
    lab.clear_loss(b)
    assert "statistic" not in b.sh("iptables -S")


def test_rate_limit(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.link(a, "10.83.0.1", b, "10.83.0.2")
    lab.rate_limit(a, "eth0", 16)
    assert "tbf" in a.sh("tc qdisc show dev eth0")
    sink = start_ready(b, TCP_SINK, "10.83.0.2", 5001)
    a.run([PY, "-c", TCP_SOURCE, "10.83.0.2", 5001, 4_000_000], timeout=60)
    n, secs = sink.stdout.readline().split()
    sink.wait(timeout=10)
    mbit = int(n) * 8 / float(secs) / 1e6
    assert int(n) == 4_000_000
    assert 8 < mbit < 20, mbit  # 16 Mbit/s configured


def test_nat_through_bridge_segment(lab):
    """client -- r1 (MASQUERADE) -- [inet bridge] -- server: server sees r1's WAN address."""
    inet = lab.add_bridge_segment("inet")
    server, r1, client = lab.add_host("server"), lab.add_router("r1"), lab.add_host("client")
    assert inet.attach(server, "192.0.2.10") == "eth0"
    wan = inet.attach(r1, "192.0.2.1")
    lab.link(client, "10.1.0.2", r1, "10.1.0.1")
    lab.masquerade(r1, wan)
    client.add_route("default", via="10.1.0.1")

    srv = start_ready(server, UDP_ECHO_SERVER, "192.0.2.10", 4000)
    out = client.run([PY, "-c", UDP_ECHO_CLIENT, "192.0.2.10", 4000], timeout=30).stdout.strip()
    assert out == "hello|192.0.2.1"
    # the private side is not reachable from the internet segment
    cp = server.run("ip route get 10.1.0.2", check=False)
    assert cp.returncode != 0 or "via" not in cp.stdout
    srv.kill()
