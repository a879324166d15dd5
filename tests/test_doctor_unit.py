"""The doctor without namespaces: the classification rules as pure functions,
and the whole stream against real rendezvous servers and a DHT node on
127.0.0.1 (port mapping off: nothing leaves loopback)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dattui.engine.doctor import DoctorOptions, Doctor, report, run_checks
from dattui.engine.doctor_checks import probes
from dattui.engine.doctor_checks import peer_proto as pp
from dattui.engine.doctor_checks.peer import (PathResult, best_path, host_peer_test, join_peer_test,
                                       path_reason)
from dattui.engine.doctor_checks.probes import RelayFacts, StunAnswer
from dattui.engine.doctor_checks.verdict import (APD, ED, EI, NONE, UNKNOWN, Facts, ServerResult,
                                          classify_filtering, classify_mapping, port_preserved,
                                          verdict)
from dattui.engine.rendezvous.server import serve

from cli import env
from dattui.engine.errors import UsageError
from installed import dattui_cmd

ROOT = Path(__file__).resolve().parent.parent
S1, S2 = ("198.51.100.7", 3478), ("198.51.100.8", 3478)


# -- classification ----------------------------------------------------------------------------

def test_mapping_classification():
    own = ["10.0.0.2", "127.0.0.1"]
    assert classify_mapping(3282, own, [])[0] == UNKNOWN
    assert classify_mapping(3282, own, [(S1, ("10.0.0.2", 3282)), (S2, ("10.0.0.2", 3282))])[0] == NONE
    assert classify_mapping(3282, own, [(S1, ("10.0.0.2", 3282))])[0] == NONE  # one server is enough
    assert classify_mapping(3282, own, [(S1, ("10.0.0.2", 4000))])[0] == UNKNOWN  # our ip, another port
    assert classify_mapping(3282, own, [(S1, ("203.0.113.5", 3282))])[0] == UNKNOWN
    assert classify_mapping(3282, own, [(S1, ("203.0.113.5", 3282)), (S2, ("203.0.113.5", 3282))])[0] == EI
    m, why = classify_mapping(3282, own, [(S1, ("203.0.113.5", 1000)), (S2, ("203.0.113.5", 2000))])
    assert m == ED and "198.51.100.7:3478 sees 203.0.113.5:1000" in why
    # two ports of one server address count as two destinations
    assert classify_mapping(1, own, [(S1, ("203.0.113.5", 9)), (("198.51.100.7", 3479), ("203.0.113.5", 8))])[0] == ED


def test_filtering_and_port_preservation():
    assert classify_filtering(True, None) == EI
    assert classify_filtering(False, True) == "address-dependent"
    assert classify_filtering(False, False) == APD
    assert classify_filtering(None, None) == UNKNOWN
    assert classify_filtering(None, False) == APD       # a server with an alternate port only
    assert classify_filtering(None, True) == UNKNOWN    # EI and AD cannot be told apart then
    assert classify_filtering(True, None, NONE) == NONE  # no NAT, no firewall
    assert classify_filtering(False, False, NONE) == APD  # no NAT, but a firewall
    assert port_preserved(3282, [("203.0.113.5", 3282)]) is True
    assert port_preserved(3282, [("203.0.113.5", 3282), ("203.0.113.5", 9)]) is False
    assert port_preserved(3282, []) is None


def _facts(**kw) -> Facts:
    f = Facts(ipv4=["10.0.0.2"], port=3282, local_port=3282, relay_address="203.0.113.10:3478")
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def _server(ok: bool, mapped=("203.0.113.5", 3282), no_route=False) -> ServerResult:
    ans = StunAnswer(S1, mapped=mapped if ok else None, error="" if ok else "no answer",
                     no_route=no_route)
    return ServerResult("203.0.113.10:3478", "rendezvous", resolved=S1, answer=ans)


def test_verdicts():
    v = verdict(_facts(ipv4=[]))
    assert v.kind == "no_network" and v.summary.startswith("no network at all") and v.ok is False
    v = verdict(_facts(servers=[_server(False, no_route=True)], relay=RelayFacts(S1, udp=False, tcp=False)))
    assert v.kind == "no_network" and "no route" in v.summary
    v = verdict(_facts())
    assert v.kind == "no_servers" and v.ok is None and "--rendezvous" in v.steps[0]
    v = verdict(_facts(servers=[_server(False)], relay=RelayFacts(S1, udp=False, tcp=False)))
    assert v.kind == "unreachable" and v.summary.startswith("no server answers")
    v = verdict(_facts(servers=[_server(False)], relay=RelayFacts(S1, udp=False, tcp=True, data=True)))
    assert v.kind == "tcp_relay"
    assert v.summary == ("UDP is blocked here: transfers will go through the TCP relay at "
                         "203.0.113.10:3478; ask your network team to allow outbound UDP")
    ok_relay = RelayFacts(S1, udp=True, tcp=True, data=True)
    v = verdict(_facts(servers=[_server(True)], relay=ok_relay, mapping=EI))
    assert v.kind == "direct" and v.summary.startswith("direct connections will work") and v.ok
    v = verdict(_facts(servers=[_server(True)], relay=ok_relay, mapping=ED))
    assert v.kind == "relay" and v.summary.startswith("others can reach you only through a relay")
    v = verdict(_facts(servers=[_server(True)], relay=ok_relay, mapping=NONE))
    assert v.kind == "direct" and "public address (203.0.113.5)" in v.summary
    v = verdict(_facts(servers=[_server(True)], relay=ok_relay, mapping=UNKNOWN,
                       mapping_reason="only one server address answered"))
    assert v.kind == "unknown" and v.ok is None and "only one server address" in v.summary
    dead_relay = RelayFacts(S1, udp=False, tcp=False)
    v = verdict(_facts(servers=[_server(True)], relay=dead_relay, mapping=ED))
    assert any("does not answer" in s for s in v.steps)


def test_peer_test_helpers():
    assert "relay" in path_reason("relay-tcp") and path_reason("nonsense") == ""
    paths = [PathResult("lan", False, "x"), PathResult("direct", None, "x"), PathResult("relay-tcp", True, "x"),
             PathResult("punched", True, "x")]
    assert best_path(paths).path == "punched" and best_path(paths[:2]) is None
    assert PathResult.from_message({"t": "result", "path": "lan", "ok": True, "rtt_ms": 1.5, "reason": "r" * 999,
                                    "address": ["not", "text"]}) == PathResult("lan", True, "r" * 400, None, 1.5)
    for bad in ({"path": "wormhole", "ok": True}, {"path": "lan", "ok": "yes"}):
        assert PathResult.from_message(bad) is None
    assert PathResult.from_message({"path": "lan", "ok": True, "rtt_ms": -1, "seconds": True}).rtt_ms is None


def test_peer_test_ids():
    tid = pp.new_test_id()
    assert len(tid) == 16 and pp.parse_test_id(pp.format_test_id(tid).upper()) == tid
    for bad in ("", "dat://" + "0" * 64, "k3j9-q2m8-d3h7-f4x", "k3j9-q2m8-d3h7-f4x!", "1" * 16):
        with pytest.raises(UsageError, match="not a peer test id"):
            pp.parse_test_id(bad)
    a, b = pp.derive(tid), pp.derive(pp.new_test_id())
    assert len(a.key) == 32 and len(a.session) == 16 and a != b and pp.derive(tid) == a


def test_control_messages_are_tagged_and_bounded():
    keys = pp.derive(pp.new_test_id())
    raw = pp.encode_control(keys.control, pp.JOIN, 7, {"t": "hello", "x": [1, 2]})
    assert pp.decode_control(keys.control, pp.HOST, raw) == (7, {"t": "hello", "x": [1, 2]})
    assert pp.decode_control(keys.control, pp.JOIN, raw) is None             # reflected back at its sender
    assert pp.decode_control(pp.derive(pp.new_test_id()).control, pp.HOST, raw) is None  # another test
    for i in range(len(raw)):
        flipped = raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1:]
        assert pp.decode_control(keys.control, pp.HOST, flipped) is None
    rng = random.Random(3)
    for _ in range(2000):
        junk = rng.randbytes(rng.randrange(0, 1500))
        assert pp.decode_control(keys.control, pp.HOST, pp.CTL_MAGIC + junk) is None
    for body in (b"[1]", b"{}", b'{"t": 5}', b"\xff\xfe", b"{" * 5000):
        msg = pp.CTL_MAGIC + pp._tag(keys.control, bytes([pp.JOIN]) + bytes(4) + body) + bytes([pp.JOIN]) \
            + bytes(4) + body
        assert pp.decode_control(keys.control, pp.HOST, msg) is None
    with pytest.raises(ValueError):
        pp.encode_control(keys.control, pp.HOST, 1, {"t": "x" * 2000})
    assert pp.addresses([["203.0.113.5", 1], ["203.0.113.5", 1], ["x", 2], ["::1", 0], [1, 2], "ab"] * 3) == \
        [("203.0.113.5", 1)]


def test_echo_probes_and_the_sample_stream():
    keys = pp.derive(pp.new_test_id())
    ping = pp.ping(keys.session, b"12345678")
    pong = pp.pong_for(ping, keys.session)
    assert len(ping) == len(pong) == pp.ECHO_SIZE and pp.pong_nonce(pong, keys.session) == b"12345678"
    assert pp.pong_for(ping, bytes(16)) is None and pp.pong_for(pong, keys.session) is None
    assert pp.pong_nonce(ping, keys.session) is None
    stream = pp.frame(pp.GO) + pp.frame(pp.DATA, bytes(70000 - 4536)) + pp.frame(pp.DATA, b"abc") + pp.frame(pp.END)
    rng = random.Random(5)
    for _ in range(50):  # any split of the stream gives the same count
        r, kinds, i = pp.SampleReader(), [], 0
        while i < len(stream):
            n = rng.randrange(1, 9000)
            kinds += r.feed(stream[i:i + n])
            i += n
        assert kinds == [pp.GO, pp.END] and r.data_bytes == 70000 - 4536 + 3
    for bad in (pp._FRAME.pack(9, 0), pp._FRAME.pack(pp.DATA, pp.MAX_FRAME + 1), pp._FRAME.pack(pp.END, 3)):
        with pytest.raises(ValueError):
            pp.SampleReader().feed(bad)


# -- on loopback ---------------------------------------------------------------------------------

def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_stream_and_report_against_loopback_servers():
    a = await serve("127.0.0.1", 0)
    b = await serve("127.0.0.1", 0)
    try:
        opts = DoctorOptions(rendezvous=(f"127.0.0.1:{a.udp_address[1]}", f"127.0.0.1:{b.udp_address[1]}"),
                             host="127.0.0.1", port=_free_udp_port(), lan=False, port_mapping=False)
        doc = Doctor(opts)
        t0 = time.monotonic()
        results = [r async for r in doc.run()]
        assert time.monotonic() - t0 < 5
        names = [r.name for r in results]
        assert names[:3] == ["local_addresses", "port", "lan"] and names[-1] == "verdict"
        assert len(names) == len(set(names))
        for n in ("udp:127.0.0.1:%d" % a.udp_address[1], "public_address", "nat_mapping",
                  "port_preservation", "hairpin", "nat_filtering", "relay_udp", "relay_tcp"):
            assert n in names, n
        rep = doc.report()
        assert rep["udp"] is True and rep["public_addresses"] == ["127.0.0.1"]
        assert rep["nat"]["mapping"] == "none" and rep["nat"]["port_preservation"] is True
        assert rep["nat"]["hairpin"] is True
        assert rep["relay"] == {"server": f"127.0.0.1:{a.udp_address[1]}", "udp": True, "tcp": True,
                                "data": True, "data_between": "udp<->tcp",
                                "rtt_ms": rep["relay"]["rtt_ms"], "errors": {}}
        assert rep["dht"] == {"enabled": False} and rep["port_mapping"] is None
        assert rep["verdict"]["kind"] == "direct" and "private address" in rep["verdict"]["summary"]
        assert [c["name"] for c in rep["checks"]] == names
        # the relay saw a registration over each transport, and the channel closed again
        assert a.core.allocations == 0
    finally:
        for s in (a, b):
            s.close()
            await s.wait_closed()


async def test_servers_that_do_not_answer_end_within_the_budget():
    port = _free_udp_port()  # nothing listens there: UDP waits out its timeout, TCP is refused
    t0 = time.monotonic()
    rep = await report(DoctorOptions(rendezvous=(f"127.0.0.1:{port}",), host="127.0.0.1",
                                     port=_free_udp_port(), lan=False, port_mapping=False))
    assert time.monotonic() - t0 < 6
    assert rep["udp"] is False and rep["relay"]["tcp"] is False
    assert rep["relay"]["errors"]["tcp"] == "connection refused"
    assert rep["verdict"]["kind"] == "unreachable"


async def test_a_name_that_does_not_resolve_is_reported():
    rep = await report(DoctorOptions(rendezvous=("not a host:99999",), host="127.0.0.1",
                                     port=_free_udp_port(), lan=False, port_mapping=False))
    srv = rep["servers"][0]
    assert srv["udp"] is False and "HOST:PORT" in srv["error"]


async def test_overall_deadline_reports_unfinished_checks():
    # a server that never answers and a deadline shorter than the STUN timeout
    port = _free_udp_port()
    opts = DoctorOptions(rendezvous=(f"127.0.0.1:{port}",), host="127.0.0.1", port=_free_udp_port(),
                         lan=False, port_mapping=False, stun_timeout=5.0, relay_timeout=5.0, deadline=0.5)
    t0 = time.monotonic()
    results = [r async for r in run_checks(opts)]
    assert time.monotonic() - t0 < 2
    assert results[-1].name == "verdict"
    assert any("did not finish" in r.summary for r in results)


async def test_dht_check_joins_a_node_on_loopback():
    from dattui.engine.dht.service import DhtService
    p = probes.UdpProbe("127.0.0.1", 0)
    svc = DhtService(lambda d, a: p.sendto(d, a), os.urandom(20), loop=asyncio.get_running_loop())
    p.handlers.append(lambda d, a: svc.accepts(d) and (svc.datagram(d, a) or True))
    svc.start()
    try:
        f = await probes.dht_check([("127.0.0.1", p.port)], timeout=3.0, healthy=1)
        assert f.answered and f.nodes == 1 and f.external[0] == "127.0.0.1" and f.seconds < 3
        f = await probes.dht_check([("127.0.0.1", _free_udp_port())], timeout=0.5)
        assert not f.answered and f.nodes == 0
    finally:
        svc.close()
        p.close()



def test_cli_prints_checks_and_exits_by_verdict(tmp_path):
    async def start():
        return await serve("127.0.0.1", 0)

    # a server in a subprocess-free way: run one in a thread's loop
    import threading
    ready, holder = threading.Event(), {}

    def run():
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        holder["server"] = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(5)
    port = holder["server"].udp_address[1]
    try:
        args = ["doctor", "--no-dht", "--no-lan", "--no-port-mapping", "--port", str(_free_udp_port()),
                "--rendezvous", f"127.0.0.1:{port}"]
        p = subprocess.run([*dattui_cmd(), *args], capture_output=True, text=True,
                           env=env(tmp_path / "home"), timeout=30, cwd=ROOT)
        assert p.returncode == 0, p.stdout + p.stderr  # no NAT on loopback: "direct"
        out = p.stdout
        assert "✓ UDP to the rendezvous server 127.0.0.1:%d works" % port in out
        assert "✓ verdict: direct connections will work" in out
        p = subprocess.run([*dattui_cmd(), *args, "--json"], capture_output=True,
                           text=True, env=env(tmp_path / "home"), timeout=30, cwd=ROOT)
        import json
        rep = json.loads(p.stdout)
        assert set(rep) >= {"udp", "public_addresses", "nat", "dht", "relay", "verdict", "checks"}
        assert set(rep["nat"]) >= {"mapping", "filtering", "hairpin"}
        assert set(rep["relay"]) >= {"udp", "tcp"}
    finally:
        loop = holder["loop"]
        loop.call_soon_threadsafe(holder["server"].close)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


async def test_filtering_against_a_server_with_a_second_address_on_loopback():
    srv = await serve("127.0.0.1", 0, alt=("127.0.0.2", 0))
    try:
        rep = await report(DoctorOptions(rendezvous=(f"127.0.0.1:{srv.udp_address[1]}",), host="127.0.0.1",
                                         port=_free_udp_port(), lan=False, port_mapping=False))
        assert rep["nat"]["mapping"] == "none" and rep["nat"]["filtering"] == "none"
        assert f"127.0.0.2:{srv.udp_addresses[(1, 1)][1]}" in rep["nat"]["filtering_reason"]
        assert srv.core.stats.stun_changed == 1  # test II got in: test III was not needed
    finally:
        srv.close()
        await srv.wait_closed()


async def test_peer_test_on_loopback_tries_every_path():
    """Both sides in this process, one rendezvous server on 127.0.0.1: every
    path is tried in order and reported as it finishes; the best one here is
    the local address; the sample goes both ways over it."""
    srv = await serve("127.0.0.1", 0)
    try:
        opts = DoctorOptions(rendezvous=(f"127.0.0.1:{srv.udp_address[1]}",), host="127.0.0.1", port=0,
                             lan=False, port_mapping=False)
        ready = asyncio.get_running_loop().create_future()
        seen: dict[str, list] = {"host": [], "join": []}
        host = asyncio.ensure_future(host_peer_test(opts, size=1 << 20, seconds=2.0, wait=10,
                                                    on_ready=ready.set_result, on_path=seen["host"].append))
        t0 = time.monotonic()
        joined = await join_peer_test(opts, await asyncio.wait_for(ready, 10), size=1 << 19, seconds=2.0,
                                      on_path=seen["join"].append)
        hosted = await host
        assert time.monotonic() - t0 < 10
        for res, role in ((hosted, "host"), (joined, "join")):
            assert res.ok, (role, res.error)
            assert [p.path for p in seen[role]] == ["lan", "direct", "punched", "relay-udp", "relay-tcp"]
            assert res.paths == seen[role]
            by = {p.path: p for p in res.paths}
            assert by["lan"].ok and by["lan"].address.startswith("127.0.0.1:") and by["lan"].rtt_ms > 0
            assert by["direct"].ok is None and "no public address" in by["direct"].reason
            assert by["punched"].ok and by["relay-udp"].ok and by["relay-tcp"].ok
            assert res.best == "lan" and res.sample_path == "lan"
        assert [p.as_dict() for p in hosted.peer_paths] == [p.as_dict() for p in joined.paths]
        assert [p.as_dict() for p in joined.peer_paths] == [p.as_dict() for p in hosted.paths]
        assert joined.bytes == 1 << 20 and hosted.bytes == 1 << 19   # each side's own sample size
        assert joined.peer_received["bytes"] == 1 << 19 and joined.throughput > 0
        assert json.loads(json.dumps(joined.as_dict()))["paths"][0]["path"] == "lan"
        await asyncio.sleep(0.3)  # nothing is left behind at the server
        assert srv.core.allocations == 0 and srv.core.registrations == 0
    finally:
        srv.close()
        await srv.wait_closed()


async def test_peer_test_join_with_nobody_there_and_bad_ids(tmp_path):
    srv = await serve("127.0.0.1", 0)
    try:
        opts = DoctorOptions(rendezvous=(f"127.0.0.1:{srv.udp_address[1]}",), host="127.0.0.1", port=0)
        t0 = time.monotonic()
        res = await join_peer_test(opts, pp.new_test_id(), find_timeout=1.0)
        assert not res.ok and "was not found within 1 s" in res.error and time.monotonic() - t0 < 6
        with pytest.raises(UsageError):
            await join_peer_test(opts, "not-an-id")
        res = await host_peer_test(DoctorOptions(rendezvous=(), host="127.0.0.1", port=0), wait=1)
        assert False, "no rendezvous server is a usage error"
    except UsageError as exc:
        assert "--rendezvous" in str(exc)
    finally:
        srv.close()
        await srv.wait_closed()
    p = subprocess.run([*dattui_cmd(), "doctor", "--peer", "dat://" + "ab" * 32,
                        "--rendezvous", "127.0.0.1:9"], capture_output=True, text=True,
                       env=env(tmp_path / "home"), timeout=30, cwd=ROOT)
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1
    assert "not a peer test id" in p.stderr


def test_peer_test_cli_prints_every_path_on_both_sides(tmp_path):
    port = _free_udp_port()
    rdv = subprocess.Popen([*dattui_cmd(), "rendezvous", "--bind", f"127.0.0.1:{port}"],
                           stderr=subprocess.PIPE, text=True, env=env(tmp_path / "r"), cwd=ROOT)
    try:
        assert "rendezvous" in rdv.stderr.readline()
        common = ["--no-lan", "--no-dht", "--port", "0", "--rendezvous", f"127.0.0.1:{port}", "--sample-mib", "1"]
        host = subprocess.Popen([*dattui_cmd(), "doctor", "--peer", "--wait", "20", *common],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(tmp_path / "a"),
                                cwd=ROOT)
        first = host.stdout.readline()
        assert first.startswith("peer test id: "), first
        test_id = first.split()[-1]
        assert len(test_id) == 19 and test_id.count("-") == 3
        join = subprocess.run([*dattui_cmd(), "doctor", "--peer", test_id, *common],
                              capture_output=True, text=True, env=env(tmp_path / "b"), timeout=60, cwd=ROOT)
        out, err = host.communicate(timeout=30)
        for text, code in ((out, host.returncode), (join.stdout, join.returncode)):
            assert code == 0, text + err + join.stderr
            for path in ("lan", "direct", "punched", "relay-udp", "relay-tcp"):
                assert any(line.startswith(("✓ " + path + ":", "✗ " + path + ":", "- " + path + ":"))
                           for line in text.splitlines()), (path, text)
            assert "✓ relay-tcp: works" in text and "✓ best path from this machine: " in text
            assert "throughput over " in text and "the other machine received 1.0 MiB" in text
    finally:
        rdv.terminate()
        rdv.wait(10)


def test_port_mapping_answers_are_parsed_strictly():
    from dattui.engine.doctor_checks import portmap as pm
    req = pm.natpmp_map_request(3282, 60)
    assert len(req) == 12 and req[:2] == b"\x00\x01" and pm.natpmp_map_request(3282, 0, 0)[6:8] == b"\x00\x00"
    ok = bytes([0, 129, 0, 0]) + (7).to_bytes(4, "big") + (3282).to_bytes(2, "big") + (40000).to_bytes(2, "big") \
        + (60).to_bytes(4, "big")
    assert pm.parse_natpmp_map(ok, 3282) == (0, 40000, 60)
    assert pm.parse_natpmp_map(ok, 3283) is None                 # not our port
    assert pm.parse_natpmp_map(ok + b"\x00", 3282) is None        # wrong size
    assert pm.parse_natpmp_map(b"\x00\x80" + ok[2:], 3282) is None  # not a map answer
    nonce = bytes(range(12))
    req = pm.pcp_map_request("10.1.0.2", 3282, 60, nonce)
    assert len(req) == 60 and req[:2] == b"\x02\x01" and req[24:36] == nonce
    answer = bytes([2, 0x81, 0, 0]) + (60).to_bytes(4, "big") + bytes(16) + nonce + bytes([17, 0, 0, 0]) \
        + (3282).to_bytes(2, "big") + (3282).to_bytes(2, "big") + pm._v4mapped("203.0.113.101")
    assert pm.parse_pcp_map(answer, nonce, 3282) == (0, 3282, 60, "203.0.113.101")
    assert pm.parse_pcp_map(answer, bytes(12), 3282) is None      # another request's nonce
    assert pm.parse_pcp_map(answer[:59], nonce, 3282) is None
    rng = random.Random(9)
    for _ in range(3000):
        junk = rng.randbytes(rng.choice([12, 16, 24, 60, rng.randrange(0, 200)]))
        pm.parse_natpmp_map(junk, 3282)
        pm.parse_pcp_map(junk, nonce, 3282)


async def test_a_gateway_that_does_not_answer_mapping_requests():
    from dattui.engine.doctor_checks import portmap as pm
    facts = pm.PortMapFacts(gateway="127.0.0.1", natpmp=True)
    t0 = time.monotonic()
    # nothing listens on 127.0.0.1:5351: the ICMP error ends it at once
    assert await pm.request_mapping(facts, 3282, timeout=1.0) is None
    assert time.monotonic() - t0 < 1.5 and facts.mapping_error


async def test_a_peer_test_side_never_answers_its_own_pings():
    """A local address the other side reports may be one of ours too (a docker
    bridge on both machines): pings that reach their own sender stay unanswered."""
    from dattui.engine.doctor_checks.peer import _Side
    srv = await serve("127.0.0.1", 0)
    side = _Side(DoctorOptions(rendezvous=(f"127.0.0.1:{srv.udp_address[1]}",), host="127.0.0.1", port=0),
                 "host", pp.new_test_id(), None, 1, 1.0)
    try:
        await side.start()
        me = ("127.0.0.1", side.main.port)
        winner, rtts, _ = await side._ping([lambda d: side.main.sendto(d, me)], 0.6)
        assert winner == -1 and rtts == []
    finally:
        side.close()
        srv.close()
        await srv.wait_closed()
