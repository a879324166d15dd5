"""One owner per folder: a share or a clone holds an exclusive `flock` on
`.dat/lock` in its folder for as long as it runs, and writes who it is
(pid and command) into the file, so a second process on the same folder is
refused with a message that names the first. The kernel drops the lock when
the owner exits, however it exits; the file itself stays (removing it would
race with a process that has just opened it)."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from .errors import UsageError
from .store import DB_DIR

LOCK_NAME = "lock"


def describe_self() -> str:
    """Who this process is, in words a user can act on."""
    argv = list(sys.argv)
    first = os.path.basename(argv[0]) if argv else ""
    if "daemon" in (argv[0] if argv else ""):
        return f"pid {os.getpid()}: the dattui daemon (`dattui stop` ends it)"
    if first in ("-c", "-m", "__main__.py", "") or first.startswith("python"):
        first = "dattui"
    words = " ".join([first, *argv[1:]])
    return f"pid {os.getpid()}: {words[:300]}"


class FolderBusy(UsageError):
    """Another process owns the folder."""


class FolderLock:
    def __init__(self, fd: int, folder: Path) -> None:
        self.fd = fd
        self.folder = folder

    @classmethod
    def acquire(cls, folder: Path) -> "FolderLock":
        d = folder / DB_DIR
        try:
            d.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except OSError as exc:
            raise UsageError(f"cannot lock {folder}: {exc.strerror}; choose a folder you can "
                             "write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1024, 0).decode("utf-8", "replace").strip() or "pid unknown"
            os.close(fd)
            raise FolderBusy(f"{folder} is in use by another dattui process ({holder}); "
                             "stop that one first, or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (describe_self() + "\n").encode(), 0)
        return cls(fd, folder)

    def release(self) -> None:
        if self.fd >= 0:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)  # closing drops the flock
            self.fd = -1
