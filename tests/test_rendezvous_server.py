"""The rendezvous server on real sockets (loopback only): registration and
lookup, relaying over UDP and TCP, independent STUN clients, and a flood."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import socket
import threading
import time

import pytest

from dattui.engine import stun
from dattui.engine.rendezvous import client_core as cc
from dattui.engine.rendezvous import protocol as p
from dattui.engine.rendezvous.client_core import RendezvousClient
from dattui.engine.rendezvous.server import run_rendezvous, serve
from dattui.engine.rendezvous.server_core import ServerLimits
from installed import dattui_cmd

KEY = bytes(range(32))
TIMEOUT = 5.0


class Node:
    """A RendezvousClient on a real socket: UDP (from `host`) or TCP."""

    def __init__(self, client: RendezvousClient) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.events: list = []
        self._changed = asyncio.Event()
        self._timer = self.loop.create_task(self._tick())

    @classmethod
    async def udp(cls, server_addr, host="127.0.0.1", seed=1) -> "Node":
        node = cls(RendezvousClient(rng=random.Random(seed)))
        node.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        node.sock.bind((host, 0))
        node.sock.setblocking(False)
        node.server_addr = server_addr
        node.loop.add_reader(node.sock.fileno(), node._readable)
        node.local = node.sock.getsockname()
        return node

    @classmethod
    async def tcp(cls, server_addr, host="127.0.0.1", seed=1) -> "Node":
        node = cls(RendezvousClient(rng=random.Random(seed), transport="tcp"))
        node.sock = None
        node.reader, node.writer = await asyncio.open_connection(*server_addr, local_addr=(host, 0))
        node.local = node.writer.get_extra_info("sockname")[:2]
        node._reading = node.loop.create_task(node._read_tcp())
        return node

    # -- I/O --

    def _send_raw(self, data: bytes) -> None:
        if self.sock is not None:
            self.sock.sendto(data, self.server_addr)
        else:
            self.writer.write(p.frame(data))

    def flush(self) -> None:
        for data in self.client.datagrams_to_send(self.loop.time()):
            self._send_raw(data)
        while (ev := self.client.next_event()) is not None:
            self.events.append(ev)
            self._changed.set()

    def _feed(self, data: bytes) -> None:
        self.client.receive(data, self.loop.time())
        self.flush()

    def _readable(self) -> None:
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self._feed(data)

    async def _read_tcp(self) -> None:
        deframer = p.Deframer()
        while data := await self.reader.read(65536):
            for message in deframer.feed(data):
                self._feed(message)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            t = self.client.get_timer()
            if t is not None and t <= self.loop.time():
                self.client.handle_timer(self.loop.time())
            self.flush()

    async def wait_for(self, kind, pred=lambda e: True, timeout=TIMEOUT):
        """The first not yet consumed event of `kind` matching `pred`."""
        deadline = self.loop.time() + timeout
        while True:
            self.flush()
            for ev in self.events:
                if isinstance(ev, kind) and pred(ev):
                    self.events.remove(ev)
                    return ev
            failed = [e for e in self.events if isinstance(e, cc.RequestFailed)]
            assert not failed, failed
            left = deadline - self.loop.time()
            if left <= 0:
                raise AssertionError(f"no {kind.__name__} within {timeout} s; events: {self.events}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def close(self) -> None:
        self._timer.cancel()
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        else:
            self._reading.cancel()
            self.writer.close()


@pytest.fixture
async def server():
    srv = await serve("127.0.0.1", 0, 0)
    yield srv
    srv.close()
    await srv.wait_closed()


@pytest.fixture
async def nodes():
    made: list[Node] = []
    yield made
    for n in made:
        n.close()


async def make(nodes, kind, server, host="127.0.0.1", seed=None) -> Node:
    addr = server.udp_address if kind == "udp" else server.tcp_address
    node = await getattr(Node, kind)(addr, host, seed if seed is not None else len(nodes) + 1)
    nodes.append(node)
    return node


# -- meeting ------------------------------------------------------------------------------

async def test_two_clients_register_and_find_each_other(server, nodes):
    a = await make(nodes, "udp", server)
    b = await make(nodes, "udp", server, host="127.0.0.2")
    a.client.register(KEY, [("10.0.0.1", 4000)], a.loop.time())
    b.client.register(KEY, [("10.0.0.2", 5000)], b.loop.time())
    ra = await a.wait_for(cc.Registered)
    rb = await b.wait_for(cc.Registered)
    assert ra.observed == a.local and rb.observed == b.local

    a.client.lookup(KEY, a.loop.time())
    b.client.lookup(KEY, b.loop.time())
    la = await a.wait_for(cc.PeersListed)
    lb = await b.wait_for(cc.PeersListed)
    assert [(x.token, x.observed, x.candidates) for x in la.peers] == [(rb.token, b.local, (("10.0.0.2", 5000),))]
    assert [(x.token, x.observed, x.candidates) for x in lb.peers] == [(ra.token, a.local, (("10.0.0.1", 4000),))]

    a.client.connect(KEY, rb.token, [("10.0.0.1", 4000)], a.loop.time())
    pa = await a.wait_for(cc.PunchRequested)
    pb = await b.wait_for(cc.PunchRequested)
    assert pa.by_us and pa.peer.observed == b.local
    assert not pb.by_us and pb.peer.observed == a.local and pb.peer.token == ra.token
    assert abs(pa.at - pb.at) < 0.5


async def test_tcp_client_registers_and_is_listed_as_tcp(server, nodes):
    a = await make(nodes, "udp", server)
    t = await make(nodes, "tcp", server, host="127.0.0.3")
    t.client.register(KEY, [], t.loop.time())
    rt = await t.wait_for(cc.Registered)
    assert rt.observed == t.local
    a.client.lookup(KEY, a.loop.time())
    listed = await a.wait_for(cc.PeersListed)
    assert [(x.token, x.over_tcp) for x in listed.peers] == [(rt.token, True)]


# -- relaying -----------------------------------------------------------------------------

async def relay(a: Node, b: Node, count=40):
    """b registers, a allocates a relay to b, b binds; data flows both ways."""
    b.client.register(KEY, [], b.loop.time())
    rb = await b.wait_for(cc.Registered)
    a.client.relay_allocate(KEY, rb.token, a.loop.time())
    alloc = await a.wait_for(cc.RelayAllocated)
    offer = await b.wait_for(cc.RelayOffered)
    assert offer.channel == alloc.channel
    b.client.relay_bind(offer.channel, b.loop.time())
    await b.wait_for(cc.RelayBound)
    await a.wait_for(cc.RelayBound)
    ch = alloc.channel
    rng = random.Random(5)
    for sender, receiver in ((a, b), (b, a)):
        payloads = [rng.randbytes(rng.choice([1, 100, 1200, p.MAX_RELAY_PAYLOAD])) for _ in range(count)]
        for payload in payloads:
            sender._send_raw(sender.client.relay_send(ch, payload))
            await asyncio.sleep(0)
        got = [(await receiver.wait_for(cc.RelayDataReceived)).payload for _ in payloads]
        assert got == payloads
    return ch


async def test_relay_over_udp(server, nodes):
    a = await make(nodes, "udp", server)
    b = await make(nodes, "udp", server, host="127.0.0.2")
    await relay(a, b)
    assert server.core.stats.relayed_bytes > 0


async def test_relay_between_tcp_and_udp_clients(server, nodes):
    a = await make(nodes, "udp", server)
    t = await make(nodes, "tcp", server, host="127.0.0.3")
    await relay(a, t)
    # and the other way round: the TCP client allocates
    a2 = await make(nodes, "udp", server, host="127.0.0.4")
    t2 = await make(nodes, "tcp", server, host="127.0.0.5")
    await relay(t2, a2)


async def test_relay_between_two_tcp_clients_and_closing(server, nodes):
    t1 = await make(nodes, "tcp", server, host="127.0.0.3")
    t2 = await make(nodes, "tcp", server, host="127.0.0.4")
    ch = await relay(t1, t2)
    t1.close()  # the connection drops: the other side is told
    closed = await t2.wait_for(cc.RelayClosed)
    assert closed == cc.RelayClosed(ch, p.CloseReason.BY_PEER)
    for _ in range(100):
        if server.core.allocations == 0 and server.tcp_connections == 1:
            break
        await asyncio.sleep(0.01)
    assert server.core.allocations == 0 and server.core.registrations == 1


async def test_udp_and_tcp_share_a_port_number(nodes):
    srv = await serve("127.0.0.1", 0)
    try:
        assert srv.udp_address[1] == srv.tcp_address[1]
    finally:
        srv.close()
        await srv.wait_closed()


async def test_run_rendezvous_serves_until_cancelled():
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_rendezvous("127.0.0.1", 0, ready=ready.set_result))
    srv = await asyncio.wait_for(ready, TIMEOUT)
    assert srv.udp_address[1] == srv.tcp_address[1]
    made: list[Node] = []
    try:
        a = await make(made, "tcp", srv)
        a.client.register(KEY, [], a.loop.time())
        await a.wait_for(cc.Registered)
    finally:
        for n in made:
            n.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert srv.closed


async def test_ipv6_loopback(nodes):
    try:
        srv = await serve("::1", 0, 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind(("::1", 0))
        sock.setblocking(False)
        try:
            tid = stun.new_transaction_id()
            await loop.sock_sendto(sock, stun.binding_request(tid, pad_to=stun.RESPONSE_PAD), srv.udp_address)
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), TIMEOUT)
            assert stun.parse_binding_response(data, tid) == sock.getsockname()[:2]
        finally:
            sock.close()
        t = await Node.tcp(srv.tcp_address, "::1")
        nodes.append(t)
        t.client.register(KEY, [("fe80::1", 1)], t.loop.time())
        reg = await t.wait_for(cc.Registered)
        assert reg.observed == t.local and reg.observed[0] == "::1"
    finally:
        srv.close()
        await srv.wait_closed()


# -- STUN ------------------------------------------------------------------------------------

async def test_stun_binding_over_udp_and_tcp(server):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        tid = stun.new_transaction_id()
        req = stun.binding_request(tid, software="dattui", pad_to=stun.RESPONSE_PAD)
        await loop.sock_sendto(sock, req, server.udp_address)
        data = await asyncio.wait_for(loop.sock_recv(sock, 2048), TIMEOUT)
        assert stun.parse_binding_response(data, tid) == sock.getsockname()
        msg = stun.parse(data)
        assert msg.response_origin == server.udp_address and len(data) <= len(req)
    finally:
        sock.close()
    reader, writer = await asyncio.open_connection(*server.tcp_address)
    try:
        tid = stun.new_transaction_id()
        writer.write(p.frame(stun.binding_request(tid)))
        n = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TIMEOUT), "big")
        data = await reader.readexactly(n)
        assert stun.parse_binding_response(data, tid) == writer.get_extra_info("sockname")[:2]
    finally:
        writer.close()


async def test_independent_stun_client_pystun3(server):
    pystun = pytest.importorskip("stun", reason="pip install pystun3 (an independent STUN client)")
    if not hasattr(pystun, "stun_test"):
        pytest.skip("the 'stun' module found is not pystun3")

    def ask():
        pystun._initialize()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.bind(("127.0.0.1", 0))
        try:
            host, port = server.udp_address
            return s.getsockname(), pystun.stun_test(s, host, port, "127.0.0.1", s.getsockname()[1])
        finally:
            s.close()

    local, result = await asyncio.to_thread(ask)
    assert result["Resp"] is True
    assert (result["ExternalIP"], result["ExternalPort"]) == local


async def test_independent_stun_client_debian(server):
    exe = shutil.which("stun")
    if exe is None:
        pytest.skip("apt-get install stun-client (an independent STUN client)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free a port for the client to use
    host, sport = server.udp_address
    proc = await asyncio.create_subprocess_exec(
        exe, f"{host}:{sport}", "1", "-v", "-p", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode(errors="replace")
    m = re.search(r"mappedAddr=([\d.]+):(\d+)", text)
    assert m, text
    assert (m.group(1), int(m.group(2))) == ("127.0.0.1", port)


# -- a flood from one address ---------------------------------------------------------------

async def test_flood_from_one_address_does_not_starve_others():
    limits = ServerLimits()
    srv = await serve("127.0.0.1", 0, 0, limits=limits)
    stop = threading.Event()
    counts = {"sent": 0, "sent_bytes": 0, "recv_bytes": 0}

    def flood():
        rng = random.Random(1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.9", 0))
        s.setblocking(False)
        msgs = [
            lambda: rng.randbytes(rng.randrange(1, 1400)),
            lambda: p.Register(rng.randrange(1, 2 ** 32), rng.randbytes(32), rng.randbytes(16),
                               (("10.0.0.1", 1),) * 8).encode(),
            lambda: p.Lookup(rng.randrange(1, 2 ** 32), KEY).encode(),
            lambda: p.Connect(rng.randrange(1, 2 ** 32), KEY, rng.randbytes(8)).encode(),
            lambda: stun.binding_request(rng.randbytes(12), pad_to=stun.RESPONSE_PAD),
            lambda: p.MAGIC + rng.randbytes(rng.randrange(0, 200)),
        ]
        deadline = time.monotonic() + 3.0
        try:
            while not stop.is_set() and time.monotonic() < deadline and counts["sent"] < 200_000:
                data = rng.choice(msgs)()
                try:
                    s.sendto(data, srv.udp_address)
                    counts["sent"] += 1
                    counts["sent_bytes"] += len(data)
                except BlockingIOError:
                    time.sleep(0.001)
                while True:
                    try:
                        counts["recv_bytes"] += len(s.recv(65535))
                    except BlockingIOError:
                        break
            time.sleep(0.2)
            while True:
                try:
                    counts["recv_bytes"] += len(s.recv(65535))
                except BlockingIOError:
                    break
        finally:
            s.close()

    made: list[Node] = []
    try:
        flooder = asyncio.create_task(asyncio.to_thread(flood))
        await asyncio.sleep(0.2)
        a = await make(made, "udp", srv, host="127.0.0.1")
        b = await make(made, "udp", srv, host="127.0.0.2")
        a.client.register(KEY, [], a.loop.time())
        ra = await a.wait_for(cc.Registered)
        worst = 0.0
        rounds = 0
        while not flooder.done() and rounds < 200:
            t0 = a.loop.time()
            b.client.lookup(KEY, b.loop.time())
            listed = await b.wait_for(cc.PeersListed, timeout=2.0)
            worst = max(worst, a.loop.time() - t0)
            assert [x.token for x in listed.peers] == [ra.token]
            rounds += 1
            await asyncio.sleep(0.05)
        stop.set()
        await flooder
        print(f"flood: {counts['sent']} datagrams ({counts['sent_bytes']} B) sent, {counts['recv_bytes']} B back;"
              f" {rounds} lookups by another client, slowest {worst * 1000:.0f} ms;"
              f" {srv.core.stats.rate_limited} rate-limited")
        assert rounds >= 5
        assert worst < 1.0, f"a lookup took {worst:.2f} s during the flood"
        assert counts["sent"] > 1000
        # the flooder never got a cookie: it got back fewer bytes than it sent
        assert counts["recv_bytes"] <= counts["sent_bytes"]
        stats = srv.core.stats
        assert stats.rate_limited > 0
        assert srv.core.registrations == 1  # nothing of the flood was stored
    finally:
        stop.set()
        for n in made:
            n.close()
        srv.close()
        await srv.wait_closed()


# -- RFC 5780: alternate port and address ---------------------------------------------------

async def _ask(sock, server_addr, **flags):
    loop = asyncio.get_running_loop()
    tid = stun.new_transaction_id()
    await loop.sock_sendto(sock, stun.binding_request(tid, pad_to=stun.RESPONSE_PAD, **flags), server_addr)
    data, src = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), TIMEOUT)
    return stun.parse(data), src[:2], tid


async def test_four_sockets_answer_change_requests_from_the_right_address():
    srv = await serve("127.0.0.1", 0, 0, alt=("127.0.0.2", 0))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        addrs = srv.udp_addresses
        assert sorted(addrs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        p1, p2 = addrs[(0, 0)][1], addrs[(0, 1)][1]
        assert addrs[(1, 0)] == ("127.0.0.2", p1) and addrs[(1, 1)] == ("127.0.0.2", p2) and p1 != p2
        for flags, key in [({}, (0, 0)), ({"change_port": True}, (0, 1)), ({"change_ip": True}, (1, 0)),
                           ({"change_ip": True, "change_port": True}, (1, 1))]:
            msg, src, tid = await _ask(sock, addrs[(0, 0)], **flags)
            assert src == addrs[key] and msg.response_origin == addrs[key], flags
            assert msg.other_address == addrs[(1, 1)]
            assert stun.parse_binding_response(stun.encode(msg.msg_type, tid, msg.attributes), tid) == \
                sock.getsockname()
        # asked on an alternate socket: OTHER-ADDRESS and the change are relative to it
        msg, src, _ = await _ask(sock, addrs[(1, 1)], change_port=True)
        assert src == addrs[(1, 0)] and msg.other_address == addrs[(0, 0)]
        assert srv.core.stats.stun_changed == 4
    finally:
        sock.close()
        srv.close()
        await srv.wait_closed()


async def test_alternate_port_by_default_and_none_when_asked():
    srv = await serve("127.0.0.1", 0, 0)
    try:
        addrs = srv.udp_addresses
        assert sorted(addrs) == [(0, 0), (0, 1)] and addrs[(0, 1)][0] == "127.0.0.1"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        try:
            msg, src, _ = await _ask(sock, addrs[(0, 0)], change_port=True)
            assert src == addrs[(0, 1)] and msg.other_address is None  # no second IP: no OTHER-ADDRESS
            msg, src, _ = await _ask(sock, addrs[(0, 0)], change_ip=True)
            assert src == addrs[(0, 0)] and msg.error_code[0] == 420
        finally:
            sock.close()
    finally:
        srv.close()
        await srv.wait_closed()
    # a fixed port: the next one, unless it is taken (then none, and the server still runs)
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            taken = probe.getsockname()[1]
            try:
                srv = await serve("127.0.0.1", taken - 1, 0)
            except OSError:
                continue  # that one is taken too: try another pair
            try:
                assert sorted(srv.udp_addresses) == [(0, 0)] and srv.udp_address[1] == taken - 1
            finally:
                srv.close()
                await srv.wait_closed()
            break
    else:
        raise AssertionError("no free port below a taken one")
    srv = await serve("127.0.0.1", 0, 0, alt=None)
    try:
        assert sorted(srv.udp_addresses) == [(0, 0)]
    finally:
        srv.close()
        await srv.wait_closed()
    with pytest.raises(ValueError, match="second IP"):
        await serve("0.0.0.0", 0, 0, alt=("127.0.0.2", 0))


async def test_independent_clients_classify_an_open_internet_with_a_second_address():
    srv = await serve("127.0.0.1", 0, 0, alt=("127.0.0.2", 0))
    try:
        host, port = srv.udp_address
        pystun = pytest.importorskip("stun", reason="pip install pystun3 (an independent STUN client)")

        def ask():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1)
            s.bind(("127.0.0.1", 0))
            try:
                return pystun.get_nat_type(s, "127.0.0.1", s.getsockname()[1], stun_host=host, stun_port=port)
            finally:
                s.close()

        kind, info = await asyncio.to_thread(ask)
        assert kind == "Open Internet" and info["ChangedIP"] == "127.0.0.2"
        exe = shutil.which("stun")
        assert exe, "apt-get install stun-client (an independent STUN client)"
        proc = await asyncio.create_subprocess_exec(exe, f"{host}:{port}", "-v", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        text = out.decode(errors="replace")
        for test in ("test I = 1", "test II = 1", "test III = 1"):
            assert test in text, text
        assert "Primary: Open" in text and f"ChangedAddress = 127.0.0.2:{srv.udp_addresses[(1, 1)][1]}" in text
    finally:
        srv.close()
        await srv.wait_closed()


def test_cli_alt_bind(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    env = {"PATH": "/usr/bin:/bin", "DATTUI_HOME": str(tmp_path)}
    ports = []
    for _ in range(2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    bad = subprocess.run([*dattui_cmd(), "rendezvous", "--bind", f"0.0.0.0:{ports[0]}",
                          "--alt-bind", "127.0.0.2:5000"], capture_output=True, text=True, env=env, timeout=20)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "second IP" in bad.stderr
    bad = subprocess.run([*dattui_cmd(), "rendezvous", "--bind", "127.0.0.1:0",
                          "--alt-bind", "nonsense:x"], capture_output=True, text=True, env=env, timeout=20)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "HOST:PORT" in bad.stderr
    proc = subprocess.Popen([*dattui_cmd(), "rendezvous", "--bind", f"127.0.0.1:{ports[0]}",
                             "--alt-bind", f"127.0.0.2:{ports[1]}"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert "alternate port and IP address" in line, line
        for addr in (f"127.0.0.1:{ports[1]}", f"127.0.0.2:{ports[0]}", f"127.0.0.2:{ports[1]}"):
            assert addr in line, line
    finally:
        proc.terminate()
        proc.wait(10)
