"""A large signed file list shows its download: ManifestProgressed events from
the first part to the whole, and a line on the terminal."""

from __future__ import annotations

import io

from rich.console import Console

from dattui.engine import clone as clone_mod
from dattui.engine.events import ManifestProgressed, Role
from dattui.tui.jsonout import event_object
from dattui.tui.progress import ProgressView


def test_parts_of_a_large_manifest_are_reported(monkeypatch, tmp_path):
    import asyncio

    from dattui.engine import wire
    from dattui.engine.store import CloneDB

    events = []

    async def run():
        swarm = clone_mod.CloneSwarm(b"\1" * 32, tmp_path / "dst", CloneDB(tmp_path / "dst"),
                                     events.append, durable=False)

        class Peer:
            app: dict = {}
        step = clone_mod.MANIFEST_PROGRESS_STEP
        total = 3 * step + 10
        off = 0
        while off < total:
            chunk = b"x" * min(256 * 1024, total - off)
            swarm._on_manifest_part(Peer(), wire.ManifestPart(2, total, off, chunk))
            off += len(chunk)
        await swarm.close()
        return total, step

    (tmp_path / "dst").mkdir()
    total, step = asyncio.run(run())
    got = [(e.received, e.total) for e in events if isinstance(e, ManifestProgressed)]
    assert got[0] == (256 * 1024, total) and got[-1] == (total, total)
    assert len(got) == 5  # the first part, each 4 MiB step, the whole
    assert all(a[0] < b[0] for a, b in zip(got, got[1:]))


def test_the_terminal_and_json_show_it():
    out = io.StringIO()
    view = ProgressView(Console(file=out, width=100), Role.CLONE, 10)
    view.event(ManifestProgressed("t" * 16, 3, 60 * 2**20, 118 * 2**20))
    assert "receiving the list of files of version 3: 62.9 MB of 124 MB" in out.getvalue()
    assert event_object(ManifestProgressed("t", 3, 1, 2))["event"] == "manifest_progressed"
