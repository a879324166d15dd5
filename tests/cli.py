"""Run the real `dattui` command in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from installed import dattui_cmd

ROOT = Path(__file__).resolve().parent.parent


TEST_CONFIG = """# tests never reach the public DHT bootstrap nodes
[discovery]
dht = false
"""


def env(home: Path, **extra) -> dict:
    """Environment for a dattui process whose state lives in `home` (DHT off)."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (home / "config.toml").exists():
        (home / "config.toml").write_text(TEST_CONFIG)
    e = dict(os.environ)
    e["DATTUI_HOME"] = str(home)
    e.pop("PYTHONPATH", None)  # the installed dattui, never the checkout
    e.update(extra)
    return e


def cmd(*args) -> list[str]:
    return dattui_cmd(*args)


def follow_share(proc, timeout: float = 60) -> list[dict]:
    """Read a `share --json` process's lines until its first version is published
    (then it serves), and keep draining its stdout in a thread so it never blocks
    on a full pipe. Returns the list of lines, which keeps growing."""
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "link", first
    lines: list[dict] = [first]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("share exited: " + (proc.stderr.read() if proc.stderr else ""))
        lines.append(json.loads(line))
        if lines[-1]["event"] == "version_published":
            break

    def drain() -> None:
        for line in proc.stdout:
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass

    threading.Thread(target=drain, daemon=True).start()
    return lines


class ShareProcess:
    """`dattui share DIR --json` in the background; knows its link and port."""

    def __init__(self, folder: Path, home: Path, *extra, prefix: list[str] = (), lan: bool = False) -> None:
        lan_arg = [] if lan else ["--no-lan"]
        self.proc = subprocess.Popen([*prefix, *cmd("share", folder, "--json", *lan_arg, *extra)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env(home))
        self.lines = follow_share(self.proc)
        self.link, self.port = self.lines[0]["link"], self.lines[0]["port"]

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def run_clone(link: str, folder: Path, home: Path, *extra, timeout=60, prefix: list[str] = (),
              lan: bool = False):
    lan_arg = [] if lan else ["--no-lan"]
    p = subprocess.run([*prefix, *cmd("clone", link, folder, "--json", *lan_arg, *extra)],
                       capture_output=True, text=True, env=env(home), timeout=timeout)
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    return p, lines
