#!/usr/bin/env python3
"""Compare dattui with real peers (Hyperdrive, magic-wormhole) and the link's limits.

    sudo .venv/bin/python bench/compare.py [--quick] [--datasets A,B,C] [--mtu 1500,9000]
        [--tools iperf3,tcp,dattui,hyperdrive,wormhole] [--dattui-rev REV ...]
        [--rate 100mbit] [--loss 0.01] [--tmp DIR] [--no-setup]

Needs root (network namespaces).  Runs bench/setup.sh first (apt-get iperf3/ethtool if
missing, npm packages into bench/hyper/node_modules, magic-wormhole into
bench/.venv-wormhole); exit status 2 with one line on stderr when it cannot run.

What it does, per MTU (a fresh pair of namespaces "send" 10.202.0.1 and "recv"
10.202.0.2 joined by one veth pair at that MTU; no traffic leaves them):
  - datasets, built once, identical for every tool (MB = MiB = 2**20 bytes):
      A  200 MiB in 48 files (8 x 20 MiB + 40 x 1 MiB)       --quick: 20 MiB
      B  10,000 files of 4 KiB in 100 folders (39 MiB)        --quick: 1,000 files
      C  one 1 GiB file                                       --quick: 100 MiB
  - tools, one transfer each, send -> recv:
      iperf3      UDP, datagrams of MTU-28 bytes, -b 0 (as fast as it can), 4 MiB socket
                  buffers, for 5 s (--iperf-seconds); the rate is what the receiver got:
                  the link's limit for one sender, with no files and no disk
      tcp         bench_clone.py's plain TCP copy (sendall of every file, one connection)
      dattui      `dattui share DIR` -> `dattui clone LINK OUT --no-lan --peer IP:PORT`,
                  each side with its own DATTUI_HOME whose config.toml turns the DHT off
      dattui@REV  the same from another git revision (--dattui-rev; a git worktree in
                  /tmp/dattui-REV run with this repo's .venv interpreter)
      hyperdrive  Hyperdrive 13 + Hyperswarm over a private HyperDHT testnet bound on
                  the link (bench/hyper/*.js): the sender mirrors the folder into a
                  drive and announces it, the receiver replicates and mirrors it out
      wormhole    magic-wormhole 0.24 with its own mailbox server and transit relay in
                  the send namespace; `wormhole send DIR` sends a folder as one zip
                  (the receiver stores the zip, then unpacks it)
  - every copy is verified (every file's size and sha256, no extra or missing file)

Timing: a transfer's time runs from starting the receiving command (for tcp and
iperf3: the sender; their receiver listens first) until the receiver exits, after
the sender is ready (dattui: version published; hyperdrive: folder imported and
announced; wormhole: code allocated).  It includes each tool's start-up and its own
finishing work (wormhole's unzip, hyperdrive's mirror out), as a user would see it.

CPU: each side runs under a small launcher that reports os.wait4's rusage
(utime + stime of the whole process tree).  recv CPU = the receiver's whole life.
send CPU = the sender's process tree during the transfer only (from /proc, sampled
when the receiver starts and when it exits), so the sender's one-off preparation
(dattui's hashing, hyperdrive's import) is not in it; the JSON also has the
sender's total (send_cpu_total_s) and preparation time.  The helpers (HyperDHT
testnet, wormhole mailbox and relay) are not counted.  s/GB = CPU seconds per GiB
moved.

--rate R: tbf on both ends of the veth (egress), so each direction is limited to R.
--loss P: iptables `-m statistic --mode random --probability P -j DROP` in the INPUT
chain of BOTH namespaces (the receiver's INPUT loses data, the sender's INPUT loses
acknowledgements: each direction loses P); INPUT, not OUTPUT, because a local drop in
OUTPUT makes UDP sendto fail with EPERM instead of losing a packet.  Every tool,
including the TCP copy and the helpers' control traffic, runs under the same loss.
With --loss, TSO/GSO/GRO are turned off on the veth (ethtool) so a drop is one
packet, not a 64 KiB TCP super-packet (--offload on|off overrides).

Output: a markdown table on stdout (paste it into README), progress on stderr,
everything in bench/out/compare.json.  Exit status 0 ok, 1 a transfer failed or a
copy differed, 2 cannot run.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench_clone as bc  # noqa: E402  (datasets, verification, TCP reference, LAUNCHER)

MiB = 1 << 20
GiB = 1 << 30
SEND_IP, RECV_IP = "10.202.0.1", "10.202.0.2"
PORTS = {"dattui": 3282, "tcp": 3999, "iperf3": 5201, "hyperdht": 49737,
         "mailbox": 4000, "relay": 4001}
ALL_TOOLS = ["iperf3", "tcp", "dattui", "hyperdrive", "wormhole"]
HYPER = HERE / "hyper"
WORMHOLE_VENV = HERE / ".venv-wormhole"
DATTUI_CONFIG = """# bench/compare.py: never reach the public DHT bootstrap nodes
[discovery]
dht = false
"""
TOOL_NOTES = {
    "iperf3": "UDP, MTU-28 B datagrams, rate received in a timed run (no files)",
    "tcp": "plain TCP copy, one connection",
    "hyperdrive": "Hyperdrive + Hyperswarm over a private HyperDHT testnet",
    "wormhole": "magic-wormhole with local mailbox and transit relay, the folder sent as one zip",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------
def make_dataset(kind: str, base: Path, quick: bool) -> dict[str, tuple[int, str]]:
    """A and B are bench_clone.py's; C is one big file written in 16 MiB chunks."""
    if kind in ("A", "B"):
        return bc.make_dataset(kind, base, quick)
    if kind != "C":
        raise ValueError(f"unknown dataset {kind!r} (A, B or C)")
    rng = random.Random(3)
    base.mkdir(parents=True)
    size = 100 * MiB if quick else GiB
    h = hashlib.sha256()
    with open(base / "one.bin", "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(16 * MiB, left))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return {"one.bin": (size, h.hexdigest())}


DATASET_NAMES = {"A": "A: 200 MiB, 48 files", "B": "B: 10,000 x 4 KiB", "C": "C: 1 GiB, 1 file"}
QUICK_NAMES = {"A": "A (quick): 20 MiB, 48 files", "B": "B (quick): 1,000 x 4 KiB",
               "C": "C (quick): 100 MiB, 1 file"}


# ---------------------------------------------------------------------------
# processes: each side under bench_clone's LAUNCHER (wait4 rusage of the tree)
# ---------------------------------------------------------------------------
def _proc_table() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree_cpu(root: int) -> float | None:
    """utime+stime (+ reaped children's) of root and all its descendants, seconds."""
    kids = _proc_table()
    total, todo, seen = 0.0, [root], set()
    tck = os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if pid == root:
                return None
            continue
        total += sum(int(x) for x in f[11:15]) / tck  # utime stime cutime cstime
        todo.extend(kids.get(pid, []))
    return total


class ProcSampler:
    """CPU of each process in some trees, sampled from /proc until stopped (the
    last reading of a process that exited stays): where a side's work ran,
    the main process or its lane processes (engine/lanes/)."""

    def __init__(self, roots: dict[str, int], every: float = 0.2):
        self.roots, self.every = roots, every
        self.cpu: dict[str, dict[int, tuple[bool, float]]] = {k: {} for k in roots}
        self.first: dict[int, float] = {}  # CPU at the first reading of a process
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        tck = os.sysconf("SC_CLK_TCK")
        while not self._stop.is_set():
            kids = _proc_table()
            for name, root in self.roots.items():
                todo = list(kids.get(root, []))  # below the launcher
                while todo:
                    pid = todo.pop()
                    try:
                        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                        lane = b"engine.lanes.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    c = sum(int(x) for x in f[11:13]) / tck
                    self.first.setdefault(pid, 0.0 if lane else c)  # a lane: all its life
                    self.cpu[name][pid] = (lane, c - self.first[pid])
                    todo.extend(kids.get(pid, []))
            self._stop.wait(self.every)

    def stop(self) -> dict:
        """Per tree: CPU s of the busiest non-lane process and of each lane."""
        self._stop.set()
        self._t.join()
        out = {}
        for name, procs in self.cpu.items():
            out[f"{name}_main_cpu_s"] = max((c for lane, c in procs.values() if not lane), default=None)
            out[f"{name}_lanes_cpu_s"] = sorted((c for lane, c in procs.values() if lane), reverse=True)
        return out


class Side:
    """One command in a namespace under the rusage launcher; stdout drained by a thread."""

    def __init__(self, host, argv: list[str], work: Path, name: str, env=None, cwd=None):
        self.name = name
        self.res_path = work / f"{name}.rusage.json"
        self.err_path = work / f"{name}.stderr"
        self._err = open(self.err_path, "w")
        self.p = host.popen([sys.executable, "-S", "-c", bc.LAUNCHER, str(self.res_path), *argv],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=self._err, text=True,
                            start_new_session=True)
        self.out = bc.LineReader(self.p.stdout)
        self.t_start = time.perf_counter()

    def events(self) -> list[dict]:
        return bc.json_lines(self.out.lines)

    def wait_event(self, pred, timeout: float) -> dict | None:
        """First JSON line satisfying pred, or None (timeout / exit)."""
        i, deadline = 0, time.monotonic() + timeout
        while True:
            line = self.out.wait_line(i, max(0.0, deadline - time.monotonic()))
            if line is None:
                return None
            i += 1
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and pred(ev):
                return ev

    def wait_stderr(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return True
            if self.p.poll() is not None:
                return text in self.stderr()
            time.sleep(0.05)
        return False

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 1500) -> str:
        return self.stderr().strip()[-n:]

    def cpu_now(self) -> float | None:
        return tree_cpu(self.p.pid) if self.p.poll() is None else None

    def wait(self, timeout: float) -> bool:
        try:
            self.p.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def kill(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGKILL)  # launcher + tool (own session)
        except ProcessLookupError:
            pass
        self.p.wait()

    def stop(self, grace: float = 15) -> None:
        """SIGINT (the launcher forwards it), then SIGKILL after grace seconds."""
        if self.p.poll() is None:
            try:
                self.p.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self.out.join()
        self._err.close()

    def rusage(self) -> dict | None:
        try:
            return json.loads(self.res_path.read_text())
        except (OSError, ValueError):
            return None


class RunError(RuntimeError):
    pass


# ---------------------------------------------------------------------------
# the tools
# ---------------------------------------------------------------------------
class Ctx:
    """What every run needs: the two hosts, a work dir, options, the helpers' addresses."""

    def __init__(self, snd, rcv, work: Path, args, mtu: int):
        self.snd, self.rcv, self.work, self.args, self.mtu = snd, rcv, work, args, mtu
        self.bootstrap: str | None = None   # HyperDHT testnet
        self.seq = 0

    def fresh(self, name: str) -> Path:
        self.seq += 1
        d = self.work / f"{self.seq:03d}-{name}"
        d.mkdir(parents=True)
        return d

    def timeout(self, nbytes: int) -> float:
        if self.args.timeout:
            return self.args.timeout
        return 120 + nbytes / MiB  # at least 1 MiB/s after two minutes of grace


def _sender_transfer_cpu(send: Side, before: float | None) -> float | None:
    after = send.cpu_now()
    if after is None:  # the sender already exited: its rusage is final
        send.p.wait(timeout=30)
        ru = send.rusage()
        after = ru["cpu_s"] if ru else None
    if before is None or after is None:
        return None
    return after - before


def run_iperf3(ctx: Ctx, data: Path, manifest, nbytes: int, tag: str) -> dict:
    """UDP iperf3 for --iperf-seconds at the MTU's datagram size: the link's limit."""
    work = ctx.fresh(f"iperf3-{tag}")
    port = str(PORTS["iperf3"])
    dgram = ctx.mtu - 28  # IPv4 + UDP headers
    secs = ctx.args.iperf_seconds
    recv = Side(ctx.rcv, ["iperf3", "-s", "-1", "-B", RECV_IP, "-p", port, "--json"], work, "recv")
    send = None
    try:
        deadline = time.monotonic() + 10
        while f":{port}" not in ctx.rcv.sh(f"ss -Hlnt 'sport = :{port}'", check=False):
            if time.monotonic() > deadline:
                raise RunError(f"iperf3 server did not listen; stderr: {recv.tail()}")
            time.sleep(0.05)
        send = Side(ctx.snd, ["iperf3", "-c", RECV_IP, "-p", port, "-u", "-b", "0", "-l", str(dgram),
                              "-w", "4M", "-t", f"{secs:g}", "--json"], work, "send")
        if not send.wait(secs + 30):
            raise RunError(f"iperf3 client did not finish within {secs + 30:.0f}s")
        recv.wait(30)
    finally:
        recv.stop()
        if send:
            send.stop()
    try:
        rep = json.loads("\n".join(send.out.lines))
    except ValueError:
        raise RunError(f"iperf3 client printed no JSON; stderr: {send.tail()}")
    if rep.get("error"):
        raise RunError(f"iperf3: {rep['error']}")
    got, sent = rep["end"]["sum_received"], rep["end"]["sum_sent"]
    sru, rru = send.rusage() or {}, recv.rusage() or {}

    def per_gb(cpu, n):
        return cpu / (n / GiB) if cpu is not None and n else None

    return {"wall_s": got["seconds"], "bytes_moved": got["bytes"], "sent_bytes": sent["bytes"],
            "mbps": got["bytes"] / MiB / got["seconds"] if got["seconds"] else None,
            "send_cpu_s": sru.get("cpu_s"), "send_cpu_total_s": sru.get("cpu_s"),
            "recv_cpu_s": rru.get("cpu_s"), "recv_rss_mb": (rru.get("maxrss_kib") or 0) / 1024,
            "send_cpu_s_per_gb": per_gb(sru.get("cpu_s"), sent["bytes"]),
            "recv_cpu_s_per_gb": per_gb(rru.get("cpu_s"), got["bytes"]),
            "datagram": dgram, "lost_percent": got.get("lost_percent"),
            "check": f"n/a (UDP, {secs:g} s: {got.get('lost_percent', 0):.2g}% of datagrams lost)",
            "problems": []}


def run_tcp(ctx: Ctx, data: Path, manifest, nbytes: int, tag: str) -> dict:
    work = ctx.fresh(f"tcp-{tag}")
    out = work / "out"
    me = str(HERE / "bench_clone.py")
    port = str(PORTS["tcp"])
    recv = Side(ctx.rcv, [sys.executable, me, "_tcp-recv", RECV_IP, port, str(out)], work, "recv")
    send = None
    try:
        if recv.out.wait_line(0, 30) != "ready":
            raise RunError(f"tcp receiver did not start; stderr: {recv.tail()}")
        t0 = time.perf_counter()
        send = Side(ctx.snd, [sys.executable, me, "_tcp-send", RECV_IP, port, str(data)], work, "send")
        t = ctx.timeout(nbytes)
        if not recv.wait(t):
            raise RunError(f"tcp copy timed out after {t:.0f}s")
        wall = time.perf_counter() - t0
        send.wait(30)
    finally:
        recv.stop()
        if send:
            send.stop()
    sru, rru = send.rusage() or {}, recv.rusage() or {}
    if rru.get("rc") or sru.get("rc"):
        raise RunError(f"tcp copy failed (recv rc={rru.get('rc')}, send rc={sru.get('rc')}); "
                       f"stderr: {recv.tail(500)} {send.tail(500)}")
    return {"wall_s": wall, "send_cpu_s": sru.get("cpu_s"), "send_cpu_total_s": sru.get("cpu_s"),
            "recv_cpu_s": rru.get("cpu_s"), "recv_rss_mb": (rru.get("maxrss_kib") or 0) / 1024,
            "problems": bc.verify_copy(manifest, out), "_out": out}


class DattuiVariant:
    """How to run one dattui: the work tree (default) or a git revision's worktree."""

    def __init__(self, name: str, tree: Path, rev: str | None, describe: str,
                 extra: tuple[str, ...] = ()):
        self.name, self.tree, self.rev, self.describe = name, tree, rev, describe
        self.extra = list(extra)  # flags for share and clone (e.g. --lanes 2)
        py = ROOT / ".venv" / "bin" / "python"
        self.python = str(py if py.exists() else Path(sys.executable))
        self.no_dht_flag = False

    def cmd(self, *args: str) -> list[str]:
        extra = ["--no-dht"] if self.no_dht_flag else []
        if args and args[0] in ("share", "clone"):
            extra += self.extra
        return [self.python, "-m", "tui.main", *args, *extra]

    def env(self, home: Path) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        (home / "config.toml").write_text(DATTUI_CONFIG)
        e = dict(os.environ)
        e["DATTUI_HOME"] = str(home)
        e["PYTHONPATH"] = str(self.tree)  # first on sys.path: wins over the editable install
        e.pop("PYTHONUNBUFFERED", None)
        return e

    def preflight(self, tmp: Path) -> str | None:
        """None when this variant imports from its own tree and runs, else why not."""
        env = self.env(tmp / f"preflight-{self.name.replace('@', '-')}")
        # bytecode, as an installed wheel has it (pip compiles on install): an editable
        # tree under PYTHONDONTWRITEBYTECODE would compile every module at every start
        # (~0.2 s per process, measured in the transfer time of the other tools too)
        subprocess.run([self.python, "-m", "compileall", "-q", "engine", "tui"], cwd=self.tree,
                       env=env, capture_output=True, timeout=300)
        cp = subprocess.run([self.python, "-c", "import tui.main, engine; print(engine.__file__)"],
                            cwd=self.tree, env=env, capture_output=True, text=True, timeout=120)
        if cp.returncode != 0:
            return f"{self.name}: cannot import tui.main: {cp.stderr.strip()[-500:]}"
        where = Path(cp.stdout.strip()).resolve()
        if self.tree.resolve() not in where.parents:
            return f"{self.name}: imports engine from {where}, not from {self.tree}"
        cp = subprocess.run([self.python, "-m", "tui.main", "share", "--help"], cwd=self.tree,
                            env=env, capture_output=True, text=True, timeout=120)
        if cp.returncode != 0:
            return f"{self.name}: `share --help` failed: {(cp.stderr or cp.stdout).strip()[-500:]}"
        self.no_dht_flag = "--no-dht" in cp.stdout
        return None


def run_dattui(ctx: Ctx, data: Path, manifest, nbytes: int, tag: str, v: DattuiVariant) -> dict:
    work = ctx.fresh(f"{v.name.replace('@', '-')}-{tag}")
    out = work / "out"
    t = ctx.timeout(nbytes)
    t_prep = time.perf_counter()
    share = Side(ctx.snd, v.cmd("share", str(data), "--json", "--no-lan", "--port", str(PORTS["dattui"])),
                 work, "send", env=v.env(work / "home-send"), cwd=v.tree)
    clone = None
    try:
        link = share.wait_event(lambda e: e.get("event") == "link", t)
        if not link:
            raise RunError(f"share printed no link; stderr: {share.tail()}")
        pub = share.wait_event(lambda e: e.get("event") in ("version_published", "error"), t)
        if not pub or pub.get("event") != "version_published":
            raise RunError(f"share did not publish a version ({pub}); stderr: {share.tail()}")
        prep = time.perf_counter() - t_prep
        before = share.cpu_now()
        clone = Side(ctx.rcv, v.cmd("clone", link["link"], str(out), "--json", "--no-lan",
                                    "--peer", f"{SEND_IP}:{link.get('port', PORTS['dattui'])}"),
                     work, "recv", env=v.env(work / "home-recv"), cwd=v.tree)
        sampler = ProcSampler({"send": share.p.pid, "recv": clone.p.pid}) if v.extra else None
        if not clone.wait(t):
            raise RunError(f"clone timed out after {t:.0f}s; stderr: {clone.tail()}")
        send_cpu = _sender_transfer_cpu(share, before)
        split = sampler.stop() if sampler else {}
    finally:
        share.stop()
        if clone:
            clone.stop()
    ru, sru = clone.rusage() or {}, share.rusage() or {}
    if ru.get("rc") != 0:
        raise RunError(f"clone exited {ru.get('rc')}; stderr: {clone.tail()}")
    events = clone.events()
    done = events[-1] if events else {}
    problems = bc.verify_copy(manifest, out)
    if done.get("event") != "done":
        problems.append(f"clone's last JSON line is not a done event: {str(done)[:200]}")
    return {"wall_s": ru["wall_s"], "send_cpu_s": send_cpu, "send_cpu_total_s": sru.get("cpu_s"),
            "send_prep_s": prep, "recv_cpu_s": ru.get("cpu_s"),
            "recv_rss_mb": (ru.get("maxrss_kib") or 0) / 1024, "done": done,
            "problems": problems, "_out": out, **split}


def run_hyperdrive(ctx: Ctx, data: Path, manifest, nbytes: int, tag: str) -> dict:
    if not ctx.bootstrap:
        raise RunError("HyperDHT testnet is not running")
    work = ctx.fresh(f"hyperdrive-{tag}")
    out = work / "out"
    t = ctx.timeout(nbytes)
    t_prep = time.perf_counter()
    send = Side(ctx.snd, ["node", str(HYPER / "send.js"), str(data), str(work / "store-send"),
                          ctx.bootstrap], work, "send", cwd=HYPER)
    recv = None
    try:
        ready = send.wait_event(lambda e: e.get("event") == "ready", t)
        if not ready:
            raise RunError(f"hyperdrive sender not ready; stderr: {send.tail()}")
        prep = time.perf_counter() - t_prep
        before = send.cpu_now()
        recv = Side(ctx.rcv, ["node", str(HYPER / "recv.js"), ready["key"], str(out),
                              str(work / "store-recv"), ctx.bootstrap], work, "recv", cwd=HYPER)
        if not recv.wait(t):
            raise RunError(f"hyperdrive receiver timed out after {t:.0f}s; stderr: {recv.tail()}")
        send_cpu = _sender_transfer_cpu(send, before)
    finally:
        send.stop()
        if recv:
            recv.stop()
    ru, sru = recv.rusage() or {}, send.rusage() or {}
    if ru.get("rc") != 0:
        raise RunError(f"hyperdrive receiver exited {ru.get('rc')}; stderr: {recv.tail()}")
    done = (recv.events() or [{}])[-1]
    return {"wall_s": ru["wall_s"], "send_cpu_s": send_cpu, "send_cpu_total_s": sru.get("cpu_s"),
            "send_prep_s": prep, "import_s": ready.get("import_s"), "recv_cpu_s": ru.get("cpu_s"),
            "recv_rss_mb": (ru.get("maxrss_kib") or 0) / 1024, "done": done,
            "connect_s": done.get("connect_s"),
            "problems": bc.verify_copy(manifest, out), "_out": out}


def wormhole_args() -> list[str]:
    return [str(WORMHOLE_VENV / "bin" / "wormhole"),
            "--relay-url", f"ws://{SEND_IP}:{PORTS['mailbox']}/v1",
            "--transit-helper", f"tcp:{SEND_IP}:{PORTS['relay']}"]


def run_wormhole(ctx: Ctx, data: Path, manifest, nbytes: int, tag: str) -> dict:
    work = ctx.fresh(f"wormhole-{tag}")
    out = work / "out"
    t = ctx.timeout(nbytes)
    code = f"{ctx.seq}-bench-{tag.lower()}"
    env = dict(os.environ, TMPDIR=str(work))  # the receiver spools the zip there
    t_prep = time.perf_counter()
    send = Side(ctx.snd, [*wormhole_args(), "send", "--hide-progress", "--no-qr", "--code", code,
                          str(data)], work, "send", env=env)
    recv = None
    try:
        if not send.wait_stderr("Wormhole code is", t):
            raise RunError(f"wormhole send did not get its code; stderr: {send.tail()}")
        prep = time.perf_counter() - t_prep
        before = send.cpu_now()
        recv = Side(ctx.rcv, [*wormhole_args(), "receive", "--hide-progress", "--accept-file",
                              "-o", str(out), code], work, "recv", env=env)
        if not recv.wait(t):
            raise RunError(f"wormhole receive timed out after {t:.0f}s; stderr: {recv.tail()}")
        send_cpu = _sender_transfer_cpu(send, before)
        send.wait(30)
    finally:
        send.stop()
        if recv:
            recv.stop()
    ru, sru = recv.rusage() or {}, send.rusage() or {}
    if ru.get("rc") != 0:
        raise RunError(f"wormhole receive exited {ru.get('rc')}; stderr: {recv.tail()}")
    m = re.search(r"Receiving \((?:->|<-)(\S+?)\)", recv.stderr())  # we dialled / were dialled
    path = ("relay" if "relay" in m.group(1) else "direct") + f" ({m.group(1)})" if m else "?"
    return {"wall_s": ru["wall_s"], "send_cpu_s": send_cpu, "send_cpu_total_s": sru.get("cpu_s"),
            "send_prep_s": prep, "recv_cpu_s": ru.get("cpu_s"),
            "recv_rss_mb": (ru.get("maxrss_kib") or 0) / 1024, "transit": path,
            "problems": bc.verify_copy(manifest, out), "_out": out}


# ---------------------------------------------------------------------------
# helpers per lab: HyperDHT testnet, wormhole mailbox + transit relay
# ---------------------------------------------------------------------------
def start_helpers(ctx: Ctx, tools: list[str]) -> list[Side]:
    helpers = []
    if "hyperdrive" in tools:
        tn = Side(ctx.snd, ["node", str(HYPER / "testnet.js"), SEND_IP, str(PORTS["hyperdht"]), "3"],
                  ctx.work, "hyperdht-testnet", cwd=HYPER)
        helpers.append(tn)
        ev = tn.wait_event(lambda e: e.get("event") == "ready", 60)
        if ev:
            ctx.bootstrap = ev["bootstrap"]
        else:
            log(f"HyperDHT testnet did not start: {tn.tail()}")
    if "wormhole" in tools:
        twist = str(WORMHOLE_VENV / "bin" / "twist")
        helpers.append(Side(ctx.snd, [twist, "wormhole-mailbox",
                                      f"--port=tcp:{PORTS['mailbox']}:interface={SEND_IP}",
                                      f"--channel-db={ctx.work / 'mailbox.sqlite'}"],
                            ctx.work, "wormhole-mailbox", cwd=ctx.work))
        helpers.append(Side(ctx.snd, [twist, "transitrelay",
                                      f"--port=tcp:{PORTS['relay']}:interface={SEND_IP}"],
                            ctx.work, "wormhole-relay", cwd=ctx.work))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ss = ctx.snd.sh("ss -Hltn", check=False)
            if all(f"{SEND_IP}:{PORTS[k]}" in ss for k in ("mailbox", "relay")):
                break
            time.sleep(0.1)
        else:
            log("wormhole mailbox/relay did not start listening: "
                + " | ".join(h.tail(300) for h in helpers[-2:]))
    return helpers


def impair(lab, snd, rcv, link, args) -> list[str]:
    notes = []
    if args.rate:
        mbit = parse_rate(args.rate)
        lab.rate_limit(snd, link.ifname_a, mbit)
        lab.rate_limit(rcv, link.ifname_b, mbit)
        notes.append(f"tbf {args.rate} each direction")
    offload = args.offload if args.offload != "auto" else ("off" if args.loss else "on")
    if offload == "off":
        for host, ifn in ((snd, link.ifname_a), (rcv, link.ifname_b)):
            host.run(["ethtool", "-K", ifn, "tso", "off", "gso", "off", "gro", "off"])
        notes.append("TSO/GSO/GRO off")
    if args.loss:
        lab.random_loss(rcv, args.loss, chains=("INPUT",))
        if args.loss_where == "both":
            lab.random_loss(snd, args.loss, chains=("INPUT",))
            notes.append(f"random loss {args.loss:g} on each direction (iptables INPUT of both namespaces)")
        else:
            notes.append(f"random loss {args.loss:g} towards the receiver (its iptables INPUT)")
    return notes


def parse_rate(s: str) -> float:
    """'100mbit' -> 100.0 (Mbit/s); also kbit, gbit, plain numbers in Mbit/s."""
    s = s.strip().lower()
    for suffix, mult in (("gbit", 1000.0), ("mbit", 1.0), ("kbit", 0.001)):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * mult
    return float(s)


# ---------------------------------------------------------------------------
# setup, git revisions
# ---------------------------------------------------------------------------
def run_setup() -> str | None:
    cp = subprocess.run(["bash", str(HERE / "setup.sh")], stdout=sys.stderr, stderr=subprocess.PIPE,
                        text=True)
    lines = cp.stderr.rstrip("\n").splitlines()
    if cp.returncode == 0:
        sys.stderr.write(cp.stderr)
        return None
    # its last line says why: the caller prints that one line, the rest is context
    why = lines.pop() if lines and lines[-1].startswith("bench/setup.sh:") else \
        f"bench/setup.sh failed ({cp.returncode})"
    sys.stderr.write("".join(l + "\n" for l in lines))
    return why


def missing_tools(tools: list[str]) -> str | None:
    need = {"iperf3": ["iperf3"], "hyperdrive": ["node"], "tcp": [], "dattui": [], "wormhole": []}
    for t in tools:
        for b in need.get(t, []):
            if not shutil.which(b):
                return f"{b} not found (run bench/setup.sh)"
    if "hyperdrive" in tools and not (HYPER / "node_modules" / "hyperdrive").is_dir():
        return "bench/hyper/node_modules missing (run bench/setup.sh)"
    if "wormhole" in tools and not (WORMHOLE_VENV / "bin" / "wormhole").exists():
        return "bench/.venv-wormhole missing (run bench/setup.sh)"
    for b in ("ip", "tc", "iptables", "ss"):
        if not shutil.which(b):
            return f"{b} not found (apt-get install iproute2 iptables)"
    return None


def tool_versions(tools: list[str]) -> dict[str, str]:
    """Versions of what ran, for the record (best effort)."""
    v: dict[str, str] = {}

    def out(argv: list[str]) -> str:
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (cp.stdout or cp.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    if "iperf3" in tools:
        v["iperf3"] = out(["iperf3", "--version"]).split(" (")[0].replace("iperf ", "")
    if "dattui" in tools:
        py = ROOT / ".venv" / "bin" / "python"
        v["aioquic"] = out([str(py if py.exists() else sys.executable), "-c",
                            "import importlib.metadata as m; print(m.version('aioquic'))"])
    if "hyperdrive" in tools:
        for pkg in ("hyperdrive", "hyperswarm", "hyperdht", "corestore", "hypercore"):
            try:
                v[pkg] = json.loads((HYPER / "node_modules" / pkg / "package.json").read_text())["version"]
            except (OSError, ValueError, KeyError):
                v[pkg] = "?"
        v["node"] = out(["node", "--version"])
    if "wormhole" in tools:
        v["magic-wormhole"] = out([str(WORMHOLE_VENV / "bin" / "wormhole"), "--version"]).split()[-1]
    return v


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def worktree_for(rev: str) -> tuple[Path, str]:
    """A detached git worktree of rev in /tmp/dattui-SHORT (reused if there)."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    short = sha[:7]
    path = Path(tempfile.gettempdir()) / f"dattui-{short}"
    if path.exists():
        try:
            have = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, check=True).stdout.strip()
        except subprocess.CalledProcessError:
            have = ""
        if have != sha:
            raise RunError(f"{path} exists but is not a worktree at {short}: move it away")
    else:
        git("worktree", "add", "--detach", str(path), sha)
    return path, short


def work_tree_label() -> str:
    head = git("rev-parse", "--short=7", "HEAD")
    dirty = git("status", "--porcelain", "--", "engine", "tui", "config")
    return head + ("+uncommitted" if dirty else "")


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def fnum(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def fdur(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def lanes_split(row: dict, moved: int) -> str:
    """Where each side's CPU went, for runs with lanes: main process / each lane, s/GiB."""
    if "recv_lanes_cpu_s" not in row:
        return ""
    def per(c):
        return fnum(c / (moved / GiB) if c is not None else None, ".2f")
    parts = []
    for side in ("send", "recv"):
        lanes = row.get(f"{side}_lanes_cpu_s") or []
        parts.append(f"{side} main {per(row.get(f'{side}_main_cpu_s'))}"
                     + (" + lanes " + "/".join(per(c) for c in lanes) if lanes else " (no lanes)"))
    return "; per process s/GB: " + ", ".join(parts)


def markdown(results: list[dict], meta: dict) -> str:
    lines = []
    cond = ", ".join(meta["conditions"]) or "no rate limit, no loss"
    lines.append(f"Transfer benchmark, {meta['date']} ({meta['dattui']})"
                 f"{' (quick data)' if meta['quick'] else ''}: veth between two network "
                 f"namespaces, {cond}. MB = MiB.")
    lines.append("")
    lines.append("| MTU | data | tool | MB/s | files/s | dattui ÷ tool | send CPU s/GB | "
                 "recv CPU s/GB | copy verified |")
    lines.append("|---:|---|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        if r.get("error"):
            check = "FAILED: " + r["error"][:160].replace("|", "/").replace("\n", " ")
        elif r.get("check"):
            check = r["check"]
        elif r["problems"]:
            check = f"WRONG: {len(r['problems'])} problem(s), e.g. {r['problems'][0][:80]}"
        else:
            check = f"ok: {r['files']} files, sizes + sha256"
            if r.get("transit"):
                check += f"; transit {r['transit'].split()[0]}"
        ratio = r.get("ratio")
        ratio_s = "-" if ratio is None else format(ratio, ".2f" if ratio >= 0.1 else ".3f")
        files_s = r.get("files_per_s") if r["tool"] != "iperf3" and r["files"] > 1 else None
        lines.append(f"| {r['mtu']} | {r['dataset']} | {r['label']} | {fnum(r.get('mbps'))} | "
                     f"{fnum(files_s, ',.0f')} | {ratio_s} | "
                     f"{fnum(r.get('send_cpu_s_per_gb'), '.2f')} | "
                     f"{fnum(r.get('recv_cpu_s_per_gb'), '.2f')} | {check} |")
    lines.append("")
    lines.append("Columns: MB/s = data bytes / time from starting the receiving command to its exit "
                 "(iperf3: the rate its receiver got in a timed UDP run, datagrams of MTU-28 bytes); files/s the "
                 "same time per file; dattui ÷ tool = dattui's MB/s over that tool's for the same "
                 "MTU and data; CPU s/GB = user+system CPU seconds per GiB moved, recv = the "
                 "receiving process tree's whole life (wait4 rusage), send = the sending process "
                 "tree during the transfer (its preparation, e.g. hashing or import, excluded; "
                 "total in compare.json); helpers (HyperDHT testnet, wormhole mailbox/relay) "
                 "not counted.")
    for r in results:
        if not r.get("error") and "recv_lanes_cpu_s" in r:
            lines.append(f"- {r['label']}, MTU {r['mtu']}, {r['dataset']}: CPU "
                         + lanes_split(r, r.get("bytes_moved", r["bytes"])).split(": ", 1)[1])
    notes = [f"{k}: {v}" for k, v in TOOL_NOTES.items() if any(r["tool"] == k for r in results)]
    if notes:
        lines.append("Tools: " + "; ".join(notes) + ".")
    if meta.get("versions"):
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
                     + f". Whole run: {fdur(meta['run_seconds'])} on {meta['cpus']} CPUs.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
def split_list(values: list[str] | str | None) -> list[str]:
    if not values:
        return []
    if isinstance(values, str):
        values = [values]
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="about 1/10 of the data (development)")
    ap.add_argument("--datasets", default="A,B,C", help="comma list of A,B,C (default all)")
    ap.add_argument("--mtu", default="1500,9000", help="comma list of MTUs (default 1500,9000)")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS),
                    help=f"comma list of {','.join(ALL_TOOLS)} (default all)")
    ap.add_argument("--dattui-rev", action="append", default=[], metavar="REV",
                    help="also run dattui from this git revision (repeatable or comma list)")
    ap.add_argument("--dattui-lanes", action="append", default=[], metavar="N",
                    help="also run the work tree with --lanes N on both sides (repeatable; "
                         "lane processes: engine/lanes/)")
    ap.add_argument("--rate", help="tbf rate limit on the link, each direction, e.g. 100mbit")
    ap.add_argument("--loss", type=float, default=0.0, help="random loss probability, e.g. 0.01")
    ap.add_argument("--loss-where", choices=("both", "recv"), default="both",
                    help="both: INPUT of both namespaces (each direction); recv: receiver's only")
    ap.add_argument("--offload", choices=("auto", "on", "off"), default="auto",
                    help="veth TSO/GSO/GRO (auto: off with --loss, else the kernel's default)")
    ap.add_argument("--iperf-seconds", type=float, default=0,
                    help="length of each iperf3 run (default 5, --quick 2)")
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds per transfer (default 120 + 1 s per MiB)")
    ap.add_argument("--tmp", help="parent dir for data and copies (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, copies removed)")
    ap.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh")
    ap.add_argument("--json-out", default=str(HERE / "out" / "compare.json"))
    args = ap.parse_args(argv)

    def cannot(msg: str) -> int:
        print(f"compare: {msg}", file=sys.stderr)
        return 2

    if os.geteuid() != 0:
        return cannot("needs root (network namespaces, apt-get)")
    os.environ["PATH"] += ":/usr/sbin:/sbin"
    kinds = [k.upper() for k in split_list(args.datasets)]
    tools = split_list(args.tools)
    try:
        mtus = [int(m) for m in split_list(args.mtu)]
    except ValueError:
        return cannot(f"bad --mtu {args.mtu!r}")
    if bad := [k for k in kinds if k not in "ABC" or len(k) != 1]:
        return cannot(f"unknown dataset(s) {bad} (A, B, C)")
    if bad := [t for t in tools if t not in ALL_TOOLS]:
        return cannot(f"unknown tool(s) {bad} ({', '.join(ALL_TOOLS)})")
    args.iperf_seconds = args.iperf_seconds or (2 if args.quick else 5)
    if not 0 <= args.loss < 1:
        return cannot("--loss must be a probability in [0, 1)")
    if args.rate:
        try:
            parse_rate(args.rate)
        except ValueError:
            return cannot(f"bad --rate {args.rate!r} (e.g. 100mbit)")
    if not args.no_setup and (msg := run_setup()):
        return cannot(msg)
    if msg := missing_tools(tools):
        return cannot(msg)

    variants: list[DattuiVariant] = []
    tmp = Path(tempfile.mkdtemp(prefix="dattui-compare-", dir=args.tmp))
    try:
        if "dattui" in tools:
            variants.append(DattuiVariant("dattui", ROOT, None, f"work tree @ {work_tree_label()}"))
            for n in split_list(args.dattui_lanes):
                variants.append(DattuiVariant(f"dattui+lanes{n}", ROOT, None,
                                              f"work tree, --lanes {n} on both sides", ("--lanes", n)))
            for rev in split_list(args.dattui_rev):
                try:
                    path, short = worktree_for(rev)
                except (RunError, subprocess.CalledProcessError) as e:
                    return cannot(f"--dattui-rev {rev}: {getattr(e, 'stderr', None) or e}")
                variants.append(DattuiVariant(f"dattui@{short}", path, short, f"git {short}"))
            for v in variants:
                if msg := v.preflight(tmp):
                    return cannot(msg)
        return measure(args, kinds, tools, mtus, variants, tmp)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def measure(args, kinds, tools, mtus, variants, tmp: Path) -> int:
    sys.path.insert(0, str(ROOT / "tests"))
    from netlab import Lab  # noqa: E402

    t_run = time.perf_counter()
    datasets = {}
    for kind in kinds:
        t = time.perf_counter()
        manifest = make_dataset(kind, tmp / f"data-{kind}", args.quick)
        total = sum(s for s, _ in manifest.values())
        datasets[kind] = (tmp / f"data-{kind}", manifest, total)
        log(f"[{kind}] {len(manifest)} files, {total / MiB:.1f} MiB (built in {time.perf_counter() - t:.1f}s)")

    runners = []  # (tool, label, fn)
    for tool in tools:
        if tool == "dattui":
            for v in variants:
                runners.append(("dattui", v.name, lambda c, d, m, n, tag, v=v: run_dattui(c, d, m, n, tag, v)))
        else:
            runners.append((tool, {"wormhole": "magic-wormhole (zip)"}.get(tool, tool),
                            globals()[f"run_{tool}"]))

    results: list[dict] = []
    conditions: list[str] = []
    for mtu in mtus:
        with Lab() as lab:
            snd, rcv = lab.add_host("send"), lab.add_host("recv")
            link = lab.link(snd, SEND_IP, rcv, RECV_IP, mtu=mtu)
            conditions = impair(lab, snd, rcv, link, args)
            ctx = Ctx(snd, rcv, tmp / f"mtu{mtu}", args, mtu)
            ctx.work.mkdir()
            helpers = start_helpers(ctx, tools)
            try:
                for kind in kinds:
                    data, manifest, total = datasets[kind]
                    names = QUICK_NAMES if args.quick else DATASET_NAMES
                    for tool, label, fn in runners:
                        row = {"mtu": mtu, "dataset": names[kind], "kind": kind, "tool": tool,
                               "label": label, "files": len(manifest), "bytes": total,
                               "problems": []}
                        t0 = time.perf_counter()
                        before = set(os.listdir(data))
                        try:
                            row.update(fn(ctx, data, manifest, total, kind))
                        except (RunError, OSError, ValueError, KeyError,
                                subprocess.SubprocessError) as e:
                            row["error"] = f"{type(e).__name__}: {e}"
                        # a share leaves state in the folder (dattui: .dat/): every run
                        # starts from the pristine dataset, as a first share
                        for extra in set(os.listdir(data)) - before:
                            row.setdefault("left_in_source", []).append(extra)
                            p = data / extra
                            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                        # drop the copies and stores, keep the logs (--keep)
                        out = row.pop("_out", None)
                        if out:
                            for p in out.parent.iterdir():
                                if p.is_dir():
                                    shutil.rmtree(p, ignore_errors=True)
                        row["elapsed_s"] = time.perf_counter() - t0
                        moved = row.get("bytes_moved", total)
                        if row.get("wall_s") and not row.get("error"):
                            row.setdefault("mbps", total / MiB / row["wall_s"])
                            row["files_per_s"] = len(manifest) / row["wall_s"]
                            for side in ("send", "recv"):
                                cpu = row.get(f"{side}_cpu_s")
                                row.setdefault(f"{side}_cpu_s_per_gb",
                                               cpu / (moved / GiB) if cpu is not None else None)
                        results.append(row)
                        if row.get("error"):
                            log(f"[MTU {mtu} {kind}] {label}: FAILED {row['error'][:600]}")
                        else:
                            log(f"[MTU {mtu} {kind}] {label}: {row['wall_s']:.2f}s "
                                f"{row['mbps']:.1f} MB/s, CPU s/GB send "
                                f"{fnum(row.get('send_cpu_s_per_gb'), '.2f')} recv "
                                f"{fnum(row.get('recv_cpu_s_per_gb'), '.2f')}"
                                + (f"; PROBLEMS {row['problems'][:3]}" if row["problems"] else "")
                                + lanes_split(row, moved))
            finally:
                for h in helpers:
                    h.stop(grace=5)

    # ratios: dattui (the work tree) over every tool, same MTU and dataset
    for r in results:
        ref = next((x for x in results if x["label"] == "dattui" and x["mtu"] == r["mtu"]
                    and x["kind"] == r["kind"] and x.get("mbps") and not x.get("error")), None)
        if ref and r.get("mbps") and not r.get("error"):
            r["ratio"] = ref["mbps"] / r["mbps"]

    wall = time.perf_counter() - t_run
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "dattui": "; ".join(f"{v.name}: {v.describe}" for v in variants) or "not run",
            "quick": args.quick, "conditions": conditions, "mtus": mtus, "tools": tools,
            "datasets": kinds, "rate": args.rate, "loss": args.loss, "loss_where": args.loss_where,
            "run_seconds": wall, "host": os.uname().nodename, "cpus": os.cpu_count(),
            "versions": tool_versions(tools)}
    table = markdown(results, meta)
    print(table)
    log(f"whole run: {wall:.0f}s")
    try:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"meta": meta, "results": results, "markdown": table},
                                                  indent=1, default=str))
        log(f"results: {args.json_out}")
    except OSError as e:
        log(f"could not write {args.json_out}: {e}")
    bad = [r for r in results if r.get("error") or r["problems"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
