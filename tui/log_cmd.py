"""`dattui log [DIR|LINK]`: the signed versions a shared or cloned folder has
had, oldest first: number, when this folder got it, files added, changed and
removed against the version before, and its size."""

from __future__ import annotations

import json
import time
from pathlib import Path

from dattui.engine.errors import UsageError
from dattui.engine.keys import link_label, parse_link
from dattui.engine.store import db_path
from dattui.engine.versionlog import read

from .clone_target import existing_clone
from .progress import format_bytes


def _folder(target: str | None) -> Path:
    if target is None:
        return Path(".")
    if target.startswith("dat://") or (len(target) == 64 and not Path(target).exists()):
        public = parse_link(target)
        found = existing_clone(Path("."), public)
        if found is None:
            raise UsageError(f"no clone of {link_label(public)} in this folder: give the "
                             "clone's folder, `dattui log DIR`")
        return found
    return Path(target)


def run_log(args) -> int:
    folder = _folder(args.target)
    if not db_path(folder).is_file():
        raise UsageError(f"{folder.resolve()} is neither shared nor cloned here: give the folder "
                         "of a share or clone")
    rows = read(folder)
    if args.json:
        for r in rows:
            print(json.dumps({"event": "version", "version": r.version, "time": round(r.seen_at, 3),
                              "files": r.files, "bytes": r.bytes, "added": r.added,
                              "changed": r.changed, "removed": r.removed,
                              "bytes_changed": r.bytes_changed}))
        return 0
    if not rows:
        print(f"no versions recorded in {folder.resolve()} yet")
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.seen_at))
        print(f"v{r.version:<4} {when}  +{r.added} ~{r.changed} -{r.removed} files "
              f"({format_bytes(r.bytes_changed)} new)  {r.files} files, {format_bytes(r.bytes)}")
    return 0
