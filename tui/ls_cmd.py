"""`dattui ls LINK`: a share's files and sizes from its signed manifest,
without fetching any data."""

from __future__ import annotations

import json

from dattui.engine import manifest as mf
from dattui.engine.api import Engine

from .progress import _safe, format_bytes
from .transfer_cmds import engine_options


async def run_ls(args, cfg) -> int:
    from dattui.engine.keys import parse_link
    parse_link(args.link)  # a malformed link fails before any socket
    engine = Engine(engine_options(args, cfg))
    await engine.start()
    try:
        timeout = args.timeout if args.timeout is not None else cfg.clone.find_timeout
        m = await engine.list_files(args.link, peers=args.peer or [], timeout=timeout)
    finally:
        await engine.close()
    files = [e for e in m.entries if e.kind == mf.Kind.FILE]
    if args.json:
        for e in files:
            print(json.dumps({"path": e.path, "size": e.size, "mtime_ns": e.mtime_ns,
                              "root": e.root.hex()}))
        print(json.dumps({"event": "listed", "name": m.name, "version": m.version,
                          "files": len(files), "bytes": m.total_bytes}))
        return 0
    width = max((len(format_bytes(e.size)) for e in files), default=0)
    for e in files:
        print(f"{format_bytes(e.size):>{width}}  {_safe(e.path, 4096)}")
    print(f"{_safe(m.name)!s}, version {m.version}: {len(files)} files, {format_bytes(m.total_bytes)}")
    return 0
