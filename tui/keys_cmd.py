"""`dattui keys`: show a share's link, export and import its secret key."""

from __future__ import annotations

import sys
from pathlib import Path

from dattui.engine import keys, keystore
from dattui.engine.errors import UsageError
from dattui.engine.statedir import state_dir, write_private
from dattui.engine.store import ShareDB, db_path


def _share_public(folder: Path) -> bytes:
    folder = folder.resolve()
    if not db_path(folder).exists():
        raise UsageError(f"{folder} is not shared yet: run `dattui share {folder}` first")
    db = ShareDB(folder, create=False)
    try:
        public = db.get("public_key")
    finally:
        db.close()
    if public is None:
        raise UsageError(f"{folder} has no share key recorded: run `dattui share {folder}`")
    return public


def run_keys(args) -> int:
    state = state_dir()
    cmd = args.keys_command or "show"
    if cmd == "show":
        public = _share_public(Path(getattr(args, "dir", ".") or "."))
        key = keystore.load(public, state)
        print(keys.format_link(public))
        print("secret key: " + ("on this machine" if key else "NOT on this machine (read-only)"),
              file=sys.stderr)
        return 0
    if cmd == "list":
        listed = keystore.list_keys(state)
        for key in listed:
            where = keystore.folders_of(key, state)
            print(f"{key.link}  {', '.join(where) if where else '(no folder shared here yet)'}")
        if not listed:
            print("no share keys on this machine: `dattui share DIR` makes one", file=sys.stderr)
        return 0
    if cmd == "export":
        public = _share_public(Path(args.dir))
        key = keystore.load(public, state)
        if key is None:
            raise UsageError("this share's secret key is not on this machine: nothing to export")
        text = keystore.export_text(key)
        if args.output:
            write_private(Path(args.output), text.encode())
            print(f"secret key of {key.link} written to {args.output} (mode 0600); "
                  "anyone holding it can publish new versions", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    if cmd == "import":
        if args.file == "-":
            key = keystore.import_text(sys.stdin.read(), source="stdin")
            keystore.save(key, state)
        else:
            key = keystore.import_file(Path(args.file), state)
        print(key.link)
        return 0
    raise UsageError(f"unknown keys command {cmd!r}")
