"""Seeded fuzzing, brief: decoders never raise anything but their own error,
and a real clone handed a seeded hostile manifest ends in bounded time with
exit 0 or 4, at most one stderr line, no traceback, nothing outside its
target. scripts/fuzz_seeded.py runs the same generators for longer (atheris: tests/test_fuzz_decoders.py)."""

from __future__ import annotations

import json
import os
import random

import pytest

import fuzzgen
from dattui.engine import manifest as mf
from dattui.engine import wire
from dattui.engine.errors import ProtocolError, UnsafeManifest
from test_hostile_share import world  # noqa: F401  (the fixture)


@pytest.mark.parametrize("seed", range(3))
def test_frame_decoder_raises_only_protocol_errors(seed):
    rng = random.Random(seed)
    for _ in range(2000):
        data = fuzzgen.frame_stream(rng)
        d = wire.FrameDecoder()
        step = rng.randrange(1, 64)
        try:
            for i in range(0, len(data), step):
                d.feed(data[i:i + step])
        except ProtocolError:
            pass


@pytest.mark.parametrize("seed", range(3))
def test_manifest_decoder_raises_only_unsafe_manifest(seed):
    rng = random.Random(1000 + seed)
    for _ in range(1000):
        try:
            mf.decode(fuzzgen.manifest_bytes(rng))
        except UnsafeManifest:
            pass


def _snapshot(root, skip):
    """Every path under `root` but those under `skip` (no recursion: trees may be deep)."""
    out, stack = set(), [root]
    while stack:
        d = stack.pop()
        for entry in os.scandir(d):
            if entry.path == str(skip):
                continue
            out.add(entry.path)
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return out


@pytest.mark.parametrize("seed,nasty", [(0, 0.0), (1, 0.0), (2, 0.01), (3, 0.15), (4, 0.3)])
def test_real_clone_of_a_seeded_hostile_manifest_ends_cleanly(world, seed, nasty):  # noqa: F811
    rng = random.Random(seed)
    paths = fuzzgen.hostile_paths(rng, 8, nasty)
    extra = [[rng.choice(["file", "dir"]), p] for p in paths]
    evil = world.share(extra_json=json.dumps(extra))
    before = _snapshot(world.path, world.dst)
    p, _ = world.clone(evil)
    assert p.returncode in (0, 4), p.stderr
    assert "Traceback" not in p.stderr
    if p.returncode == 4:
        world.one_line(p)
        assert not world.dst.exists()  # refused before anything was written: nothing left
    after = _snapshot(world.path, world.dst)
    assert after - before <= {str(world.path / d) for d in os.listdir(world.path)
                              if d.startswith("clone-home")} | {
        p for p in after if "/clone-home" in p}  # only the clone's own state appears


def test_seeded_script_runs():
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "scripts" / "fuzz_seeded.py"
    p = subprocess.run([sys.executable, str(script), "seeded", "--seconds", "1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "no finding" in p.stdout, p.stderr
