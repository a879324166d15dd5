"""Self-tests for tests/natlab.py: each NAT kind behaves as ../shared/notes/field-notes.md says.

Small Python UDP programs run inside the namespaces:
- an echo server on the rendezvous host (203.0.113.10 and .11, one socket per address,
  UDP and TCP) answers every request with the source "ip:port" it saw (STUN-like);
- an "agent" on each peer holds ONE UDP socket (so NAT mappings persist between steps)
  and executes line commands from stdin, answering each with one JSON line.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys

import pytest

import netlab
from natlab import NatKind, add_peer, add_peers_same_nat, build_internet

pytestmark = pytest.mark.netns

PY = sys.executable
RDV1, RDV2 = "203.0.113.10", "203.0.113.11"
ECHO_PORT = 3478
_ports = itertools.count(40000, 7)  # fresh local ports for every agent in this module


def fresh_port() -> int:
    return next(_ports)


ECHO_SERVER = r"""
import select, socket, sys
port, ips = int(sys.argv[1]), sys.argv[2:]
socks = []
for ip in ips:  # one socket per address: replies leave from the address asked
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((ip, port))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((ip, port))
    t.listen(16)
    socks += [u, t]
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        if s.type == socket.SOCK_DGRAM:
            data, addr = s.recvfrom(2048)
            s.sendto(f"{addr[0]}:{addr[1]}".encode(), addr)
        else:
            c, addr = s.accept()
            c.sendall(f"{addr[0]}:{addr[1]}".encode())
            c.close()
"""

AGENT = r"""
import json, select, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))

def out(**kw):
    print(json.dumps(kw), flush=True)

def send(addr, data, errs):
    try:
        s.sendto(data, addr)
    except OSError as e:
        errs.append(e.strerror or repr(e))

def recv(deadline):
    if select.select([s], [], [], max(0.0, deadline - time.monotonic()))[0]:
        data, src = s.recvfrom(2048)
        return data, src
    return None, None

out(ready=True)
for line in sys.stdin:
    cmd, *a = line.split()
    errs = []
    if cmd == "stun":  # ask the echo server at a[0]:a[1] what our address looks like
        target, end = (a[0], int(a[1])), time.monotonic() + float(a[2])
        mapped, nxt = None, 0.0
        while mapped is None and time.monotonic() < end:
            if time.monotonic() >= nxt:
                send(target, b"?", errs)
                nxt = time.monotonic() + 0.1
            data, src = recv(min(end, nxt))
            if src == target:
                mapped = data.decode()
        out(mapped=mapped, errors=errs)
    elif cmd == "punch":  # probe a[0]:a[1] every 50 ms; ok once it answers (+0.3 s more probes)
        target, end = (a[0], int(a[1])), time.monotonic() + float(a[2])
        got, nxt, n = None, 0.0, 0
        while time.monotonic() < end:
            if time.monotonic() >= nxt:
                send(target, b"punch", errs)
                n += 1
                nxt = time.monotonic() + 0.05
            data, src = recv(min(end, nxt))
            if src == target and got is None:
                got = time.monotonic()
                end = min(end, got + 0.3)
        out(ok=got is not None, sent=n, errors=errs)
    elif cmd == "spray":  # a[2] datagrams to a[0]:a[1], 20 ms apart
        target = (a[0], int(a[1]))
        for _ in range(int(a[2])):
            send(target, b"spray", errs)
            time.sleep(0.02)
        out(sent=int(a[2]), errors=errs)
    elif cmd == "listen":  # every source heard from for a[0] seconds
        end, got = time.monotonic() + float(a[0]), []
        while time.monotonic() < end:
            data, src = recv(end)
            if src is not None:
                got.append(f"{src[0]}:{src[1]}")
        out(got=sorted(set(got)))
    elif cmd == "tcp":  # connect to a[0]:a[1], return what the server saw
        try:
            c = socket.create_connection((a[0], int(a[1])), timeout=float(a[2]))
            out(tcp=c.recv(100).decode())
            c.close()
        except OSError as e:
            out(tcp=None, error=repr(e))
    elif cmd == "ttl":  # IP_TTL for what this socket sends next (low-TTL probes)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, int(a[0]))
        out(ttl=int(a[0]))
    elif cmd == "quit":
        break
"""


class Agent:
    """One UDP socket on ``port`` inside ``host``; commands answered with one JSON line."""

    def __init__(self, host: netlab.Host, port: int | None = None):
        self.port = port or fresh_port()
        self.p = host.popen([PY, "-c", AGENT, str(self.port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.read(15)["ready"]

    def send(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def read(self, timeout: float = 10) -> dict:
        if not select.select([self.p.stdout], [], [], timeout)[0]:
            raise AssertionError(f"agent gave no answer within {timeout} s")
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError(f"agent died (rc={self.p.poll()})")
        return json.loads(line)

    def call(self, line: str, timeout: float = 10) -> dict:
        self.send(line)
        return self.read(timeout)

    def stun(self, ip: str = RDV1, port: int = ECHO_PORT, timeout: float = 2.0) -> str | None:
        return self.call(f"stun {ip} {port} {timeout}")["mapped"]


def split(addr: str) -> tuple[str, int]:
    ip, port = addr.rsplit(":", 1)
    return ip, int(port)


def internet_with_rdv(lab):
    inet = build_internet(lab)
    rdv = inet.add_server("rdv", RDV1, RDV2)
    srv = rdv.popen([PY, "-c", ECHO_SERVER, str(ECHO_PORT), RDV1, RDV2],
                    stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    return inet, rdv


def punch_pair(a: Agent, b: Agent, a_to: str, b_to: str, secs: float) -> tuple[bool, bool]:
    """Both agents probe each other at the same time; returns (a heard b, b heard a)."""
    a.send("punch {} {} {}".format(*split(a_to), secs))
    b.send("punch {} {} {}".format(*split(b_to), secs))
    ra, rb = a.read(secs + 10), b.read(secs + 10)
    return ra["ok"], rb["ok"]


# -- (1) what a STUN-like server sees ------------------------------------------------------
@pytest.mark.parametrize("kind", [NatKind.PUBLIC, NatKind.CONE, NatKind.MASQ,
                                  NatKind.SYMMETRIC, NatKind.DOUBLE], ids=lambda k: k.value)
def test_mapped_address_per_kind(lab, kind):
    inet, _ = internet_with_rdv(lab)
    peer = add_peer(lab, inet, kind, 1)
    assert peer.kind is kind
    ag = Agent(peer.host)
    m1, m2 = ag.stun(RDV1), ag.stun(RDV2)
    assert m1 and m2, (m1, m2)
    (ip1, port1), (ip2, port2) = split(m1), split(m2)

    if kind is NatKind.PUBLIC:
        assert peer.router is None and peer.public_ip == peer.ip
        assert (ip1, port1) == (ip2, port2) == (peer.ip, ag.port)
        return
    assert peer.ip.startswith("10.1.0.") and peer.public_ip != peer.ip
    assert ip1 == ip2 == peer.public_ip
    if kind is NatKind.DOUBLE:
        assert peer.cgn is not None and peer.router is not None
        assert peer.public_ip == peer.cgn.ip  # the CGN's WAN address, not the home NAT's
        assert peer.router.ip == "100.64.1.2"  # the home NAT sits on 100.64.1.0/24
    if kind is NatKind.SYMMETRIC:
        assert port1 != port2, "--random-fully should map per destination"
    else:  # endpoint-independent mapping with port preservation
        assert port1 == port2 == ag.port


# -- (2) unsolicited inbound to a port-restricted cone ------------------------------------
def test_cone_drops_unsolicited_inbound(lab):
    inet, rdv = internet_with_rdv(lab)
    third = inet.add_server("third", "198.51.100.20")  # the other internet prefix works too
    peer = add_peer(lab, inet, NatKind.CONE, 1)
    ag = Agent(peer.host)
    mapped = ag.stun(RDV1)
    assert mapped == f"{peer.public_ip}:{ag.port}"

    stranger = Agent(third)                 # a third address
    same_ip = Agent(rdv)                    # the server's own IP but another port
    for who in (stranger, same_ip):
        ag.send("listen 1.0")
        assert who.call(f"spray {peer.public_ip} {ag.port} 10")["errors"] == []
        got = [g for g in ag.read(5)["got"] if g != f"{RDV1}:{ECHO_PORT}"]  # late echo
        assert got == [], "unsolicited inbound must be dropped"

    # once the peer has sent to the stranger, the stranger's replies come in
    assert ag.call(f"spray 198.51.100.20 {stranger.port} 1")["errors"] == []
    ag.send("listen 1.0")
    stranger.call(f"spray {peer.public_ip} {ag.port} 5")
    assert ag.read(5)["got"] == [f"198.51.100.20:{stranger.port}"]


@pytest.mark.parametrize("kind", [NatKind.MASQ, NatKind.CONE], ids=lambda k: k.value)
def test_inbound_probe_first_moves_bare_masquerade_mapping(lab, kind):
    """Field notes: without the drop-unsolicited policy, a probe that reaches the NAT
    before the local peer's own packet leaves becomes a conntrack entry, and the local
    peer's flow then collides with it and is moved to another port."""
    inet, _ = internet_with_rdv(lab)
    # B is PUBLIC so that it hears A from whatever port A's NAT picks
    pa, pb = add_peer(lab, inet, kind, 1), add_peer(lab, inet, NatKind.PUBLIC, 2)
    a, b = Agent(pa.host), Agent(pb.host)
    ma, mb = a.stun(), b.stun()
    b.call("spray {} {} 1".format(*split(ma)))  # reaches A's NAT first
    b.send("listen 1.0")
    a.call("spray {} {} 5".format(*split(mb)))
    got = [g for g in b.read(5)["got"] if g != f"{RDV1}:{ECHO_PORT}"]
    assert len(got) == 1 and split(got[0])[0] == pa.public_ip
    if kind is NatKind.MASQ:
        assert split(got[0])[1] != a.port, "bare MASQUERADE should have moved the mapping"
    else:
        assert got == [ma], "CONE never records the unsolicited probe: mapping kept"


# -- (3) UDP blocked, TCP allowed ------------------------------------------------------------
def test_udp_blocked_lets_tcp_through(lab):
    inet, _ = internet_with_rdv(lab)
    peer = add_peer(lab, inet, NatKind.UDP_BLOCKED, 1)
    ag = Agent(peer.host)
    assert ag.stun(RDV1, timeout=1.0) is None
    r = ag.call(f"tcp {RDV1} {ECHO_PORT} 3")
    assert r["tcp"] and split(r["tcp"])[0] == peer.public_ip, r


# -- (4) simultaneous hole punching ----------------------------------------------------------
def test_punch_cone_to_cone_succeeds(lab):
    inet, _ = internet_with_rdv(lab)
    pa, pb = add_peer(lab, inet, NatKind.CONE, 1), add_peer(lab, inet, NatKind.CONE, 2)
    for _ in range(3):  # three independent trials, fresh sockets/ports each time
        a, b = Agent(pa.host), Agent(pb.host)
        ma, mb = a.stun(), b.stun()
        assert ma == f"{pa.public_ip}:{a.port}" and mb == f"{pb.public_ip}:{b.port}"
        assert punch_pair(a, b, mb, ma, 3.0) == (True, True)


@pytest.mark.parametrize("kinds", [(NatKind.SYMMETRIC, NatKind.SYMMETRIC),
                                   (NatKind.CONE, NatKind.SYMMETRIC)],
                         ids=["symmetric-symmetric", "cone-symmetric"])
def test_punch_with_symmetric_fails(lab, kinds):
    inet, _ = internet_with_rdv(lab)
    pa, pb = add_peer(lab, inet, kinds[0], 1), add_peer(lab, inet, kinds[1], 2)
    a, b = Agent(pa.host), Agent(pb.host)
    ma, mb = a.stun(), b.stun()
    assert ma and mb
    assert punch_pair(a, b, mb, ma, 1.5) == (False, False)


@pytest.mark.parametrize("kinds", [(NatKind.MASQ, NatKind.MASQ), (NatKind.DOUBLE, NatKind.DOUBLE),
                                   (NatKind.DOUBLE, NatKind.MASQ)],
                         ids=["masq-masq", "double-double", "double-masq"])
def test_low_ttl_first_probe_makes_punching_reliable(lab, kinds):
    """The internet core is 4 router hops: a first probe with TTL 3 opens the sender's
    NAT mappings (also both layers of DOUBLE) and dies in the core, so it never leaves
    a colliding entry on the far NAT; afterwards plain punching works, in either order."""
    inet, _ = internet_with_rdv(lab)
    assert inet.routed and inet.hops == 4
    pa, pb = add_peer(lab, inet, kinds[0], 1), add_peer(lab, inet, kinds[1], 2)
    for order in ("ab", "ba", "ab"):
        a, b = Agent(pa.host), Agent(pb.host)
        ma, mb = a.stun(), b.stun()
        pairs = {"a": (a, mb), "b": (b, ma)}
        for who in order:
            ag, target = pairs[who]
            ag.call("ttl 3")
            ag.call("spray {} {} 1".format(*split(target)))
            ag.call("ttl 64")
        assert punch_pair(a, b, mb, ma, 3.0) == (True, True), order


# -- (5) two peers behind one NAT: no hairpin -------------------------------------------------
def test_same_nat_no_hairpin_but_lan_works(lab):
    inet, _ = internet_with_rdv(lab)
    pa, pb = add_peers_same_nat(lab, inet, 3)
    assert pa.router is pb.router and pa.public_ip == pb.public_ip
    assert pa.kind is pb.kind is NatKind.SAME_NAT
    assert (pa.ip, pb.ip) == ("10.3.0.2", "10.3.0.3")
    a, b = Agent(pa.host), Agent(pb.host)
    ma, mb = a.stun(), b.stun()
    assert split(ma)[0] == split(mb)[0] == pa.public_ip
    assert punch_pair(a, b, mb, ma, 1.5) == (False, False), "hairpinning must be off"
    assert punch_pair(a, b, f"{pb.ip}:{b.port}", f"{pa.ip}:{a.port}", 3.0) == (True, True)


# -- (6) cut/restore and change_address ---------------------------------------------------------
@pytest.mark.parametrize("kind", [NatKind.PUBLIC, NatKind.CONE], ids=lambda k: k.value)
def test_cut_and_restore(lab, kind):
    inet, _ = internet_with_rdv(lab)
    peer = add_peer(lab, inet, kind, 1)
    ag = Agent(peer.host)
    before = ag.stun()
    assert before
    peer.cut()
    r = ag.call(f"stun {RDV1} {ECHO_PORT} 1.0")
    assert r["mapped"] is None
    assert r["errors"] == [], "a cut link should lose packets silently"
    peer.restore()
    assert ag.stun(timeout=5.0) == before  # NAT state survives a short outage


@pytest.mark.parametrize("kind,lan", [(NatKind.PUBLIC, False), (NatKind.CONE, False),
                                      (NatKind.CONE, True), (NatKind.SYMMETRIC, False),
                                      (NatKind.DOUBLE, False)],
                         ids=["public", "cone", "cone-lan", "symmetric", "double"])
def test_change_address(lab, kind, lan):
    inet, _ = internet_with_rdv(lab)
    peer = add_peer(lab, inet, kind, 1)
    ag = Agent(peer.host)  # bound to 0.0.0.0: survives the move
    old_public, old_ip = peer.public_ip, peer.ip
    assert split(ag.stun())[0] == old_public
    new = peer.change_address(lan=lan)
    assert new == peer.public_ip != old_public
    assert new.startswith("203.0.113.")
    assert split(ag.stun(timeout=5.0))[0] == new
    assert (peer.ip != old_ip) == (lan or kind is NatKind.PUBLIC)


def test_same_nat_change_address_moves_both(lab):
    inet, _ = internet_with_rdv(lab)
    pa, pb = add_peers_same_nat(lab, inet, 4)
    b = Agent(pb.host)
    assert split(b.stun())[0] == pb.public_ip
    new = pa.change_address()
    assert pb.public_ip == new
    assert split(b.stun(timeout=5.0))[0] == new


# -- plumbing ----------------------------------------------------------------------------------
def test_every_kind_builds_and_tears_down():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    lab = netlab.Lab()
    try:
        inet = build_internet(lab)
        inet.add_server("rdv", RDV1, RDV2)
        peers = [add_peer(lab, inet, k, i) for i, k in enumerate(
            [NatKind.PUBLIC, NatKind.CONE, NatKind.MASQ, NatKind.SYMMETRIC,
             NatKind.UDP_BLOCKED, NatKind.DOUBLE], start=1)]
        peers += add_peers_same_nat(lab, inet, 7)
        assert len({p.public_ip for p in peers}) == 7  # distinct WAN per NAT (+ PUBLIC)
        assert [p.public_ip for p in peers[:6]] == [f"203.0.113.{100 + i}" for i in range(1, 7)]
        with pytest.raises(netlab.NetlabError):
            inet.add_server("dup", RDV1)  # addresses are never handed out twice
        with pytest.raises(ValueError):
            add_peer(lab, inet, NatKind.SAME_NAT, 8)
        namespaces = [h.ns for h in lab.hosts]
        assert all(netlab.ns_exists(ns) for ns in namespaces)
    finally:
        lab.close()
    left = set(netlab.list_netns()) & set(namespaces)
    assert not left


def test_plain_bridge_internet(lab):
    """build_internet(routed=False): the L2 variant (zero hops) works the same way."""
    inet = build_internet(lab, routed=False)
    assert not inet.routed and inet.segment is not None and inet.hops == 0
    rdv = inet.add_server("rdv", RDV1, RDV2)
    srv = rdv.popen([PY, "-c", ECHO_SERVER, str(ECHO_PORT), RDV1, RDV2],
                    stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    pub, cone = add_peer(lab, inet, NatKind.PUBLIC, 1), add_peer(lab, inet, NatKind.CONE, 2)
    a, b = Agent(pub.host), Agent(cone.host)
    assert a.stun() == f"{pub.ip}:{a.port}" and b.stun() == f"{cone.public_ip}:{b.port}"
    pub.cut()
    assert a.stun(timeout=0.5) is None
    pub.restore()
    assert a.stun(timeout=5.0) == f"{pub.ip}:{a.port}"
    new = cone.change_address()
    assert b.stun(timeout=5.0) == f"{new}:{b.port}"
