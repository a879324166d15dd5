"""End to end: the real `dattui` dashboard inside tmux, as a user over SSH runs it.

Two real engine daemons on this machine (each with its own DATTUI_HOME, no LAN,
no DHT): A shares a folder of a few hundred MB, B clones it with `--peer`. The
dashboard of B runs in a detached tmux server (its own socket, 100x30,
TERM=xterm-256color); the test types keys with `send-keys` and reads the screen
with `capture-pane`, like a person would:

- the clone's row appears and its percentage goes up;
- Enter opens it: its peer (127.0.0.1:PORT of A) and per-file progress bars;
- q closes the dashboard; the daemon keeps running and the transfer goes on
  (`dattui list`); a second `dattui` attaches and shows the row again;
- the clone ends identical to the source; `dattui stop` ends both daemons.

A loopback transfer runs at tens of MB/s, so that the dashboard can watch it
from the start, A's share is paused (through its daemon's control socket) until
the dashboard shows the clone; B redials its `--peer` every 2 s, so the
transfer starts within seconds of the resume. Every wait polls against a
deadline; on a timeout the assertion shows the last screen and the daemons'
logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from cli import cmd, env
from dattui.engine.daemon.client import DaemonClient, daemon_running

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="needs tmux (scripts/test.sh installs it)")

COLS, ROWS = 100, 30
FILES, FILE_MB = 6, 40  # 240 MB: several seconds on loopback, next to the dashboard
START = 60.0            # deadline for things that start (daemons, the dashboard, a peer)
TRANSFER = 240.0        # deadline for the whole download

TMUX_CONF = """\
set -g default-terminal "xterm-256color"
set -g status off
set -g remain-on-exit on
set -g history-limit 2000
"""


# ---- helpers ---------------------------------------------------------------------------

def run(home: Path, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd(*args), env=env(home), capture_output=True, text=True,
                          timeout=timeout)


def call(home: Path, op: str, **args):
    """One request to the daemon of `home` over its control socket."""

    async def go():
        client = await DaemonClient.connect(home)
        try:
            return await asyncio.wait_for(client.call(op, **args), 20)
        finally:
            await client.close()

    return asyncio.run(go())


def wait_until(what: str, probe, timeout: float, diagnose=lambda: "", interval: float = 0.2):
    """Call `probe()` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnose()}")
        time.sleep(interval)


def make_dataset(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(FILES):
        with open(root / f"part{i}.bin", "wb") as f:
            for _ in range(FILE_MB):
                f.write(os.urandom(1 << 20))
    return root


def digest(path: Path) -> str:
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Tmux:
    """A private tmux server (own socket, no user config) running commands in
    detached COLSxROWS sessions; panes stay after their command exits."""

    def __init__(self, conf_dir: Path) -> None:
        self.socket = f"dattui-e2e-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.conf = conf_dir / "tmux.conf"
        self.conf.write_text(TMUX_CONF)
        self.started = False

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, "-f", str(self.conf), *args],
                              capture_output=True, text=True, timeout=20, check=check)

    def start(self, session: str, argv: list[str], environ: dict) -> None:
        environ = {k: v for k, v in environ.items()
                   if k not in ("TMUX", "TMUX_PANE", "COLUMNS", "LINES")}
        environ["TERM"] = "xterm-256color"
        home = environ["DATTUI_HOME"]
        self.started = True
        subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.conf), "new-session", "-d",
             "-s", session, "-x", str(COLS), "-y", str(ROWS),
             "-e", f"DATTUI_HOME={home}",
             # the pane keeps the exit status on screen: remain-on-exit alone raced with
             # the session going away when the command ended
             shlex.join(argv) + '; echo "[dattui exited $?]"; sleep 3600'],
            env=environ, capture_output=True, text=True, timeout=20, check=True)
        size = self.tmux("display-message", "-p", "-t", session,
                         "#{pane_width}x#{pane_height}").stdout.strip()
        assert size == f"{COLS}x{ROWS}", size

    def screen(self, session: str) -> str:
        p = self.tmux("capture-pane", "-p", "-t", session, check=False)
        return p.stdout if p.returncode == 0 else f"(capture-pane failed: {p.stderr.strip()})"

    def keys(self, session: str, *keys: str) -> None:
        self.tmux("send-keys", "-t", session, *keys)

    def exited(self, session: str) -> int | None:
        """The exit status of the session's command, None while it runs."""
        m = re.search(r"\[dattui exited (\d+)\]", self.screen(session))
        return int(m.group(1)) if m else None

    def kill(self) -> None:
        if self.started:
            subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                           timeout=20)
            # tmux leaves its socket file behind
            tmpdir = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
            (tmpdir / self.socket).unlink(missing_ok=True)


def row_of(screen: str, name: str) -> tuple[str, float] | None:
    """(state, percent) of the dashboard row named `name`, if on the screen."""
    m = re.search(rf"^\s*{re.escape(name)}\s+[0-9a-f]{{12}}\s+clone\s+(\w+)\s+(\d+\.\d)%",
                  screen, re.M)
    return (m.group(1), float(m.group(2))) if m else None


def summary_percent(screen: str) -> float | None:
    """The percentage in the summary line of the transfer screen."""
    m = re.search(r"^\s*clone\s+\w+\s+(\d+\.\d)%\s+\S+ \S+ / \S+ \S+\s+\d+/\d+ files", screen, re.M)
    return float(m.group(1)) if m else None


FILE_ROW = re.compile(r"^\s*(part\d\.bin)\s+\d+(?:\.\d)? MB\s+([█░]{10})\s+(\d+\.\d)%\s*$", re.M)


def file_rows(screen: str) -> dict[str, float]:
    return {m.group(1): float(m.group(3)) for m in FILE_ROW.finditer(screen)}


def listed(home: Path) -> tuple[str, float] | None:
    """(state, percent) of the clone in `dattui list`."""
    p = run(home, "list")
    m = re.search(r"^clone\s+(\w+)\s+(\d+\.\d)%", p.stdout, re.M)
    return (m.group(1), float(m.group(2))) if m else None


# ---- the test ------------------------------------------------------------------------

@pytest.fixture
def world(tmp_path):
    """Homes, data and a tmux server; everything started is ended afterwards."""
    w = {
        "A": tmp_path / "home-share",
        "B": tmp_path / "home-clone",
        "src": tmp_path / "frog-genomes",
        "dst": tmp_path / "frog-clone",
        "tmux": Tmux(tmp_path),
    }
    for home in (w["A"], w["B"]):
        env(home)  # DATTUI_HOME with a config that keeps the DHT off
    try:
        yield w
    finally:
        w["tmux"].kill()
        for home in (w["A"], w["B"]):
            if daemon_running(home):
                run(home, "stop", timeout=30)
            pid_file = home / "daemon.pid"
            deadline = time.monotonic() + 15
            while daemon_running(home) and time.monotonic() < deadline:
                time.sleep(0.1)
            if daemon_running(home):  # did not stop: end the one we started
                try:
                    os.kill(int(pid_file.read_text()), 9)
                except (OSError, ValueError):
                    pass
        # hundreds of MB: do not leave them in pytest's kept temporary folders
        shutil.rmtree(w["src"], ignore_errors=True)
        shutil.rmtree(w["dst"], ignore_errors=True)


def test_dashboard_in_tmux_watches_a_real_transfer(world):
    A, B, src, dst, tmux = world["A"], world["B"], world["src"], world["dst"], world["tmux"]
    make_dataset(src)
    session = "dash"

    def diagnose() -> str:
        parts = [f"--- screen of {session!r} ---", tmux.screen(session)]
        for name, home in (("share", A), ("clone", B)):
            log = home / "daemon.log"
            text = log.read_text(errors="replace").strip() if log.exists() else ""
            if text:
                parts += [f"--- {name} daemon.log (end) ---", text[-3000:]]
        try:
            parts += ["--- clone daemon log ---", "\n".join(call(B, "logs", limit=30))]
        except Exception as exc:  # the daemon may be gone: that is what we diagnose
            parts.append(f"(no clone daemon log: {exc})")
        return "\n".join(parts)

    # -- A: a real daemon sharing the folder, held back for now
    p = run(A, "share", src, "--background", "--no-lan", "--port", "0", timeout=120)
    assert p.returncode == 0, p.stderr
    link = p.stdout.split()[0]
    assert link.startswith("dat://")
    port = call(A, "ping")["port"]
    assert port > 0
    share_tid = next(s.tid for s in asyncio.run(_status(A)))
    call(A, "pause", tid=share_tid)

    # -- B: a second daemon holding the clone
    p = run(B, "clone", link, dst, "--background", "--no-lan", "--port", "0",
            "--peer", f"127.0.0.1:{port}")
    assert p.returncode == 0, p.stderr
    clone_pid = call(B, "ping")["pid"]

    # -- the dashboard of B, in tmux: the clone's row appears
    tmux.start(session, cmd(), env(B))
    wait_until("the clone's row on the dashboard", lambda: row_of(tmux.screen(session), dst.name),
               START, diagnose)
    # a capture can land in the middle of a redraw: wait for a whole screen
    wait_until("the title and the footer", lambda: (lambda sc: "shares and clones" in sc
                                                    and "q Quit" in sc)(tmux.screen(session)),
               START, diagnose)

    # -- let the data flow: the percentage on the row goes up between two captures
    call(A, "resume", tid=share_tid)

    def percent_on_row() -> float:
        row = row_of(tmux.screen(session), dst.name)
        return row[1] if row else 0.0

    first = wait_until("the clone's progress to start", lambda: percent_on_row() or None,
                       START, diagnose, interval=0.1)
    second = wait_until(f"the clone's progress to move past {first}%",
                        lambda: (v := percent_on_row()) > first and v, START, diagnose,
                        interval=0.1)
    assert second > first

    # -- Enter opens the clone: its peer and its files, each with a progress bar
    tmux.keys(session, "Enter")

    def transfer_screen() -> str | None:
        s = tmux.screen(session)
        ok = (f"127.0.0.1:{port}" in s and "peers (1)" in s and "direct" in s
              and summary_percent(s) is not None and len(file_rows(s)) == FILES)
        return s if ok else None

    screen = wait_until("the transfer screen with its peer and files", transfer_screen,
                        START, diagnose)
    assert f"{FILES} files" in screen, screen
    before = summary_percent(screen)
    files_before = file_rows(screen)
    assert set(files_before) == {f"part{i}.bin" for i in range(FILES)}

    # ... and they move (or the download already ended: a fast machine)
    def moved() -> bool:
        s = tmux.screen(session)
        now, files = summary_percent(s), file_rows(s)
        if now is None or len(files) != FILES:
            return False
        return (now > before and sum(files.values()) > sum(files_before.values())) or now == 100.0

    wait_until("the transfer screen's progress to move", moved, START, diagnose, interval=0.1)

    # -- q closes the dashboard and says the transfers go on
    tmux.keys(session, "q")
    status = wait_until("the dashboard to exit", lambda: (c := tmux.exited(session)) is not None
                        and (c,), START, diagnose)[0]
    screen = tmux.screen(session)
    assert status == 0, screen
    assert screen.count("keep running") == 1, screen  # one goodbye, in one wording

    # -- the daemon still runs and the transfer goes on without the dashboard
    assert daemon_running(B)
    assert call(B, "ping")["pid"] == clone_pid
    state, pct = wait_until("the clone in `dattui list`", lambda: listed(B), START, diagnose)
    if pct < 100.0:
        wait_until(f"`dattui list` to show progress past {pct}%",
                   lambda: (now := listed(B)) and (now[1] > pct), START, diagnose)

    # -- a second `dattui` attaches to the same daemon: the row is there
    session = "dash2"
    tmux.start(session, cmd(), env(B))
    wait_until("the clone's row on the second dashboard",
               lambda: row_of(tmux.screen(session), dst.name), START, diagnose)
    assert call(B, "ping")["pid"] == clone_pid  # attached, not a new daemon
    tmux.keys(session, "q")
    assert wait_until("the second dashboard to exit",
                      lambda: (c := tmux.exited(session)) is not None and (c,),
                      START, diagnose)[0] == 0

    # -- the download completes, identical to the source
    wait_until("the download to finish",
               lambda: (now := listed(B)) and now[1] == 100.0 and now[0] in ("seeding", "done"),
               TRANSFER, diagnose, interval=0.5)
    for i in range(FILES):
        name = f"part{i}.bin"
        assert digest(dst / name) == digest(src / name), name

    # -- `dattui stop` ends both daemons
    for home in (A, B):
        p = run(home, "stop", timeout=30)
        assert p.returncode == 0, p.stderr
        wait_until("the daemon to stop", lambda: not daemon_running(home), 20, diagnose)


async def _status(home: Path):
    client = await DaemonClient.connect(home)
    try:
        return await client.status()
    finally:
        await client.close()
