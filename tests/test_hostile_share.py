"""A real `dattui clone` against a scripted misbehaving share (tests/evil_share.py,
which holds the share's key and signs what it likes): every case ends within
a bound, with the expected exit code and ONE line on stderr, no traceback,
and what was verified is kept (a re-run against an honest share fetches only
the rest)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli import run_clone
from helpers import tree

HERE = Path(__file__).resolve().parent
SEED = "07" * 32
BOUND = 60  # generous: every failing clone here ends in well under this

CONFIG = """[discovery]
dht = false
[clone]
find_timeout = {find}
stall_timeout = {stall}
peer_idle_timeout = 3
"""


class Evil:
    """tests/evil_share.py in a subprocess."""

    def __init__(self, data: Path, home: Path, *, mode="honest", version=5, extra="", port=0,
                 extra_json=""):
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(HERE / "evil_share.py"), SEED, str(data), "--mode", mode,
             "--version", str(version), "--extra", extra, "--port", str(port), "--home", str(home),
             "--extra-json", extra_json],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("evil share died: " + self.proc.stderr.read())
        first = json.loads(line)
        self.link, self.port, self.bytes = first["link"], first["port"], first["bytes"]

    def wait_tripped(self) -> None:
        assert json.loads(self.proc.stdout.readline()) == {"event": "tripped"}

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def world(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(5)
    (data / "a.bin").write_bytes(rng.randbytes(1_500_000))  # 6 blocks
    (data / "b.bin").write_bytes(rng.randbytes(900_000))    # 4 blocks
    (data / "sub").mkdir()
    (data / "sub" / "c.txt").write_bytes(b"c" * 1000)
    evils: list[Evil] = []

    class World:
        path = tmp_path
        dst = tmp_path / "dst"

        def share(self, **kw) -> Evil:
            e = Evil(data, tmp_path / "evil-home", **kw)
            evils.append(e)
            return e

        def clone(self, evil: Evil, *extra, stall=4, find=10, peer=None):
            home = tmp_path / f"clone-home-{stall}-{find}"
            home.mkdir(exist_ok=True)
            (home / "config.toml").write_text(CONFIG.format(stall=stall, find=find))
            started = time.monotonic()
            p, lines = run_clone(evil.link if evil else "dat://" + "ab" * 32, self.dst, home,
                                 "--peer", peer or f"127.0.0.1:{evil.port}", *extra,
                                 timeout=BOUND + 30)
            assert time.monotonic() - started < BOUND
            return p, lines

        @staticmethod
        def one_line(p) -> str:
            assert "Traceback" not in p.stderr, p.stderr
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("dattui: "), p.stderr
            return lines[0]

        def finish_honestly(self, total_before: int) -> None:
            """A re-run against an honest share fetches only what is missing."""
            honest = self.share(mode="honest")
            p, lines = self.clone(honest)
            assert p.returncode == 0, p.stderr
            done = lines[-1]
            assert done["event"] == "done"
            assert 0 < done["bytes_received"] <= honest.bytes - total_before
            got = {k: v[3] for k, v in tree(self.dst).items() if v[0] == "file"}
            want = {k: v[3] for k, v in tree(data).items() if v[0] == "file"}
            assert got == want

        def have(self, lines) -> int:
            prog = [l for l in lines if l.get("event") == "progress"]
            return prog[-1]["bytes_have"] if prog else 0

    yield World()
    for e in evils:
        e.stop()


@pytest.mark.parametrize("mode,words", [
    # the connection stays up, PINGs answered: still connected, or dropped already
    ("stall:3", ("stopped sending", "sent no data")),
    ("half:3", ("answered nothing", "stopped sending")),  # a DATA frame half sent, then silence
    ("bad:3", ("does not verify",)),
    ("other:3", ("does not verify",)),
    ("oversize:3", ("broke the protocol",)),
])
def test_misbehaving_share_ends_with_exit_3_and_keeps_what_was_verified(world, mode, words):
    evil = world.share(mode=mode)
    p, lines = world.clone(evil)
    assert p.returncode == 3, p.stderr
    line = world.one_line(p)
    assert any(w in line for w in words) and "giving up" in line, line
    kept = world.have(lines)
    evil.stop()
    world.finish_honestly(kept)


def test_only_an_older_version_on_offer_ends_with_exit_3_naming_it(world):
    newer = world.share(mode="stall:2", version=5)
    p, lines = world.clone(newer)
    assert p.returncode == 3
    newer.stop()
    kept = world.have(lines)
    older = world.share(mode="honest", version=4)
    p, _ = world.clone(older)
    assert p.returncode == 3
    assert "version 4, older than version 5" in world.one_line(p)
    older.stop()
    world.finish_honestly(kept)


@pytest.mark.parametrize("extra,words", [
    ("long-name", "longer than the 255 bytes"),
    ("deep", "deeper than the 256 allowed"),
    ("control", "control character"),
    ("escape", "control character"),
])
def test_hostile_manifest_is_refused_with_exit_4_before_anything_is_written(world, extra, words):
    evil = world.share(extra=extra)
    p, _ = world.clone(evil)
    assert p.returncode == 4, p.stderr
    line = world.one_line(p)
    assert words in line and "\x1b" not in line and "\n" not in line.strip()
    # nothing written: a clone that took no manifest leaves no folder it made
    assert not world.dst.exists()


@pytest.mark.parametrize("extra,names", [("collide", {"Readme.txt", "README.txt"}),
                                         ("nfc", {"caf\u00e9.txt", "cafe\u0301.txt"})])
def test_names_equal_under_folding_stay_apart_on_a_filesystem_that_keeps_them(world, extra, names):
    from dattui.engine import names as nm
    fd = os.open(world.path, os.O_RDONLY)
    try:
        if nm.folding(fd) != (False, False):
            pytest.skip("this filesystem folds case or normalisation")
    finally:
        os.close(fd)
    evil = world.share(extra=extra)
    p, _ = world.clone(evil)
    assert p.returncode == 0, p.stderr
    assert names <= set(os.listdir(world.dst))  # two files, never merged


def test_a_share_restarted_on_the_same_port_is_reconnected_within_seconds(world):
    first = world.share(mode="stall:3")
    home = world.path / "clone-home-restart"
    home.mkdir()
    (home / "config.toml").write_text(CONFIG.format(stall=120, find=10))
    from cli import cmd, env
    clone = subprocess.Popen(cmd("clone", first.link, world.dst, "--json", "--no-lan", "--peer",
                                 f"127.0.0.1:{first.port}"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(home))
    try:
        first.wait_tripped()
        first.stop(signal.SIGKILL)  # no CONNECTION_CLOSE: the clone must notice by itself
        again = world.share(mode="honest", port=first.port)
        restarted = time.monotonic()
        out, err = clone.communicate(timeout=BOUND)
        # well under aioquic's 30 s idle timeout, which is all main had
        assert time.monotonic() - restarted < 20
        assert clone.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["event"] == "done"
    finally:
        if clone.poll() is None:
            clone.kill()
            clone.wait()


def test_first_contact_is_authentication_not_the_manifest(world):
    """A peer that authenticates and is slow with its manifest (a 2,000,000-entry
    one, say) is no 'no peer answered' at find_timeout; the clone says so only
    after stall_timeout, naming what it waits for."""
    evil = world.share(mode="mute")
    p, _ = world.clone(evil, find=1, stall=4)
    assert p.returncode == 3
    line = world.one_line(p)
    assert "sent no manifest" in line and "no peer sharing this link answered" not in line


def test_peer_with_nothing_there_says_nothing_answered_at_host_port(world):
    p, _ = world.clone(None, peer="127.0.0.1:9", find=2)
    assert p.returncode == 3
    assert world.one_line(p).startswith("dattui: nothing answered at 127.0.0.1:9 ")


async def test_sync_clone_keeps_waiting_and_shows_why(world):
    """--sync (and the daemon, whose clones are --sync) never give up: the
    status says what it waits for, and it continues once a peer delivers."""
    import asyncio
    from helpers import engine
    evil = world.share(mode="stall:2")
    e = await engine(world.path / "sync-home", stall_timeout=1.5, peer_idle_timeout=1.0)
    try:
        tid = await e.clone(evil.link, world.dst, sync=True, peers=[f"127.0.0.1:{evil.port}"])
        swarm = e.transfer(tid)
        for _ in range(int(BOUND / 0.05)):
            if swarm.message.startswith("waiting: "):
                break
            await asyncio.sleep(0.05)
        assert swarm.message.startswith("waiting: ") and not swarm.failed
        assert e.status()[0].message == swarm.message
        evil.stop()
        world.share(mode="honest", port=evil.port)
        await asyncio.wait_for(e.wait(tid), BOUND)
        assert swarm.message == "" and swarm.completed
    finally:
        await e.close()
