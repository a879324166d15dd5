"""Swarm downloads between real dattui processes, each in its own network
namespace on one bridge (tests/netlab.py): a share whose upload is limited with
tbf on its veth (the share is the bottleneck, as a lab's one server), clones
told of the share and of each other with --peer (DHT off, --no-lan).

Measured: wall-clock time of each `dattui clone` process (start to exit), and
the share's upload as the transmit byte counter of the share's veth (QUIC
headers and retransmissions included), with the share's own --json figure
(`bytes_sent`, block payload) printed next to it.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cli import cmd, env, follow_share
from helpers import tree, visible

pytestmark = pytest.mark.netns

MiB = 1 << 20
SHARE_MBIT = 16          # the share's upload: 2 MB/s
DATASET = 16 * MiB       # 8 s through the share's upload
NET = "10.70.0"
PORT = 3282


def make_dataset(root: Path, kind: str) -> Path:
    rng = random.Random(11)
    root.mkdir(parents=True)
    if kind == "one-big-file":
        (root / "big.bin").write_bytes(rng.randbytes(DATASET))
    else:  # many files
        for i in range(128):
            d = root / f"d{i % 8}"
            d.mkdir(exist_ok=True)
            (d / f"f{i:03d}.bin").write_bytes(rng.randbytes(DATASET // 128))
    return root


def bridge(lab, n: int):
    """n hosts on one bridge, 10.70.0.1 .. 10.70.0.n; [(host, ifname)]."""
    seg = lab.add_bridge_segment("sw")
    out = []
    for i in range(n):
        h = lab.add_host(f"h{i}")
        out.append((h, seg.attach(h, f"{NET}.{i + 1}")))
    return out


def tx_bytes(host, ifname: str) -> int:
    out = subprocess.run(["ip", "-n", host.ns, "-s", "-j", "link", "show", "dev", ifname],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["stats64"]["tx"]["bytes"]


class Share:
    def __init__(self, host, src: Path, home: Path) -> None:
        self.proc = host.popen(cmd("share", src, "--json", "--no-lan", "--port", PORT),
                               stdout=subprocess.PIPE, text=True, env=env(home))
        self.lines = follow_share(self.proc)
        self.link = self.lines[0]["link"]

    def bytes_sent(self) -> int:
        """The share's last --json progress figure (printed at most once a second)."""
        time.sleep(1.3)
        return max([l["bytes_sent"] for l in list(self.lines) if l["event"] == "progress"],
                   default=0)


def start_clone(host, link: str, dst: Path, home: Path, peers: list[str], *extra):
    args = ["--peer"] * len(peers)
    flat = [x for pair in zip(args, peers) for x in pair]
    return host.popen(cmd("clone", link, dst, "--json", "--no-lan", "--timeout", "30",
                          "--port", PORT, *flat, *extra),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(home))


def wait_for_event(proc, name: str, timeout: float) -> bool:
    """Read a --json process's lines (in a thread, for good: never a full pipe)
    until one with event `name`; False after `timeout` s."""
    seen = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("{") and json.loads(line)["event"] == name:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    return seen.wait(timeout)


def run_clones(procs, timeout: float = 60) -> list[tuple[float, list[dict], str]]:
    """Wait for every clone process; (seconds from now to its exit, its JSON lines, stderr)."""
    t0 = time.monotonic()
    out: list = [None] * len(procs)

    def wait(i: int, p) -> None:
        stdout, stderr = p.communicate(timeout=timeout)
        out[i] = (time.monotonic() - t0, [json.loads(l) for l in stdout.splitlines()
                                          if l.startswith("{")], stderr, p.returncode)

    threads = [threading.Thread(target=wait, args=(i, p)) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for secs, lines, stderr, rc in out:
        assert rc == 0, stderr
        assert lines[-1]["event"] == "done", lines[-3:]
    return [(secs, lines, stderr) for secs, lines, stderr, _ in out]


@pytest.mark.parametrize("kind", ["many-files", "one-big-file"])
def test_five_clones_in_namespaces_finish_together_and_the_share_uploads_less_than_twice(
        lab, tmp_path, kind):
    nodes = bridge(lab, 7)
    (sh, sh_if), solo_host, five = nodes[0], nodes[1][0], [h for h, _ in nodes[2:]]
    lab.rate_limit(sh, sh_if, SHARE_MBIT)
    src = make_dataset(tmp_path / "src", kind)
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    share = Share(sh, src, tmp_path / "hs")
    share_addr = f"{NET}.1:{PORT}"

    # one clone alone
    tx0 = tx_bytes(sh, sh_if)
    ((alone, _, _),) = run_clones([start_clone(solo_host, share.link, tmp_path / "alone",
                                               tmp_path / "h-alone", [share_addr])])
    tx1, sent1 = tx_bytes(sh, sh_if), share.bytes_sent()
    assert visible(tree(tmp_path / "alone")) == visible(tree(src))

    # five at once, each told of the share and of the four others
    addrs = [f"{NET}.{i + 3}:{PORT}" for i in range(5)]
    procs = [start_clone(h, share.link, tmp_path / f"c{i}", tmp_path / f"h{i}",
                         [share_addr] + [a for a in addrs if a != addrs[i]])
             for i, h in enumerate(five)]
    results = run_clones(procs)
    tx2, sent2 = tx_bytes(sh, sh_if), share.bytes_sent()
    together = max(secs for secs, _, _ in results)
    uploaded, payload = tx2 - tx1, sent2 - sent1
    print(f"\n{kind}, {size / MiB:.0f} MiB, share upload {SHARE_MBIT} mbit/s (tbf): one clone "
          f"alone {alone:.2f} s (share sent {(tx1 - tx0) / size:.2f}x the data); five clones "
          f"{together:.2f} s = {together / alone:.2f}x (each "
          f"{', '.join(f'{s:.1f}' for s, _, _ in results)} s); share sent {uploaded / size:.2f}x "
          f"the data on its veth, {payload / size:.2f}x by its --json bytes_sent")
    for i in range(5):
        assert visible(tree(tmp_path / f"c{i}")) == visible(tree(src))
    assert uploaded < 2 * size
    assert together < 2.5 * alone
    share.proc.terminate()


def test_a_clone_with_three_seeders_in_namespaces_receives_blocks_from_all_three(lab, tmp_path):
    nodes = bridge(lab, 4)
    (sh, sh_if), (s1, s1_if), (s2, s2_if), (c, _) = nodes
    src = make_dataset(tmp_path / "src", "many-files")
    share = Share(sh, src, tmp_path / "hs")
    share_addr = f"{NET}.1:{PORT}"
    seeders = [start_clone(h, share.link, tmp_path / f"s{i}", tmp_path / f"hs{i}", [share_addr],
                           "--sync") for i, h in enumerate((s1, s2))]
    for p in seeders:  # each has the whole version, then keeps serving it
        assert wait_for_event(p, "clone_completed", 60)
    for h, ifname in ((sh, sh_if), (s1, s1_if), (s2, s2_if)):
        lab.rate_limit(h, ifname, SHARE_MBIT)  # none of them serves it all before the others start
    ifs = [(sh, sh_if), (s1, s1_if), (s2, s2_if)]
    before = [tx_bytes(h, i) for h, i in ifs]
    run_clones([start_clone(c, share.link, tmp_path / "dst", tmp_path / "hc",
                            [share_addr, f"{NET}.2:{PORT}", f"{NET}.3:{PORT}"])])
    sent = [tx_bytes(h, i) - b for (h, i), b in zip(ifs, before)]
    print(f"\nbytes sent by the share and the two seeding clones: {sent}")
    assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    assert all(n > 2 * 256 * 1024 for n in sent), sent  # blocks, not just a handshake
    assert sum(sent) < 1.5 * DATASET
    for p in seeders:
        p.terminate()
    share.proc.terminate()
