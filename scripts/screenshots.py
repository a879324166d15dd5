#!/usr/bin/env python3
"""Regenerate screenshots/*.svg from a real run of dattui.

    python scripts/screenshots.py [--out screenshots] [--keep]

Needs root (network namespaces), iproute2 and tmux. What it does, in a
temporary folder (removed at the end):

1. two network namespaces, the lab's machine A (192.168.1.10) and the
   collaborator's machine B (192.168.1.23), joined by a veth pair shaped to
   RATE_MBIT Mbit/s each way (tests/netlab.py's Lab); nothing else is
   plugged into them;
2. one real engine daemon in each namespace, each with its own DATTUI_HOME
   (LAN discovery on, DHT off, no rendezvous, no --peer, ports chosen by the
   system): A shares a ~900 MB folder of random data; B clones it, finding A
   by LAN multicast, and shares a small folder of its own;
3. the dashboard (`tui.app.DattuiApp`) runs in this process (in the root
   namespace: a daemon's control socket is a Unix socket under its
   DATTUI_HOME, reached through the file system whatever the network
   namespace), headless at 120x40, against a `DaemonClient` of B, and is
   driven with key presses: shares.svg, transfer.svg (the clone,
   mid-transfer), connectivity.svg, log.svg, help.svg; then against a
   `DaemonClient` of A: share-side.svg (the share's peers, the clone's
   progress in the "has" column);
4. a third home runs the real `dattui clone` in the foreground inside tmux,
   in a shell in B's namespace (`ip netns exec`), finding the share by LAN
   (A, and B's daemon, which holds part of it by then); its screen, colours
   included (`capture-pane -e`), becomes cli-clone.svg;
5. `dattui stop` for both daemons; the tmux server is killed; the namespaces
   are deleted.

A's share is paused until the dashboard is up, so that the dashboard sees the
clone's peer connect (the connection attempts and the log have something to
show). Nothing here sends a packet outside the two namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # netlab

SIZE = (120, 40)
CLI_SIZE = (124, 24)
HOME_CONFIG = """# screenshots: nothing leaves the two namespaces
[discovery]
lan = true
dht = false
rendezvous = []
"""
# the veth between A and B: addresses, and a rate (each way) at which the
# clone lasts long enough for every screenshot to catch it mid-transfer
IP_A, IP_B = "192.168.1.10", "192.168.1.23"
RATE_MBIT = 200

# (path, MB): what a lab might share; the bytes are random
DATASET = [
    ("README.txt", 0),
    ("metadata/samples.csv", 0),
    ("annotations/genes.gff3", 6),
    ("annotations/repeats.bed", 3),
    ("assemblies/xenopus-laevis-v10.fa.gz", 180),
    ("assemblies/xenopus-tropicalis-v10.fa.gz", 150),
    ("reads/sample-01_R1.fastq.gz", 70),
    ("reads/sample-01_R2.fastq.gz", 70),
    ("reads/sample-02_R1.fastq.gz", 65),
    ("reads/sample-02_R2.fastq.gz", 65),
    ("reads/sample-03_R1.fastq.gz", 80),
    ("reads/sample-03_R2.fastq.gz", 80),
    ("reads/sample-04_R1.fastq.gz", 60),
    ("reads/sample-04_R2.fastq.gz", 60),
]
NOTES = {
    "2024-05-field-trip.md": "# Field trip, May 2024\n\nPonds 3 and 7 sampled; 42 tadpoles.\n",
    "ponds.csv": "pond,lat,lon\n3,46.52,6.63\n7,46.51,6.65\n",
    "photos/pond-3.jpg": None,
}


def log(msg: str) -> None:
    print(f"screenshots: {msg}", file=sys.stderr, flush=True)


# ---- set-up ------------------------------------------------------------------

def home_env(home: Path) -> dict:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    cfg = home / "config.toml"
    if not cfg.exists():
        cfg.write_text(HOME_CONFIG)
    e = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE", "NO_COLOR")}
    e["DATTUI_HOME"] = str(home)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def dattui(home: Path, *args, host=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`dattui ARGS` with DATTUI_HOME=home, inside `host`'s namespace if given
    (a daemon it starts stays there)."""
    argv = [sys.executable, "-P", "-m", "dattui", *map(str, args)]
    p = subprocess.run(host.cmd(argv) if host is not None else argv, env=home_env(home),
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"screenshots: `dattui {' '.join(map(str, args))}` failed:\n{p.stderr}")
    return p


def write_dataset(root: Path) -> None:
    for rel, mb in DATASET:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            if mb == 0:
                f.write(b"Frog genomes and reads from the 2024 field season.\n"
                        if rel.endswith(".txt") else b"sample,pond,stage\n01,3,42\n02,3,44\n")
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
    notes = root.parent / "field-notes"
    for rel, text in NOTES.items():
        path = notes / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if text is not None else os.urandom(300_000))


async def call(home: Path, op: str, **args):
    from dattui.engine.daemon.client import DaemonClient
    client = await DaemonClient.connect(home)
    try:
        return await asyncio.wait_for(client.call(op, **args), 20)
    finally:
        await client.close()


# ---- the dashboard -------------------------------------------------------------

def _percent(s) -> str:
    return f"{s.state.value} {100 * s.bytes_have / max(s.bytes_total, 1):.0f}%"


class Dashboard:
    """`DattuiApp` against one daemon's control socket, headless, driven by keys."""

    def __init__(self, out: Path, home: Path, clone_home: Path) -> None:
        self.out, self.home, self.clone_home = out, home, clone_home

    async def run(self, script) -> None:
        from dattui import config as config_mod
        from dattui.engine.daemon.client import DaemonClient
        from dattui.tui.app import DattuiApp

        os.environ["DATTUI_HOME"] = str(self.home)  # config.load() reads this home's config
        client = await DaemonClient.connect(self.home)
        self.app = DattuiApp(client, config_mod.load())
        try:
            async with self.app.run_test(size=SIZE) as self.pilot:
                await script(self)
        finally:
            await client.close()

    async def until(self, what: str, predicate, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit(f"screenshots: timed out waiting for {what}")
            await self.pilot.pause(0.1)

    async def save(self, name: str) -> None:
        from textual.widgets import Input

        for widget in self.app.screen.query(Input):
            widget.cursor_blink = False
        await self.pilot.pause(0.3)
        self.app.save_screenshot(filename=name, path=str(self.out))
        clone = await clone_status(self.clone_home)
        log(f"{name} (the clone: {_percent(clone)})")


async def clone_status(clone_home: Path):
    from dattui.engine.events import Role
    return next(s for s in await call(clone_home, "status") if s.role is Role.CLONE)


async def clone_side(d: Dashboard, share_home: Path, share_tid: str) -> None:
    """B's dashboard: shares.svg, transfer.svg, connectivity.svg, log.svg, help.svg."""
    from dattui.engine.events import Role, State
    from textual.containers import VerticalScroll
    from textual.widgets import DataTable, RichLog, Static
    from dattui.tui.screens.connectivity import ConnectivityScreen
    from dattui.tui.screens.help import HelpScreen
    from dattui.tui.screens.log import LogScreen
    from dattui.tui.screens.shares import SharesScreen
    from dattui.tui.screens.transfer import TransferScreen
    from dattui.tui.widgets.file_table import FileTable

    app, pilot = d.app, d.pilot

    def clone():
        return next((s for s in app.model.transfers.values() if s.role is Role.CLONE), None)

    await d.until("both rows on the dashboard", lambda: len(app.model.transfers) == 2)
    await call(share_home, "resume", tid=share_tid)
    await d.until("the clone to find A on the LAN", lambda: (s := clone()) is not None
                  and any(p.path.value == "lan" for p in s.peers), 60)
    # let the clone run for a while: the rate graph gets some history
    await d.until("the clone to pass 30%", lambda: (s := clone()) is not None
                  and s.bytes_total and s.bytes_have >= 0.3 * s.bytes_total, 180)
    assert isinstance(app.screen, SharesScreen)
    while app.screen.selected().role is not Role.CLONE:
        await pilot.press("down")
    await d.save("shares.svg")

    await pilot.press("enter")
    await d.until("the transfer screen", lambda: isinstance(app.screen, TransferScreen)
                  and app.screen.query_one("#peers", DataTable).row_count >= 1
                  and app.screen.query_one(FileTable).rows_held > 0)
    await pilot.pause(1.5)  # a fresh files page and another graph sample
    await d.save("transfer.svg")
    if clone().state is not State.TRANSFERRING:
        log("warning: the clone was no longer transferring; make DATASET bigger or RATE_MBIT lower")

    await pilot.press("escape", "d")
    await d.until("the connectivity checks", lambda: isinstance(app.screen, ConnectivityScreen)
                  and "done." in str(app.screen.query_one("#checks-status", Static).content)
                  and len(app.screen.query_one("#attempts", RichLog).lines) > 0)
    # the screen follows the checks down as they arrive; the first ones
    # (addresses, port, lan) say most about this network
    app.screen.query_one("#checks", VerticalScroll).scroll_home(animate=False)
    await d.save("connectivity.svg")

    await pilot.press("escape", "l")
    await d.until("the log", lambda: isinstance(app.screen, LogScreen)
                  and len(app.screen.query_one(RichLog).lines) > 5)
    await d.save("log.svg")

    await pilot.press("escape", "question_mark")
    await d.until("the help screen", lambda: isinstance(app.screen, HelpScreen))
    await d.save("help.svg")
    await pilot.press("escape")


async def share_side(d: Dashboard) -> None:
    """A's dashboard: its share's screen, the collaborator's clone among the
    peers with how much it holds (share-side.svg)."""
    from textual.widgets import DataTable
    from dattui.engine.events import State
    from dattui.tui.screens.transfer import TransferScreen

    app, pilot = d.app, d.pilot

    def share():
        return next(iter(app.model.transfers.values()), None)

    await d.until("the share on A's dashboard", lambda: (s := share()) is not None
                  and any(p.have_bytes >= 0 for p in s.peers))
    await pilot.press("enter")
    await d.until("the share's screen", lambda: isinstance(app.screen, TransferScreen)
                  and app.screen.query_one("#peers", DataTable).row_count >= 1)
    await pilot.pause(4)  # a few graph samples
    await d.save("share-side.svg")
    if (await clone_status(d.clone_home)).state is not State.TRANSFERRING:
        log("warning: the clone was no longer transferring; make DATASET bigger or RATE_MBIT lower")
    await pilot.press("escape")


# ---- the command line ------------------------------------------------------------

def shoot_cli(out: Path, work: Path, link: str, host) -> None:
    """The real `dattui clone` in the foreground, in tmux, typed at a prompt of
    a shell in `host`'s namespace; it finds its peers on the LAN."""
    from rich.console import Console
    from rich.text import Text

    if shutil.which("tmux") is None:
        raise SystemExit("screenshots: cli-clone.svg needs tmux (apt-get install tmux)")
    home = work / "home"
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "dattui"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -P -m dattui \"$@\"\n")
    wrapper.chmod(0o755)
    e = home_env(home)
    e.update(PATH=f"{bin_dir}{os.pathsep}{e.get('PATH', '')}", TERM="xterm-256color",
             COLORTERM="truecolor", HISTFILE="/dev/null")
    e.pop("COLUMNS", None)
    e.pop("LINES", None)
    sock = f"dattui-shots-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    conf = work / "tmux.conf"
    conf.write_text('set -g default-terminal "xterm-256color"\nset -g status off\n')

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", sock, "-f", str(conf), *args], env=e, text=True,
                              capture_output=True, timeout=20, check=True).stdout

    try:
        tmux("new-session", "-d", "-s", "cli", "-x", str(CLI_SIZE[0]), "-y", str(CLI_SIZE[1]),
             "-c", str(work), shlex.join(host.cmd(["bash", "--noprofile", "--norc", "-i"])))
        time.sleep(0.5)
        tmux("send-keys", "-t", "cli", "-l", "PS1='$ '; clear")
        tmux("send-keys", "-t", "cli", "Enter")
        time.sleep(0.3)
        tmux("send-keys", "-t", "cli", "-l",
             f"dattui clone {link} frog-genomes")
        tmux("send-keys", "-t", "cli", "Enter")
        deadline = time.monotonic() + 120
        screen = ""
        while time.monotonic() < deadline:
            plain = tmux("capture-pane", "-p", "-t", "cli")
            # mid-transfer, with a peer and the per-file bars on screen
            if "total" in plain and " lan " in plain and "%" in plain and "/ " in plain:
                pct = _total_percent(plain)
                if pct is not None and pct >= 25:
                    screen = tmux("capture-pane", "-p", "-e", "-t", "cli")
                    break
            time.sleep(0.2)
        if not screen:
            raise SystemExit(f"screenshots: `dattui clone` did not show progress:\n{plain}")
        lines = screen.rstrip("\n").split("\n")
        while lines and not Text.from_ansi(lines[-1]).plain.strip():
            lines.pop()
        console = Console(record=True, width=CLI_SIZE[0], file=io.StringIO(),
                          force_terminal=True, color_system="truecolor")
        for line in lines:
            console.print(Text.from_ansi(line), soft_wrap=True)
        console.save_svg(str(out / "cli-clone.svg"), title="dattui clone")
        log(f"cli-clone.svg ({_total_percent(plain)}%)")
        tmux("send-keys", "-t", "cli", "C-c")
        time.sleep(1.0)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, timeout=20)
        # tmux leaves its socket file behind
        tmpdir = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
        (tmpdir / sock).unlink(missing_ok=True)


def _total_percent(screen: str) -> float | None:
    import re
    m = re.search(r"^total\s.*?(\d+\.\d)%", screen, re.M)
    return float(m.group(1)) if m else None


# ---- main ------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "screenshots"), help="where the SVGs go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    from dattui.engine.daemon.client import daemon_running
    from netlab import Lab

    work = Path(tempfile.mkdtemp(prefix="dattui-demo-"))
    share_home, clone_home = work / "home-lab", work / "home-collaborator"
    homes = [share_home, clone_home]
    lab = Lab()
    try:
        host_a, host_b = lab.add_host("lab"), lab.add_host("collaborator")
        lab.link(host_a, IP_A, host_b, IP_B)
        for host in (host_a, host_b):  # a short queue: LAN round trips stay short
            lab.rate_limit(host, "eth0", RATE_MBIT, latency_ms=5)
        log(f"namespaces {host_a.ns} (A, {IP_A}) and {host_b.ns} (B, {IP_B}), "
            f"{RATE_MBIT} Mbit/s each way")

        src = work / "lab" / "frog-genomes"
        log(f"writing the dataset in {src}")
        write_dataset(src)
        link = dattui(share_home, "share", src, "--background", "--port", "0",
                      host=host_a, timeout=300).stdout.split()[0]
        statuses = asyncio.run(call(share_home, "status"))
        share_tid = statuses[0].tid
        asyncio.run(call(share_home, "pause", tid=share_tid))  # until the dashboard is up

        dst = work / "collaborator" / "frog-genomes"
        dst.parent.mkdir()
        dattui(clone_home, "clone", link, dst, "--background", "--port", "0", host=host_b)
        dattui(clone_home, "share", src.parent / "field-notes", "--background", host=host_b)
        log("taking the dashboards")
        asyncio.run(Dashboard(out, clone_home, clone_home).run(
            lambda d: clone_side(d, share_home, share_tid)))
        asyncio.run(Dashboard(out, share_home, clone_home).run(share_side))
        shoot_cli(out, work / "laptop", link, host_b)
    finally:
        for home in homes:
            if daemon_running(home):
                subprocess.run([sys.executable, "-P", "-m", "dattui", "stop"], env=home_env(home),
                               capture_output=True, timeout=30)
        deadline = time.monotonic() + 20
        while any(daemon_running(h) for h in homes) and time.monotonic() < deadline:
            time.sleep(0.1)
        lab.close()  # whatever is left in the namespaces, then the namespaces
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {', '.join(sorted(p.name for p in out.glob('*.svg')))} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
