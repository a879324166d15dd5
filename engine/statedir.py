"""Where per-user state lives: keys, node identity, databases, sockets.

`DATTUI_HOME` relocates all of it, so several nodes can run on one machine.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("DATTUI_HOME"):
        base = Path(env["DATTUI_HOME"])
    elif env.get("XDG_STATE_HOME"):
        base = Path(env["XDG_STATE_HOME"]) / "dattui"
    else:
        base = Path(env.get("HOME", "~")).expanduser() / ".local" / "state" / "dattui"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (mode 0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
