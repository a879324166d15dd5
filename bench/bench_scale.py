#!/usr/bin/env python3
"""Scale benchmark: many small files through dattui share -> clone, beside tar | tar.

    sudo .venv/bin/python bench/bench_scale.py                      # 1,000,000 files of 1 KiB
    sudo .venv/bin/python bench/bench_scale.py --files 200000       # while developing
    sudo .venv/bin/python bench/bench_scale.py --files 200000 --large-mb 512

Needs root (network namespaces) and iproute2, tar.  It
  1. writes N files of 1 KiB (each distinct) in N/1000 folders, and with
     --large-mb one large file beside them, under --tmp (default: the system temp)
  2. builds namespaces "share" (10.203.0.1) and "clone" (10.203.0.2) joined by one
     veth pair (tests/netlab.py); no packet leaves them
  3. the reference: `tar c` in "share" writes into a TCP socket, `tar x` in "clone"
     reads from it (each tar's stdin/stdout *is* the socket), timed from the sender's
     start until the receiving tar exits
  4. dattui: `dattui share DATA --json --no-lan --no-dht` in "share", then, once its
     version is published, `dattui clone LINK OUT --json --no-lan --no-dht --peer
     10.203.0.1:PORT` in "clone".  Each side runs under a small launcher (see
     LAUNCHER) whose os.wait4 gives that side's own peak RSS (ru_maxrss) and CPU;
     the share is stopped with SIGINT after the clone exits
  5. checks both copies (every file there, sizes equal, the bytes of a sample of
     files and of the large file equal) and prints one block of figures; JSON in
     bench/out/bench_scale.json

Figures: scan = share start until its `version_published` line; first byte = clone
start until its first `progress` line with bytes_received > 0, or its completion if
that comes first (progress lines come once a second, so this is rounded up to 1 s); total = clone start until it exits;
files/s and MB/s over total.  MB = MiB.  Exit status: 0 ok, 1 a copy was wrong or
a run failed, 2 cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_clone import LAUNCHER, LineReader, json_lines  # noqa: E402

MiB = 1 << 20
SHARE_IP, CLONE_IP = "10.203.0.1", "10.203.0.2"
TAR_PORT, DATTUI_PORT = 3998, 3283
FILE_SIZE = 1024
PER_DIR = 1000
LARGE_NAME = "large.bin"
TARGET_RSS_MB, TARGET_FILES_PER_S, TARGET_TAR_RATIO = 150.0, 5000.0, 1 / 3


# --------------------------------------------------------------------------- the tree


def make_tree(base: Path, files: int, large_mb: int, seed: int = 1) -> int:
    """N distinct files of FILE_SIZE bytes in ceil(N/PER_DIR) folders, plus one large
    file when large_mb > 0; returns the total bytes."""
    rng = random.Random(seed)
    pool = rng.randbytes(FILE_SIZE * 64)
    base.mkdir(parents=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for i in range(files):
        d, f = divmod(i, PER_DIR)
        if f == 0:
            os.mkdir(base / f"d{d:05d}")
        fd = os.open(base / f"d{d:05d}" / f"f{i:08d}.dat", flags, 0o644)
        try:
            off = (i * 8) % (len(pool) - FILE_SIZE)
            os.write(fd, i.to_bytes(8, "big") + pool[off:off + FILE_SIZE - 8])
        finally:
            os.close(fd)
    total = files * FILE_SIZE
    if large_mb:
        with open(base / LARGE_NAME, "wb") as fh:
            for _ in range(large_mb):
                fh.write(rng.randbytes(MiB))
        total += large_mb * MiB
    return total


def check_copy(src: Path, out: Path, files: int, large_mb: int, sample: int = 2000) -> list[str]:
    """Problems found: every small file present with its size, a sample's bytes, the
    large file's bytes; nothing extra beside .dat/."""
    problems: list[str] = []
    seen = 0
    for top in os.scandir(out):
        if top.name.startswith(".") or top.name == LARGE_NAME:
            continue
        if not top.is_dir(follow_symlinks=False):
            problems.append(f"extra {top.name}")
            continue
        for e in os.scandir(top.path):
            if not e.is_file(follow_symlinks=False) or e.stat(follow_symlinks=False).st_size != FILE_SIZE:
                problems.append(f"{top.name}/{e.name}: not a {FILE_SIZE}-byte file")
                if len(problems) > 20:
                    return problems
            seen += 1
    if seen != files:
        problems.append(f"{seen} small files, expected {files}")
    for i in random.Random(2).sample(range(files), min(sample, files)):
        rel = Path(f"d{i // PER_DIR:05d}") / f"f{i:08d}.dat"
        try:
            if (src / rel).read_bytes() != (out / rel).read_bytes():
                problems.append(f"{rel}: bytes differ")
        except OSError as exc:
            problems.append(f"{rel}: {exc}")
    if large_mb:
        try:
            with open(src / LARGE_NAME, "rb") as a, open(out / LARGE_NAME, "rb") as b:
                while chunk := a.read(8 * MiB):
                    if chunk != b.read(len(chunk)):
                        problems.append(f"{LARGE_NAME}: bytes differ")
                        break
        except OSError as exc:
            problems.append(f"{LARGE_NAME}: {exc}")
    return problems


# --------------------------------------------------------------------------- tar | tar


def tar_send(host: str, port: int, src: str) -> None:
    with socket.create_connection((host, port)) as s:
        rc = subprocess.call(["tar", "cf", "-", "-C", src, "."], stdout=s.fileno())
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # until the receiving tar is done
    sys.exit(rc)


def tar_recv(host: str, port: int, dst: str) -> None:
    srv = socket.create_server((host, port))
    print("ready", flush=True)
    conn, _ = srv.accept()
    os.makedirs(dst, exist_ok=True)
    rc = subprocess.call(["tar", "xf", "-", "-C", dst], stdin=conn.fileno())
    conn.close()
    sys.exit(rc)


def run_tar(share_h, clone_h, data: Path, out: Path, timeout: float) -> dict:
    me = str(Path(__file__).resolve())
    recv = clone_h.popen([sys.executable, me, "_tar-recv", CLONE_IP, str(TAR_PORT), str(out)],
                         stdout=subprocess.PIPE, text=True)
    if recv.stdout.readline().strip() != "ready":
        raise RuntimeError("tar receiver did not start")
    t0 = time.perf_counter()
    send = share_h.popen([sys.executable, me, "_tar-send", CLONE_IP, str(TAR_PORT), str(data)])
    try:
        recv.wait(timeout=timeout)
        wall = time.perf_counter() - t0
        send.wait(timeout=30)
    finally:
        for p in (recv, send):
            if p.poll() is None:
                p.kill()
                p.wait()
    if recv.returncode or send.returncode:
        raise RuntimeError(f"tar copy failed (recv rc={recv.returncode}, send rc={send.returncode})")
    return {"total_s": wall}


# --------------------------------------------------------------------------- dattui


def dattui_argv(args: list[str]) -> list[str]:
    from installed import dattui_cmd
    return dattui_cmd(*args)


def launched(host, resfile: Path, argv: list[str], home: Path, stderr) -> subprocess.Popen:
    env = dict(os.environ, DATTUI_HOME=str(home))
    env.pop("PYTHONUNBUFFERED", None)
    return host.popen([sys.executable, "-S", "-c", LAUNCHER, str(resfile), *argv], env=env,
                      stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)


def rusage(resfile: Path) -> dict:
    try:
        return json.loads(resfile.read_text())
    except (OSError, ValueError):
        return {}


def run_dattui(share_h, clone_h, data: Path, out: Path, work: Path, timeout: float,
               share_only: bool = False) -> dict:
    homes = {s: work / f"home-{s}" for s in ("share", "clone")}
    for h in homes.values():
        h.mkdir(parents=True, exist_ok=True)
    res: dict = {}
    share_err = open(work / "share.stderr", "w+")
    t_share = time.perf_counter()
    share = launched(share_h, work / "share.rusage.json",
                     dattui_argv(["share", str(data), "--json", "--no-lan", "--no-dht",
                                  "--port", str(DATTUI_PORT)]), homes["share"], share_err)
    share_out = LineReader(share.stdout)
    try:
        link = None
        i = 0
        deadline = time.monotonic() + timeout
        while True:
            line = share_out.wait_line(i, max(0.1, deadline - time.monotonic()))
            if line is None:
                share_err.seek(0)
                raise RuntimeError(f"share published no version within {timeout:.0f}s; "
                                   f"stderr: {share_err.read().strip()[-2000:]}")
            i += 1
            ev = (json_lines([line]) or [{}])[0]
            if ev.get("event") == "link":
                link, port = ev["link"], int(ev.get("port", DATTUI_PORT))
            elif ev.get("event") == "version_published":
                res["scan_s"] = time.perf_counter() - t_share
                break
        if share_only:
            return res
        clone_err = open(work / "clone.stderr", "w+")
        t0 = time.perf_counter()
        clone = launched(clone_h, work / "clone.rusage.json",
                         dattui_argv(["clone", link, str(out), "--json", "--no-lan", "--no-dht",
                                      "--peer", f"{SHARE_IP}:{port}"]), homes["clone"], clone_err)
        first_byte: list[float] = []

        def watch(stream) -> None:
            for raw in stream:
                if not first_byte:
                    ev = (json_lines([raw]) or [{}])[0]
                    if (ev.get("event") == "progress" and ev.get("bytes_received", 0) > 0) \
                            or ev.get("event") in ("clone_completed", "done"):  # done within a second
                        first_byte.append(time.perf_counter() - t0)
                watch.lines.append(raw)
        watch.lines = []
        watcher = threading.Thread(target=watch, args=(clone.stdout,), daemon=True)
        watcher.start()
        try:
            clone.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(clone.pid, signal.SIGKILL)
            clone.wait()
            raise RuntimeError(f"clone timed out after {timeout:.0f}s")
        res["total_s"] = time.perf_counter() - t0
        watcher.join(5)
        res["first_byte_s"] = first_byte[0] if first_byte else None
        ru = rusage(work / "clone.rusage.json")
        res["clone_rss_mb"] = ru.get("maxrss_kib", 0) / 1024 or None
        res["clone_cpu_s"] = ru.get("cpu_s")
        if clone.returncode:
            clone_err.seek(0)
            raise RuntimeError(f"clone exited {clone.returncode}; stderr: {clone_err.read().strip()[-2000:]}")
        done = (json_lines(watch.lines) or [{}])[-1]
        if done.get("event") != "done":
            raise RuntimeError(f"clone's last line is not a done event: {done!r}")
        return res
    finally:
        if share.poll() is None:
            share.send_signal(signal.SIGINT)  # the launcher passes it on to the share
            try:
                share.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(share.pid, signal.SIGKILL)
                share.wait()
        ru = rusage(work / "share.rusage.json")
        res["share_rss_mb"] = ru.get("maxrss_kib", 0) / 1024 or None
        res["share_cpu_s"] = ru.get("cpu_s")
        share_out.join()
        share_err.close()


# --------------------------------------------------------------------------- main


def fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000, help="1 KiB files (default 1,000,000)")
    ap.add_argument("--large-mb", type=int, default=0, help="add one large file of this many MiB")
    ap.add_argument("--tmp", help="parent dir of the trees (default: the system temp)")
    ap.add_argument("--timeout", type=float, default=3600, help="per share scan / clone, seconds")
    ap.add_argument("--no-tar", action="store_true", help="skip the tar | tar reference")
    ap.add_argument("--share-only", action="store_true",
                    help="only dattui share until its version is published (scan time, share RSS)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (trees, stderr, rusage)")
    ap.add_argument("--tree", help="build the tree here, or reuse the one built there by an earlier "
                                   "run with the same --files and --large-mb; it is kept")
    ap.add_argument("--json-out", default=str(ROOT / "bench" / "out" / "bench_scale.json"))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_scale: needs root (network namespaces)", file=sys.stderr)
        return 2
    if shutil.which("tar") is None or shutil.which("ip") is None:
        print("bench_scale: needs tar and ip (iproute2)", file=sys.stderr)
        return 2
    from netlab import Lab

    work = Path(tempfile.mkdtemp(prefix="dattui-scale-", dir=args.tmp))
    data = Path(args.tree) if args.tree else work / "data"
    t = time.perf_counter()
    stamp = data / ".bench-tree"
    want = f"{args.files} {args.large_mb}"
    if args.tree and stamp.exists() and stamp.read_text() == want:
        total = args.files * FILE_SIZE + args.large_mb * MiB
        shutil.rmtree(data / ".dat", ignore_errors=True)  # a fresh share every run
    else:
        if args.tree:
            shutil.rmtree(data, ignore_errors=True)
        total = make_tree(data, args.files, args.large_mb)
        if args.tree:
            stamp.write_text(want)  # hidden: not shared
    nfiles = args.files + (1 if args.large_mb else 0)
    print(f"tree: {args.files:,} files of {FILE_SIZE} B in {-(-args.files // PER_DIR):,} folders"
          + (f" + one {args.large_mb} MiB file" if args.large_mb else "")
          + f", {total / MiB:.1f} MiB, on {work} (written in {time.perf_counter() - t:.1f}s)",
          file=sys.stderr, flush=True)
    report: dict = {"files": nfiles, "bytes": total, "large_mb": args.large_mb, "time": time.time()}
    failed = False
    try:
        with Lab() as lab:
            sh, ch = lab.add_host("share"), lab.add_host("clone")
            lab.link(sh, SHARE_IP, ch, CLONE_IP, mtu=1500)
            for tool in ([] if args.no_tar or args.share_only else ["tar"]) + ["dattui"]:
                out = work / f"out-{tool}"
                try:
                    if tool == "tar":
                        r = run_tar(sh, ch, data, out, args.timeout)
                    else:
                        r = run_dattui(sh, ch, data, out, work / "dattui", args.timeout, args.share_only)
                    r["problems"] = [] if args.share_only else check_copy(data, out, args.files,
                                                                          args.large_mb)
                except (RuntimeError, OSError, ValueError) as exc:
                    r = {"problems": [f"{type(exc).__name__}: {exc}"]}
                if r.get("total_s"):
                    r["files_per_s"] = nfiles / r["total_s"]
                    r["mb_per_s"] = total / MiB / r["total_s"]
                failed |= bool(r["problems"])
                report[tool] = r
                print(f"{tool}: " + ("; ".join(r["problems"][:5]) if r["problems"] else
                                     "published" if args.share_only else f"{r['total_s']:.1f}s, copy ok"),
                      file=sys.stderr, flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    d, tar = report.get("dattui", {}), report.get("tar", {})
    ratio = (d["files_per_s"] / tar["files_per_s"]) if d.get("files_per_s") and tar.get("files_per_s") else None
    report["ratio_vs_tar"] = ratio
    print()
    print(f"dattui scale benchmark: {nfiles:,} files, {total / MiB:.1f} MiB, veth between two "
          f"namespaces, MTU 1500, MB = MiB")
    print(f"  share: scan {fmt(d.get('scan_s'))} s (start until version published), "
          f"peak RSS {fmt(d.get('share_rss_mb'))} MB, CPU {fmt(d.get('share_cpu_s'))} s")
    if not args.share_only:
        print(f"  clone: first byte {fmt(d.get('first_byte_s'))} s, total {fmt(d.get('total_s'))} s, "
              f"{fmt(d.get('files_per_s'), ',.0f')} files/s, {fmt(d.get('mb_per_s'))} MB/s, "
              f"peak RSS {fmt(d.get('clone_rss_mb'))} MB, CPU {fmt(d.get('clone_cpu_s'))} s")
    if not (args.no_tar or args.share_only):
        print(f"  tar c | tar x over TCP: total {fmt(tar.get('total_s'))} s, "
              f"{fmt(tar.get('files_per_s'), ',.0f')} files/s, {fmt(tar.get('mb_per_s'))} MB/s; "
              f"dattui / tar {fmt(ratio, '.2f')}")
    print(f"  targets: peak RSS < {TARGET_RSS_MB:.0f} MB each side, >= {TARGET_FILES_PER_S:,.0f} "
          f"files/s, >= {TARGET_TAR_RATIO:.2f} of tar")
    try:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=1, default=str))
        print(f"results: {args.json_out}", file=sys.stderr)
    except OSError as exc:
        print(f"could not write {args.json_out}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_tar-send":
        tar_send(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) >= 2 and sys.argv[1] == "_tar-recv":
        tar_recv(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(main())
