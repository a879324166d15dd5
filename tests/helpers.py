"""Shared test helpers: datasets, tree comparison, in-process engines."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from dattui.engine.api import Engine, EngineOptions


def make_tree(root: Path, seed: int = 1) -> Path:
    """A small dataset with every kind of entry a clone must reproduce."""
    import random
    rng = random.Random(seed)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "emptydir").mkdir()
    (root / "big.bin").write_bytes(rng.randbytes(700_000))  # several 256 KiB blocks
    (root / "sub" / "a.txt").write_text("hello\n")
    (root / "sub" / "deeper" / "b.csv").write_bytes(rng.randbytes(262144))  # exactly one block
    (root / "empty.txt").write_bytes(b"")
    (root / "exec.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "exec.sh", 0o755)
    os.chmod(root / "sub" / "a.txt", 0o600)
    (root / ".hidden").write_text("secret")
    for i, p in enumerate(sorted(root.rglob("*"))):
        os.utime(p, ns=(1_600_000_000_000_000_000 + i * 1_000_000_007,) * 2, follow_symlinks=False)
    return root


def tree(root: Path) -> dict[str, tuple]:
    """path -> (kind, mode, mtime_ns, content) for everything but .dat/."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == ".dat" or rel.startswith(".dat/"):
            continue
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            r = os.path.relpath(p, root)
            if r == ".dat":
                continue
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                out[r] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, None)
            elif stat.S_ISLNK(st.st_mode):
                out[r] = ("link", 0, 0, os.readlink(p))
            else:
                out[r] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, p.read_bytes())
    return out


def visible(t: dict) -> dict:
    return {k: v for k, v in t.items() if not any(part.startswith(".") for part in k.split("/"))
            and v[0] != "link"}


def options(state: Path, **kw) -> EngineOptions:
    kw.setdefault("lan", False)
    kw.setdefault("port", 0)
    kw.setdefault("host", "127.0.0.1")
    return EngineOptions(state=state, **kw)


async def engine(state: Path, **kw) -> Engine:
    state.mkdir(parents=True, exist_ok=True)
    e = Engine(options(state, **kw))
    await e.start()
    return e


async def until(cond, timeout: float = 20.0) -> None:
    """Wait (polling every 20 ms) until `cond()` holds; AssertionError after `timeout`."""
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")
