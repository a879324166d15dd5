"""Share behind one kind of NAT, clone behind another: every pair, in the NAT lab.

Prints the matrix (path and connect time per pair); README shows it.
"""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from dattui.engine.transport.identity import NodeIdentity
from helpers import make_tree, tree, visible
from nat_helpers import RDV, Share, clone, first_connection, start_rendezvous
from natlab import NatKind, add_peer, add_peers_same_nat, build_internet

pytestmark = pytest.mark.netns

KINDS = [NatKind.PUBLIC, NatKind.CONE, NatKind.MASQ, NatKind.SYMMETRIC, NatKind.UDP_BLOCKED,
         NatKind.DOUBLE]


def expected(share: NatKind, cl: NatKind) -> set[str]:
    if NatKind.UDP_BLOCKED in (share, cl):
        return {"relay-tcp"}
    if share == cl == NatKind.SYMMETRIC:
        return {"relay-udp"}
    return {"punched", "direct", "lan"}


def test_matrix_every_pair_connects_over_the_expected_path(lab, tmp_path):
    inet = build_internet(lab)
    rdv_host = inet.add_server("rdv", *RDV)
    rdv = start_rendezvous(rdv_host)
    src = make_tree(tmp_path / "src")
    shares, clones, share_ids = {}, {}, {}
    for i, kind in enumerate(KINDS):
        folder = tmp_path / f"src-{kind.name}"
        shutil.copytree(src, folder)
        host = add_peer(lab, inet, kind, 1 + i)
        shares[kind] = Share(host.host, folder, tmp_path / f"hs-{kind.name}")
        share_ids[kind] = NodeIdentity.load_or_create(tmp_path / f"hs-{kind.name}").short_id
        clones[kind] = add_peer(lab, inet, kind, 11 + i)
    results: dict[tuple, tuple] = {}
    try:
        # six rounds; in each, every share serves one clone behind another kind, so
        # no two clones of one share run at once (they would meet and punch each other)
        for shift in range(len(KINDS)):
            threads = []
            for i, skind in enumerate(KINDS):
                ck = KINDS[(i + shift) % len(KINDS)]

                def run(ck=ck, sk=skind):
                    dst = tmp_path / f"dst-{sk.name}-{ck.name}"
                    try:
                        p, lines, secs = clone(clones[ck].host, shares[sk].link, dst,
                                               tmp_path / f"hc-{sk.name}-{ck.name}")
                    except Exception as exc:  # a hung clone is a failed cell, not a lost one
                        results[(sk, ck)] = (False, None, None, repr(exc)[-300:])
                        return
                    conn = next((l for l in lines if l["event"] == "peer_connected"
                                 and l["peer_id"] == share_ids[sk]), None)
                    ok = p.returncode == 0 and visible(tree(dst)) == visible(tree(src))
                    # connect time: from the clone's start (its node up) to the connection
                    results[(sk, ck)] = (ok, conn["path"] if conn else None,
                                         conn["since_start"] if conn else None, p.stderr[-300:])

                t = threading.Thread(target=run)
                t.start()
                threads.append(t)
            for t in threads:
                t.join()
    finally:
        rdv.stop()
    # the matrix, as the README shows it
    width = 13
    print("\nshare \\ clone".ljust(width + 1) + "".join(k.name.lower().ljust(width + 6) for k in KINDS))
    for sk in KINDS:
        row = sk.name.lower().ljust(width)
        for ck in KINDS:
            ok, path, secs, _ = results[(sk, ck)]
            cell = f"{path or 'FAILED'} {secs:.1f}s" if ok and secs is not None else "FAILED"
            row += cell.ljust(width + 6)
        print(row)
    bad = []
    for (sk, ck), (ok, path, secs, err) in results.items():
        if not ok or path not in expected(sk, ck):
            bad.append(f"{sk.name}->{ck.name}: ok={ok} path={path} {err}")
        elif path in ("punched", "direct", "lan") and secs >= 2.0:
            bad.append(f"{sk.name}->{ck.name}: punched in {secs:.2f} s (target < 2 s)")
        elif path.startswith("relay") and secs >= 4.0:
            bad.append(f"{sk.name}->{ck.name}: relayed in {secs:.2f} s (target < 4 s)")
    assert not bad, "\n".join(bad)


def test_two_peers_behind_the_same_nat_without_hairpinning(lab, tmp_path):
    inet = build_internet(lab)
    rdv = start_rendezvous(inet.add_server("rdv", *RDV))
    a, b = add_peers_same_nat(lab, inet, 30)
    src = make_tree(tmp_path / "src")
    try:
        sh = Share(a.host, src, tmp_path / "hs")
        p, lines, _ = clone(b.host, sh.link, tmp_path / "dst", tmp_path / "hc")
        assert p.returncode == 0, p.stderr
        conn = first_connection(lines)
        # no hairpin: the punch succeeds on the LAN candidate
        assert conn["address"].startswith("10.30.0.") and conn["path"] in ("punched", "lan")
        steps = [l["step"] for l in lines if l["event"] == "path_attempted"]
        assert "punch" in steps and "punched" in steps  # the attempts are reported as they happen
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        rdv.stop()
