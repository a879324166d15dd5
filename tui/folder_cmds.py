"""Dat's habits at the command line, for a folder that is already a share or a
clone: `dattui pull [DIR]` (update a clone once and exit), `dattui sync [DIR]`
(keep following and serving), `dattui status [DIR]` (what the folder is)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dattui.engine.errors import UsageError
from dattui.engine.folder_status import FolderStatus, read_status

from .progress import format_bytes


def _as_clone_args(args, st: FolderStatus, *, sync: bool) -> argparse.Namespace:
    """`pull`/`sync` of a clone are `clone LINK DIR` with the link it records."""
    ns = argparse.Namespace(**vars(args))
    ns.command, ns.link, ns.dir, ns.sync, ns.background = "clone", st.link, str(st.folder), sync, False
    return ns


async def run_pull(args, cfg) -> int:
    st = read_status(Path(args.dir or "."))
    if st.role != "clone":
        raise UsageError(f"{st.folder} is a share, not a clone: `dattui pull` updates clones "
                         "(a share publishes its changes by itself while `dattui share` runs)")
    from .transfer_cmds import run_clone
    return await run_clone(_as_clone_args(args, st, sync=False), cfg)


async def run_sync(args, cfg) -> int:
    st = read_status(Path(args.dir or "."))
    if st.role == "clone":
        from .transfer_cmds import run_clone
        return await run_clone(_as_clone_args(args, st, sync=True), cfg)
    from .transfer_cmds import run_share
    ns = argparse.Namespace(**vars(args))
    ns.command, ns.dir, ns.background = "share", str(st.folder), False
    return await run_share(ns, cfg)


async def _running_in_daemon(folder: Path) -> bool | None:
    """Whether the background daemon holds `folder` (None: no daemon runs)."""
    from dattui.engine.daemon.client import DaemonClient, daemon_running
    from dattui.engine.statedir import state_dir
    state = state_dir()
    if not daemon_running(state):
        return None
    try:
        client = await DaemonClient.connect(state)
    except OSError:
        return None
    try:
        return any(Path(s.path) == folder for s in await client.status())
    finally:
        await client.close()


async def run_status(args, cfg) -> int:
    st = read_status(Path(args.dir or "."))
    in_daemon = await _running_in_daemon(st.folder)
    if args.json:
        print(json.dumps({"path": str(st.folder), "role": st.role, "link": st.link,
                          "name": st.name, "version": st.version,
                          "files_total": st.files_total, "files_done": st.files_done,
                          "bytes_total": st.bytes_total, "bytes_have": st.bytes_have,
                          "complete": st.complete, "in_daemon": bool(in_daemon)}))
        return 0
    print(f"{st.folder}: a {st.role} of {st.link}")
    if st.version is None:
        print("  no signed version yet" + (" (the share has not finished hashing)"
                                           if st.role == "share" else " (nothing received)"))
    else:
        pct = 100.0 * st.bytes_have / st.bytes_total if st.bytes_total else 100.0
        what = "complete" if st.complete else f"{pct:.1f} % verified"
        print(f"  version {st.version}{f' of {st.name!r}' if st.name else ''}: "
              f"{st.files_total} files, {format_bytes(st.bytes_total)}; {what} "
              f"({st.files_done} of {st.files_total} files, {format_bytes(st.bytes_have)})")
    if in_daemon:
        print("  the background daemon serves it (`dattui list`)")
    if st.role == "clone" and not st.complete:
        print("  `dattui pull` fetches the rest", file=sys.stderr)
    return 0
