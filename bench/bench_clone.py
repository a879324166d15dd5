#!/usr/bin/env python3
"""Clone benchmark: dattui share/clone between two network namespaces vs a plain TCP copy.

    sudo python bench/bench_clone.py [--quick] [--repeat N] [--mtu 1500] [--tcp-only] [--strict]

Needs root (network namespaces) and iproute2.  It
  1. builds two datasets in a temp dir
       A: 8 x 20 MiB + 40 x 1 MiB random files (200 MiB)
       B: 10,000 x 4 KiB files in 100 subfolders
     (--quick: 1/10 of the data: A 8 x 2 MiB + 40 x 0.1 MiB, B 1,000 files)
  2. creates namespaces "share" (10.201.0.1) and "clone" (10.201.0.2) joined by one
     veth pair at --mtu (tests/netlab.py); no traffic leaves those namespaces
  3. per dataset: `dattui share DATA --json --no-lan --port 3282` in "share" (own
     DATTUI_HOME), waits for its link line, runs `dattui clone LINK OUT --json --no-lan
     --peer 10.201.0.1:3282` in "clone" (own fresh DATTUI_HOME), times the clone
     process (wall clock, fork to exit), checks the copy (sizes + sha256 of every
     file), peak RSS of the clone (ru_maxrss from os.wait4 in a small launcher
     process: see LAUNCHER) and of the share (VmHWM of the python process - the
     Popen pid, since `ip netns exec` execs - read just before SIGINT)
  4. the reference: a tiny TCP sender/receiver (this file, hidden modes _tcp-send /
     _tcp-recv) streams every file with sendall between the same namespaces
  5. prints a table with the targets and writes bench/out/bench_clone.json

MB = MiB (2**20 bytes).  Exit status: 0 ok, 1 a copy was wrong or a run failed,
2 cannot run (not root, no dattui CLI), 3 with --strict when a target was missed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20

SHARE_IP, CLONE_IP = "10.201.0.1", "10.201.0.2"
TCP_PORT = 3999

TARGET_MBPS = 30.0        # dataset A
TARGET_FILES_PER_S = 1000  # dataset B
TARGET_RSS_MB = 150.0      # each side, every dataset


# ---------------------------------------------------------------------------
# TCP reference (runs inside the namespaces as `python bench_clone.py _tcp-...`)
# ---------------------------------------------------------------------------
HDR = struct.Struct("!HQ")  # path length, file size; then path bytes, then data


def tcp_send(host: str, port: int, src: str) -> None:
    files = sorted(p for p in Path(src).rglob("*") if p.is_file())
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)
        for p in files:
            rel = p.relative_to(src).as_posix().encode()
            size = p.stat().st_size
            s.sendall(HDR.pack(len(rel), size) + rel)
            with open(p, "rb") as f:
                while chunk := f.read(MiB):
                    s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # wait for the receiver to finish writing and close


def tcp_recv(host: str, port: int, dst: str) -> None:
    srv = socket.create_server((host, port))
    print("ready", flush=True)
    conn, _ = srv.accept()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
    r = conn.makefile("rb", buffering=MiB)
    made: set[Path] = set()
    nfiles = nbytes = 0
    while True:
        hdr = r.read(HDR.size)
        if not hdr:
            break
        plen, size = HDR.unpack(hdr)
        out = Path(dst, r.read(plen).decode())
        if out.parent not in made:
            out.parent.mkdir(parents=True, exist_ok=True)
            made.add(out.parent)
        with open(out, "wb") as f:
            left = size
            while left:
                chunk = r.read(min(left, MiB))
                if not chunk:
                    raise SystemExit("tcp-recv: connection closed mid-file")
                f.write(chunk)
                left -= len(chunk)
        nfiles += 1
        nbytes += size
    conn.close()
    print(json.dumps({"files": nfiles, "bytes": nbytes}), flush=True)


# ---------------------------------------------------------------------------
# datasets and verification
# ---------------------------------------------------------------------------
def make_dataset(kind: str, base: Path, quick: bool, seed: int = 1) -> dict[str, tuple[int, str]]:
    """Write the dataset; return {relpath: (size, sha256)}."""
    rng = random.Random(seed)
    base.mkdir(parents=True)
    manifest: dict[str, tuple[int, str]] = {}

    def put(rel: str, data: bytes) -> None:
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        manifest[rel] = (len(data), hashlib.sha256(data).hexdigest())

    if kind == "A":
        big, small = (2 * MiB, MiB // 10) if quick else (20 * MiB, MiB)
        for i in range(8):
            put(f"big/big{i:02d}.bin", rng.randbytes(big))
        for i in range(40):
            put(f"small/file{i:03d}.bin", rng.randbytes(small))
    elif kind == "B":
        n = 1000 if quick else 10_000
        for i in range(n):
            put(f"d{i % 100:03d}/f{i:05d}.dat", rng.randbytes(4096))
    else:
        raise ValueError(kind)
    return manifest


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def verify_copy(manifest: dict[str, tuple[int, str]], out: Path) -> list[str]:
    """Problems found comparing ``out`` to the manifest (empty list = identical).

    Top-level entries whose name starts with ".dat" (metadata a clone may keep,
    e.g. .dat/ or .dattui/) are not counted as extra files.
    """
    problems = []
    if not out.is_dir():
        return [f"output dir {out} missing"]
    seen = set()
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(out).as_posix()
        if rel.split("/")[0].startswith(".dat"):
            continue
        seen.add(rel)
        if rel not in manifest:
            problems.append(f"extra file {rel}")
            continue
        size, digest = manifest[rel]
        if p.stat().st_size != size:
            problems.append(f"{rel}: size {p.stat().st_size} != {size}")
        elif sha256_file(p) != digest:
            problems.append(f"{rel}: sha256 differs")
    for rel in manifest.keys() - seen:
        problems.append(f"missing file {rel}")
    return sorted(problems)


# ---------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------
class LineReader:
    """Drain a text pipe in a thread so the child never blocks on a full pipe."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._t.start()

    def _run(self, stream):
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, index: int, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.lines) <= index and not self._eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.lines[index] if len(self.lines) > index else None

    def join(self, timeout: float = 5) -> None:
        self._t.join(timeout)


def json_lines(lines: list[str]) -> list[dict]:
    out = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def proc_status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


# Runs the clone and reports its rusage.  Why not os.wait4 on the Popen pid directly:
# Linux folds the peak RSS of the address space an exec replaces into ru_maxrss, and
# Popen's vfork child *is* this (big) bench process until `ip` execs - so a direct
# wait4 reports the bench's own peak (e.g. 213 MB for `python -c pass` spawned from a
# 200 MB parent).  This launcher (python -S, ~10 MB) forks + execs the clone and
# wait4s it, so ru_maxrss is the clone's own peak (floor ~10 MB).  Wall time is
# measured here from fork to exit.  argv: RESULT_JSON_PATH CMD...
LAUNCHER = r"""
import json, os, signal, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda n, f: os.kill(pid, n))
while True:
    try:
        _, status, ru = os.wait4(pid, 0)
        break
    except InterruptedError:
        continue
wall = time.perf_counter() - t0
rc = os.waitstatus_to_exitcode(status)
with open(out, "w") as f:
    json.dump({"rc": rc, "wall_s": wall, "maxrss_kib": ru.ru_maxrss,
               "cpu_s": ru.ru_utime + ru.ru_stime}, f)
sys.exit(rc if rc >= 0 else 128 - rc)
"""


CLI: list[str] = [sys.executable, "-m", "tui.main"]  # --cli replaces it


def dattui_cmd(*args: str) -> list[str]:
    return [*CLI, *args]


def child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DATTUI_HOME"] = str(home)
    # measure what a user's shell gets: the CLI must flush its JSON lines itself
    env.pop("PYTHONUNBUFFERED", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def preflight_cli() -> str | None:
    """None if the dattui CLI looks runnable, else a message."""
    if CLI[1:3] == ["-m", "tui.main"]:
        sys.path.insert(0, str(ROOT))
        try:
            spec, err = importlib.util.find_spec("tui.main"), None
        except ImportError as e:
            spec, err = None, e
        if spec is None:
            return (f"dattui CLI not found: cannot import tui.main from {ROOT} "
                    f"({err or 'no tui/main.py'}).\n"
                    "The share/clone commands are not implemented yet; run with --tcp-only to check "
                    "the harness (datasets, namespaces, TCP reference) on its own.")
    try:
        cp = subprocess.run(dattui_cmd("--help"), cwd=ROOT, capture_output=True, text=True,
                            env=child_env(Path(tempfile.gettempdir())), timeout=60)
    except OSError as e:
        return f"cannot run {' '.join(CLI)}: {e}"
    if cp.returncode != 0:
        tail = (cp.stderr or cp.stdout).strip().splitlines()[-5:]
        return f"`{' '.join(CLI)} --help` failed ({cp.returncode}):\n  " + "\n  ".join(tail)
    return None


# ---------------------------------------------------------------------------
# one measurement each
# ---------------------------------------------------------------------------
def run_tcp(lab_hosts, data: Path, out: Path, manifest, timeout: float) -> dict:
    share_h, clone_h = lab_hosts
    me = str(Path(__file__).resolve())
    recv = clone_h.popen([sys.executable, me, "_tcp-recv", CLONE_IP, str(TCP_PORT), str(out)],
                         stdout=subprocess.PIPE, text=True)
    if recv.stdout.readline().strip() != "ready":
        raise RuntimeError("tcp receiver did not start")
    t0 = time.perf_counter()
    send = share_h.popen([sys.executable, me, "_tcp-send", CLONE_IP, str(TCP_PORT), str(data)])
    try:
        summary = recv.stdout.readline()
        recv.wait(timeout=timeout)
        wall = time.perf_counter() - t0
        send.wait(timeout=30)
    finally:
        for p in (recv, send):
            if p.poll() is None:
                p.kill()
                p.wait()
    if recv.returncode or send.returncode:
        raise RuntimeError(f"tcp copy failed (recv rc={recv.returncode}, send rc={send.returncode})")
    got = json.loads(summary)
    problems = verify_copy(manifest, out)
    return {"wall_s": wall, "files": got["files"], "bytes": got["bytes"], "problems": problems}


def run_dattui(lab_hosts, data: Path, out: Path, manifest, homes: Path, port: int,
               timeout: float, tag: str) -> dict:
    share_h, clone_h = lab_hosts
    share_home, clone_home = homes / f"share-{tag}", homes / f"clone-{tag}"
    share_home.mkdir(parents=True)
    clone_home.mkdir(parents=True)
    share_err = open(homes / f"share-{tag}.stderr", "w+")
    share = share_h.popen(dattui_cmd("share", str(data), "--json", "--no-lan", "--no-dht", "--port", str(port)),
                          cwd=ROOT, env=child_env(share_home), stdout=subprocess.PIPE,
                          stderr=share_err, text=True)
    share_out = LineReader(share.stdout)
    res: dict = {"problems": []}
    try:
        first = share_out.wait_line(0, timeout)
        if first is None:
            share_err.seek(0)
            why = "exited" if share.poll() is not None else f"printed no line within {timeout:.0f}s " \
                                                           "(is the JSON line flushed?)"
            raise RuntimeError(f"share {why}; stderr: {share_err.read().strip()[-2000:]}")
        try:
            ev = json.loads(first)
        except ValueError:
            ev = {}
        if not isinstance(ev, dict) or ev.get("event") != "link" or not str(ev.get("link", "")).startswith("dat://"):
            raise RuntimeError(f"share: first line is not a link event: {first!r}")
        link, sport = ev["link"], int(ev.get("port", port))
        res["link"] = link

        clone_err = open(homes / f"clone-{tag}.stderr", "w+")
        resfile = homes / f"clone-{tag}.rusage.json"
        t0 = time.perf_counter()
        clone = clone_h.popen([sys.executable, "-S", "-c", LAUNCHER, str(resfile),
                               *dattui_cmd("clone", link, str(out), "--json", "--no-lan", "--no-dht",
                                           "--peer", f"{SHARE_IP}:{sport}")],
                              cwd=ROOT, env=child_env(clone_home), stdout=subprocess.PIPE,
                              stderr=clone_err, text=True, start_new_session=True)
        clone_out = LineReader(clone.stdout)
        timed_out = False
        try:
            clone.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(clone.pid, signal.SIGKILL)  # launcher + clone (own session)
            clone.wait()
        outer_wall = time.perf_counter() - t0
        clone_out.join()
        clone_err.seek(0)
        err_text = clone_err.read().strip()
        clone_err.close()
        if timed_out:
            raise RuntimeError(f"clone timed out after {timeout:.0f}s; stderr: {err_text[-2000:]}")
        try:
            ru = json.loads(resfile.read_text())
        except (OSError, ValueError):
            raise RuntimeError(f"clone launcher failed (rc={clone.returncode}); stderr: {err_text[-2000:]}")
        rc = ru["rc"]
        res.update(wall_s=ru["wall_s"], outer_wall_s=outer_wall, clone_rc=rc,
                   clone_rss_mb=ru["maxrss_kib"] / 1024, clone_cpu_s=ru["cpu_s"])
        if rc != 0:
            raise RuntimeError(f"clone exited {rc}; stderr: {err_text[-2000:]}")
        events = json_lines(clone_out.lines)
        done = events[-1] if events else {}
        if done.get("event") != "done":
            res["problems"].append(f"clone's last JSON line is not a done event: {done!r}")
        res["done"] = done

        # share side: the Popen pid *is* the python process (ip netns exec execs)
        comm = Path(f"/proc/{share.pid}/comm").read_text().strip() if share.poll() is None else "?"
        if share.poll() is not None:
            res["problems"].append(f"share exited early (rc={share.returncode})")
        elif not comm.startswith("python"):
            res["problems"].append(f"share pid {share.pid} is {comm!r}, not python: RSS not measured")
        else:
            res["share_rss_mb"] = (proc_status_kib(share.pid, "VmHWM") or 0) / 1024
            res["share_cpu_s"] = proc_cpu_seconds(share.pid)
        res["problems"] += verify_copy(manifest, out)
        if done.get("files") not in (None, len(manifest)):
            res["problems"].append(f"done.files={done.get('files')} but dataset has {len(manifest)}")
        return res
    finally:
        if share.poll() is None:
            share.send_signal(signal.SIGINT)
            try:
                share.wait(timeout=10)
            except subprocess.TimeoutExpired:
                share.kill()
                share.wait()
        share_out.join()
        share_err.close()


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
def fmt(v, spec=".1f", target=None, higher=True) -> str:
    if v is None:
        return "-"
    s = format(v, spec)
    if target is not None:
        ok = v >= target if higher else v < target
        s += " ok" if ok else " MISS"
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1/10 of the data")
    ap.add_argument("--repeat", type=int, default=1, help="clones per dataset (median reported)")
    ap.add_argument("--mtu", type=int, default=1500)
    ap.add_argument("--port", type=int, default=3282)
    ap.add_argument("--datasets", default="A,B", help="comma list of A,B")
    ap.add_argument("--timeout", type=float, default=600, help="per share-start / clone, seconds")
    ap.add_argument("--tcp-only", action="store_true",
                    help="only the TCP reference (checks the harness without the dattui CLI)")
    ap.add_argument("--tmp", help="parent dir for the datasets (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    ap.add_argument("--cli", help="command that runs dattui (default: python -m tui.main), "
                                  "e.g. '.venv/bin/dattui'")
    ap.add_argument("--json-out", default=str(ROOT / "bench" / "out" / "bench_clone.json"))
    ap.add_argument("--no-sync", action="store_true",
                    help="clones skip every fsync (DATTUI_NO_SYNC=1): to measure what durability "
                         "costs, never for real use")
    args = ap.parse_args(argv)
    if args.no_sync:
        os.environ["DATTUI_NO_SYNC"] = "1"  # child_env copies it into every dattui process

    if os.geteuid() != 0:
        print("bench_clone: needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.cli:
        import shlex
        CLI[:] = shlex.split(args.cli)
    if not args.tcp_only:
        msg = preflight_cli()
        if msg:
            print(f"bench_clone: {msg}", file=sys.stderr)
            return 2
    sys.path.insert(0, str(ROOT / "tests"))
    from netlab import Lab  # noqa: E402

    kinds = [k.strip().upper() for k in args.datasets.split(",") if k.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="dattui-bench-", dir=args.tmp))
    rows, failed = [], False
    try:
        with Lab() as lab:
            sh, ch = lab.add_host("share"), lab.add_host("clone")
            lab.link(sh, SHARE_IP, ch, CLONE_IP, mtu=args.mtu)
            for kind in kinds:
                data = tmp / f"data-{kind}"
                t = time.perf_counter()
                manifest = make_dataset(kind, data, args.quick)
                total = sum(s for s, _ in manifest.values())
                print(f"[{kind}] dataset: {len(manifest)} files, {total / MiB:.1f} MiB "
                      f"(built in {time.perf_counter() - t:.1f}s)", file=sys.stderr)
                row = {"dataset": kind, "files": len(manifest), "bytes": total, "runs": []}

                out = tmp / f"tcp-{kind}"
                tcp = run_tcp((sh, ch), data, out, manifest, args.timeout)
                shutil.rmtree(out, ignore_errors=True)
                row["tcp"] = tcp
                row["tcp_mbps"] = total / MiB / tcp["wall_s"]
                row["tcp_files_per_s"] = len(manifest) / tcp["wall_s"]
                print(f"[{kind}] tcp copy: {tcp['wall_s']:.2f}s {row['tcp_mbps']:.1f} MB/s"
                      + (f" PROBLEMS {tcp['problems'][:5]}" if tcp["problems"] else ""), file=sys.stderr)
                failed |= bool(tcp["problems"])

                if not args.tcp_only:
                    for i in range(args.repeat):
                        out = tmp / f"clone-{kind}-{i}"
                        try:
                            r = run_dattui((sh, ch), data, out, manifest, tmp / "homes", args.port,
                                           args.timeout, f"{kind}{i}")
                        except (RuntimeError, ValueError, OSError) as e:
                            r = {"problems": [f"{type(e).__name__}: {e}"]}
                        shutil.rmtree(out, ignore_errors=True)
                        row["runs"].append(r)
                        if r["problems"]:
                            failed = True
                            print(f"[{kind}] dattui run {i}: FAILED: " + "; ".join(r["problems"][:5]),
                                  file=sys.stderr)
                        else:
                            print(f"[{kind}] dattui run {i}: {r['wall_s']:.2f}s "
                                  f"{total / MiB / r['wall_s']:.1f} MB/s", file=sys.stderr)
                    good = sorted((r for r in row["runs"] if not r["problems"]), key=lambda r: r["wall_s"])
                    if good:
                        med = good[len(good) // 2]
                        row.update(wall_s=med["wall_s"], mbps=total / MiB / med["wall_s"],
                                   files_per_s=len(manifest) / med["wall_s"],
                                   share_rss_mb=max((r.get("share_rss_mb") or 0) for r in good) or None,
                                   clone_rss_mb=max(r["clone_rss_mb"] for r in good))
                        row["ratio"] = row["mbps"] / row["tcp_mbps"]
                rows.append(row)
                shutil.rmtree(data, ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- report ----
    missed = False
    names = {"A": "A 8x20M+40x1M" if not args.quick else "A (quick) 20M",
             "B": "B 10k x 4K" if not args.quick else "B (quick) 1k x 4K"}
    hdr = (f"{'dataset':<20} {'dattui MB/s':>14} {'files/s':>12} {'share RSS MB':>14} "
           f"{'clone RSS MB':>14} {'TCP MB/s':>9} {'ratio':>6}")
    print()
    print(f"dattui clone benchmark  (MTU {args.mtu}, veth between two namespaces, MB = MiB, "
          f"{'quick' if args.quick else 'full'} data)")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        k = r["dataset"]
        mb_t = TARGET_MBPS if k == "A" else None
        fs_t = TARGET_FILES_PER_S if k == "B" else None
        for v, t, hi in ((r.get("mbps"), mb_t, True), (r.get("files_per_s"), fs_t, True),
                         (r.get("share_rss_mb"), TARGET_RSS_MB, False),
                         (r.get("clone_rss_mb"), TARGET_RSS_MB, False)):
            if v is not None and t is not None and not (v >= t if hi else v < t):
                missed = True
        print(f"{names.get(k, k):<20} {fmt(r.get('mbps'), target=mb_t):>14} "
              f"{fmt(r.get('files_per_s'), '.0f', target=fs_t):>12} "
              f"{fmt(r.get('share_rss_mb'), target=TARGET_RSS_MB, higher=False):>14} "
              f"{fmt(r.get('clone_rss_mb'), target=TARGET_RSS_MB, higher=False):>14} "
              f"{fmt(r.get('tcp_mbps')):>9} {fmt(r.get('ratio'), '.2f'):>6}")
    print("TCP copy files/s: " + ", ".join(f"{r['dataset']} {r['tcp_files_per_s']:,.0f}" for r in rows)
          + f"   (data on {tmp.parent}: small-file rates are bound by that filesystem; try --tmp /dev/shm)")
    print(f"targets: A >= {TARGET_MBPS:.0f} MB/s; B >= {TARGET_FILES_PER_S:,} files/s; "
          f"peak RSS < {TARGET_RSS_MB:.0f} MB each side.  ratio = dattui MB/s / TCP MB/s.")
    if args.quick:
        print("(--quick: figures include process start-up over little data; use the full run for targets)")
    if args.tcp_only:
        print("(--tcp-only: dattui not run)")

    try:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(
            {"quick": args.quick, "mtu": args.mtu, "tcp_only": args.tcp_only, "time": time.time(),
             "targets": {"A_mbps": TARGET_MBPS, "B_files_per_s": TARGET_FILES_PER_S,
                         "rss_mb": TARGET_RSS_MB},
             "rows": rows}, indent=1, default=str))
        print(f"results: {args.json_out}", file=sys.stderr)
    except OSError as e:
        print(f"could not write {args.json_out}: {e}", file=sys.stderr)

    if failed:
        return 1
    if missed and args.strict:
        return 3
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_tcp-send":
        tcp_send(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) >= 2 and sys.argv[1] == "_tcp-recv":
        tcp_recv(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(main())
