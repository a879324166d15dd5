"""`dattui doctor` in the NAT lab: every kind of NAT (mapping, filtering,
hairpinning), no network, unreachable servers, and the two-machine peer test
against the path a real clone between the same two kinds takes.

The rendezvous host runs one server with four UDP sockets (203.0.113.10 and
.11, ports 3478 and 3479, nat_helpers.start_rendezvous_rfc5780): .10:3478 and
.11:3478 are the two addresses the mapping is compared across, and a
CHANGE-REQUEST is answered from the socket that differs in address and/or
port (RFC 5780), each from the address it is bound to (a NAT drops an answer
from an address it never sent to unless its filtering lets it in).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli import env
from helpers import make_tree
from nat_helpers import Share, clone, first_connection, start_rendezvous, start_rendezvous_rfc5780
from natlab import NatKind, add_full_cone_peer, add_peer, build_internet
from installed import dattui_cmd, module_cmd

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parent.parent
RDV1, RDV2, PORT = "203.0.113.10", "203.0.113.11", 3478
RDV_ARGS = ["--rendezvous", f"{RDV1}:{PORT}", "--rendezvous", f"{RDV2}:{PORT}"]
BUDGET = 15.0


def dattui(*args) -> list[str]:
    return dattui_cmd(*args)


@pytest.fixture
def net(lab):
    inet = build_internet(lab)
    rdv = inet.add_server("rdv", RDV1, RDV2)
    server = start_rendezvous_rfc5780(rdv)
    yield inet, rdv
    server.stop()


def doctor(host, home: Path, *args, json_mode: bool = True):
    t0 = time.monotonic()
    p = host.run(dattui("doctor", *(["--json"] if json_mode else []), "--no-dht", "--no-lan", *args),
                 env=env(home), check=False, timeout=60)
    took = time.monotonic() - t0
    if not json_mode:
        return p, None, took
    assert p.stdout.strip(), p.stderr
    return p, json.loads(p.stdout.strip().splitlines()[-1]), took


APD = "address-and-port-dependent"
# (udp, mapping, port preservation, filtering, hairpin, verdict kind, exit status); Linux
# MASQUERADE filters by address and port; the lab's NATs do not hairpin (without a NAT
# there is nothing to turn); the full cone lets anything in and hairpins
EXPECTED = {
    NatKind.PUBLIC: (True, "none", True, "none", True, "direct", 0),
    NatKind.CONE: (True, "endpoint-independent", True, APD, False, "direct", 0),
    NatKind.MASQ: (True, "endpoint-independent", True, APD, False, "direct", 0),
    NatKind.SYMMETRIC: (True, "endpoint-dependent", False, APD, False, "relay", 1),
    NatKind.UDP_BLOCKED: (False, "unknown", None, "unknown", None, "tcp_relay", 1),
    NatKind.DOUBLE: (True, "endpoint-independent", True, APD, False, "direct", 0),
    NatKind.FULL_CONE: (True, "endpoint-independent", True, "endpoint-independent", True, "direct", 0),
}


@pytest.mark.parametrize("kind", list(EXPECTED), ids=lambda k: k.name.lower())
def test_doctor_classifies_each_kind_of_nat(net, kind, tmp_path):
    inet, _ = net
    if kind is NatKind.FULL_CONE:
        peer = add_full_cone_peer(inet.lab, inet, 1)
    else:
        peer = add_peer(inet.lab, inet, kind, 1)
    p, rep, took = doctor(peer.host, tmp_path / "home", *RDV_ARGS)
    udp, mapping, preserved, filtering, hairpin, verdict, status = EXPECTED[kind]
    assert took < BUDGET and rep["seconds"] < BUDGET
    assert p.returncode == status, (p.returncode, rep["verdict"])
    assert rep["udp"] is udp
    assert rep["nat"]["mapping"] == mapping, rep["nat"]
    assert rep["nat"]["port_preservation"] is preserved
    assert rep["verdict"]["kind"] == verdict
    assert rep["relay"]["server"] == f"{RDV1}:{PORT}"
    assert rep["relay"]["tcp"] is True and rep["relay"]["data"] is True, rep["relay"]
    assert rep["relay"]["udp"] is udp
    assert rep["checks"][-1]["name"] == "verdict"
    names = [c["name"] for c in rep["checks"]]
    assert len(names) == len(set(names))
    assert rep["nat"]["filtering"] == filtering, rep["nat"]
    assert rep["nat"]["hairpin"] is hairpin, rep["nat"]
    if udp:
        assert rep["public_addresses"] == [peer.public_ip]
        assert [m["server"] for m in rep["nat"]["mapped"]] == [f"{RDV1}:{PORT}", f"{RDV2}:{PORT}"]
        check = [c for c in rep["checks"] if c["name"] == "nat_filtering"][0]
        assert check["ok"] is True and f"{RDV2}:3479" in check["detail"], check
    else:
        assert rep["public_addresses"] == []
        assert ("UDP is blocked here: transfers will go through the TCP relay at "
                f"{RDV1}:{PORT}; ask your network team to allow outbound UDP") in rep["verdict"]["summary"]
        assert rep["relay"]["data_between"] == "tcp<->tcp"
    if verdict == "direct":
        assert rep["verdict"]["summary"].startswith("direct connections will work")
    if verdict == "relay":
        assert rep["verdict"]["summary"].startswith("others can reach you only through a relay")
    if kind is NatKind.FULL_CONE:
        assert "peers behind any kind of NAT reach you directly" in rep["verdict"]["steps"][0]


def test_no_network_at_all(lab, tmp_path):
    island = lab.add_host("island")  # nothing but lo
    p, rep, took = doctor(island, tmp_path / "home", *RDV_ARGS)
    assert took < BUDGET
    assert p.returncode == 1
    assert rep["verdict"]["kind"] == "no_network"
    assert rep["verdict"]["summary"].startswith("no network at all")
    assert rep["udp"] is False and rep["public_addresses"] == []
    assert rep["local_addresses"] == {"ipv4": [], "ipv6": []}
    p, _, took = doctor(island, tmp_path / "home", *RDV_ARGS, json_mode=False)
    assert took < BUDGET and p.returncode == 1
    last = [l for l in p.stdout.splitlines() if "verdict" in l][-1]
    assert last.startswith("✗ verdict: no network at all"), p.stdout


def test_every_server_unreachable_within_budget(lab, tmp_path):
    inet = build_internet(lab)
    rdv = inet.add_server("rdv", RDV1, RDV2)
    rdv.run(["iptables", "-A", "INPUT", "-j", "DROP"])  # a silent black hole: no RST, no ICMP
    peer = add_peer(lab, inet, NatKind.CONE, 1)
    home = tmp_path / "home"
    home.mkdir()
    # the DHT on too, through a bootstrap node inside the lab that never answers
    (home / "config.toml").write_text(f'[discovery]\ndht = true\ndht_bootstrap = ["{RDV1}:6881"]\n')
    t0 = time.monotonic()
    p = peer.host.run(dattui("doctor", "--json", "--no-lan", *RDV_ARGS), env=env(home),
                      check=False, timeout=60)
    took = time.monotonic() - t0
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert took < BUDGET, took
    assert p.returncode == 1
    assert rep["verdict"]["kind"] == "unreachable"
    assert rep["verdict"]["summary"].startswith("no server answers, over UDP or TCP")
    assert rep["udp"] is False and rep["relay"]["udp"] is False and rep["relay"]["tcp"] is False
    assert rep["dht"] == {"enabled": True, "reachable": False, "nodes": 0, "external_address": None,
                          "bootstrap": [f"{RDV1}:6881"]}
    dht = [c for c in rep["checks"] if c["name"] == "dht"][0]
    assert dht["ok"] is False


@pytest.mark.parametrize("kind,filtering", [(NatKind.CONE, APD), (NatKind.PUBLIC, "unknown")],
                         ids=["cone", "public"])
def test_filtering_against_servers_with_an_alternate_port_only(lab, kind, filtering, tmp_path):
    """Two `dattui rendezvous --bind IP:3478`, each with its automatic alternate port
    3479 and no second IP address: only RFC 5780 test III (another port) can run."""
    inet = build_internet(lab)
    rdv = start_rendezvous(inet.add_server("rdv", RDV1, RDV2))
    try:
        peer = add_peer(lab, inet, kind, 1)
        p, rep, took = doctor(peer.host, tmp_path / "home", "--rendezvous", f"{RDV1}:{PORT}",
                              "--stun", f"{RDV2}:{PORT}")
        assert took < BUDGET
        assert [s["role"] for s in rep["servers"]] == ["rendezvous", "stun"]
        assert rep["nat"]["filtering"] == filtering, rep["nat"]
        check = [c for c in rep["checks"] if c["name"] == "nat_filtering"][0]
        assert "no second IP address" in check["detail"] and "other port" in check["detail"], check
        if kind is NatKind.PUBLIC:
            assert check["summary"].startswith("filtering: not port-dependent") and "--alt-bind" in check["advice"]
    finally:
        rdv.stop()


# -- the two-machine peer test ------------------------------------------------------------

PEER_KINDS = [NatKind.PUBLIC, NatKind.CONE, NatKind.MASQ, NatKind.SYMMETRIC, NatKind.UDP_BLOCKED]
PEER_PAIRS = list(itertools.combinations_with_replacement(PEER_KINDS, 2))  # host kind, joiner kind
STEPS = ["lan", "direct", "punched", "relay-udp", "relay-tcp"]
CONCURRENT_PAIRS = 5   # at once: 2 cores, and every path has its own wall-clock timeout
PAIRS_BUDGET = 150.0


def expected_best(host: NatKind, join: NatKind) -> str:
    """The best path from the joiner's side: what the engine takes for a clone there."""
    if NatKind.UDP_BLOCKED in (host, join):
        return "relay-tcp"
    if host is NatKind.PUBLIC:
        return "direct"    # the host's own address answers unsolicited packets
    if host is join is NatKind.SYMMETRIC:
        return "relay-udp"
    return "punched"


def _lines(text: str) -> list[dict]:
    return [json.loads(l) for l in text.splitlines() if l.startswith("{")]


def _one_pair(a, b, home, sample="0.25") -> dict:
    """The peer test between a (host) and b (joiner), then a clone on b of a share on a."""
    out: dict = {"t0": time.monotonic()}
    common = ["--json", "--no-dht", "--no-lan", "--sample-mib", sample, *RDV_ARGS]
    host = a.host.popen(dattui("doctor", "--peer", "--wait", "60", *common), stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, env=env(home / "ha"))
    first = json.loads(host.stdout.readline())
    assert first["event"] == "peer_test_id" and len(first["id"]) == 16, first
    joined = b.host.run(dattui("doctor", "--peer", first["id"], *common), env=env(home / "hb"),
                        check=False, timeout=90)
    h_out, h_err = host.communicate(timeout=60)
    out["peer_seconds"] = time.monotonic() - out["t0"]
    out["status"] = (host.returncode, joined.returncode)
    for role, text, err in (("host", h_out, h_err), ("join", joined.stdout, joined.stderr)):
        lines = _lines(text)
        res = [l for l in lines if l["event"] == "peer_test"]
        assert res, (role, text, err[-2000:])
        out[role] = res[0]
        out[role + "_streamed"] = [l["path"] for l in lines if l["event"] == "peer_path"]
    # a real share and clone between the same two machines, NAT state forgotten first
    for p in (a, b):
        p.flush_conntrack()
    src = make_tree(home / "src")
    sh = Share(a.host, src, home / "hs")
    try:
        cp, lines, _ = clone(b.host, sh.link, home / "dst", home / "hc")
    finally:
        sh.proc.terminate()
    out["clone_status"] = cp.returncode
    conn = first_connection(lines)
    out["clone_path"] = conn["path"] if conn else None
    out["seconds"] = time.monotonic() - out["t0"]
    return out


def test_peer_test_reports_the_path_a_clone_takes_for_every_pair(lab, tmp_path):
    inet = build_internet(lab)
    rdv = start_rendezvous_rfc5780(inet.add_server("rdv", RDV1, RDV2))
    machines = {pair: (add_peer(lab, inet, pair[0], 1 + 2 * n), add_peer(lab, inet, pair[1], 2 + 2 * n))
                for n, pair in enumerate(PEER_PAIRS)}
    results: dict = {}
    gate = threading.Semaphore(CONCURRENT_PAIRS)

    def run(pair) -> None:
        with gate:
            try:
                results[pair] = _one_pair(*machines[pair], tmp_path / f"{pair[0].name}-{pair[1].name}")
            except Exception as exc:  # a failed pair is reported with the others, not lost
                results[pair] = {"exception": repr(exc)[-3000:]}

    t0 = time.monotonic()
    try:
        threads = [threading.Thread(target=run, args=(pair,)) for pair in PEER_PAIRS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        rdv.stop()
    took = time.monotonic() - t0
    print(f"\npeer test and clone, {len(PEER_PAIRS)} pairs, {CONCURRENT_PAIRS} at a time: {took:.1f} s")
    print("host \\ joiner".ljust(14) + "".join(k.name.lower().ljust(26) for k in PEER_KINDS))
    for hk in PEER_KINDS:
        row = hk.name.lower().ljust(14)
        for jk in PEER_KINDS:
            r = results.get((hk, jk))
            cell = "" if r is None else "ERROR" if "exception" in r else \
                f"{r['join']['best']}/{r['clone_path']} {r['peer_seconds']:.0f}s"
            row += cell.ljust(26)
        print(row)
    bad = []
    for pair, r in results.items():
        name = f"{pair[0].name}->{pair[1].name}"
        if "exception" in r:
            bad.append(f"{name}: {r['exception']}")
            continue
        join, host = r["join"], r["host"]
        want = expected_best(*pair)
        problems = []
        if r["status"] != (0, 0) or not join["ok"] or not host["ok"]:
            problems.append(f"status {r['status']}: {join['error']!r} {host['error']!r}")
        if join["best"] != want or r["clone_path"] != want:
            problems.append(f"best {join['best']}, clone {r['clone_path']}, want {want}")
        if r["clone_status"] != 0:
            problems.append(f"clone exit {r['clone_status']}")
        for role, res in (("join", join), ("host", host)):
            if [p["path"] for p in res["paths"]] != STEPS or r[role + "_streamed"] != STEPS:
                problems.append(f"{role} paths {[p['path'] for p in res['paths']]} streamed {r[role + '_streamed']}")
            for p in res["paths"]:
                if not p["reason"] or (p["ok"] and not p["rtt_ms"] > 0):
                    problems.append(f"{role} {p}")
        # each side printed what the other found, exactly as the other found it
        if host["peer_paths"] != join["paths"] or join["peer_paths"] != host["paths"]:
            problems.append("the two sides disagree on each other's results")
        if host["peer_best"] != join["best"] or join["sample_path"] != join["best"]:
            problems.append(f"sample over {join['sample_path']}, host saw best {host['peer_best']}")
        if not (join["bytes"] == host["bytes"] == 1 << 18 and join["throughput"] > 0 and host["throughput"] > 0):
            problems.append(f"sample {join['bytes']}/{host['bytes']} bytes")
        if problems:
            bad.append(f"{name}: " + "; ".join(problems))
    assert not bad, "\n".join(bad)
    assert took < PAIRS_BUDGET, f"{took:.0f} s for every pair (budget {PAIRS_BUDGET:.0f} s)"


# -- port mapping, IPv6 ---------------------------------------------------------------------

def _fake_gateway(peer, protocols: str):
    gw = peer.router.popen([sys.executable, str(ROOT / "tests" / "fake_gateway.py"), peer.gateway,
                            peer.public_ip, "--protocols", protocols], stdout=subprocess.PIPE, text=True)
    assert gw.stdout.readline().strip() == "ready"
    return gw


def _gateway_log(gw) -> list[dict]:
    gw.terminate()
    out, _ = gw.communicate(timeout=10)
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


@pytest.mark.parametrize("protocols", ["natpmp,pcp", "pcp"])
def test_port_mapping_requested_and_released_at_a_natpmp_or_pcp_gateway(net, protocols, tmp_path):
    inet, _ = net
    peer = add_peer(inet.lab, inet, NatKind.CONE, 1)
    gw = _fake_gateway(peer, protocols)
    try:
        p, rep, took = doctor(peer.host, tmp_path / "home", *RDV_ARGS)
    finally:
        log = _gateway_log(gw)
    assert took < BUDGET
    pm = rep["port_mapping"]
    proto = "natpmp" if "natpmp" in protocols else "pcp"
    assert pm["gateway"] == peer.gateway and pm["pcp"] is True and pm["natpmp"] is (proto == "natpmp")
    assert pm["mapped"] == {"protocol": proto, "internal_port": 3282, "external": f"{peer.public_ip}:3282",
                            "lifetime": 60, "released": True}, pm
    check = [c for c in rep["checks"] if c["name"] == "port_mapping"][0]
    assert check["ok"] is True and f"UDP 3282 became {peer.public_ip}:3282" in check["summary"]
    maps = [(e["internal_port"], e["lifetime"]) for e in log if e["op"] == "map"]
    assert maps == [(3282, 60), (3282, 0)] and {e["protocol"] for e in log if e["op"] == "map"} == {proto}


def test_the_daemon_asks_the_gateway_only_with_lan_discovery_on(net, tmp_path):
    """`python -m engine.daemon` inside the peer's namespace, reached over its Unix socket."""
    from dattui.engine.daemon.client import DaemonClient

    inet, _ = net
    peer = add_peer(inet.lab, inet, NatKind.CONE, 1)

    async def checks(home) -> list[str]:
        for _ in range(100):
            if (home / "daemon.sock").exists():
                break
            await asyncio.sleep(0.1)
        client = await DaemonClient.connect(home)
        try:
            return [r.name async for r in client.doctor()]
        finally:
            await client.stop_daemon()
            await client.close()

    for lan in (False, True):
        gw = _fake_gateway(peer, "natpmp,pcp")
        home = tmp_path / f"home-{lan}"
        env(home)
        (home / "config.toml").write_text(f'[discovery]\ndht = false\nrendezvous = ["{RDV1}:{PORT}"]\n')
        daemon = peer.host.popen([*module_cmd("engine.daemon"), "--port", "0",
                                  *([] if lan else ["--no-lan"])], env=env(home), cwd=str(ROOT))
        try:
            names = asyncio.run(asyncio.wait_for(checks(home), 30))
            daemon.wait(20)
        finally:
            if daemon.poll() is None:
                daemon.terminate()
            log = _gateway_log(gw)
        assert names[-1] == "verdict" and f"udp:{RDV1}:{PORT}" in names
        if lan:
            assert "port_mapping" in names and any(e["op"] == "map" for e in log), log
        else:
            assert "port_mapping" not in names and log == [], log


def test_ipv6_local_addresses_are_reported(net, tmp_path):
    inet, _ = net
    peer = add_peer(inet.lab, inet, NatKind.CONE, 1)
    peer.host.run(["ip", "addr", "add", "2001:db8:1::2/64", "dev", peer.ifname, "nodad"])
    p, rep, took = doctor(peer.host, tmp_path / "home", *RDV_ARGS)
    assert rep["local_addresses"]["ipv4"] == [peer.ip]
    assert rep["local_addresses"]["ipv6"] == ["2001:db8:1::2"]
    check = [c for c in rep["checks"] if c["name"] == "local_addresses"][0]
    assert "2001:db8:1::2" in check["summary"] and "IPv6: 2001:db8:1::2" in check["detail"]
