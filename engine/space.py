"""Before a clone writes a version: is there room for what is left to fetch?"""

from __future__ import annotations

import os
from collections.abc import Callable

from . import manifest as mf
from .clonefs import TargetFolder
from .errors import DiskError


def bytes_needed(target: TargetFolder, m: mf.Manifest, done: set[int],
                 wants: Callable[[str], bool] | None = None) -> int:
    """Bytes the files not yet complete (of those `wants`, all when None)
    still need on disk: each file's size less what it already has allocated
    there (blocks fetched before, an old version's bytes overwritten in place)."""
    need = 0
    for idx, e in enumerate(m.entries):
        if e.kind != mf.Kind.FILE or idx in done or e.size == 0:
            continue
        if wants is not None and not wants(e.path):
            continue
        st = target.stat_file(e.path)
        have = 0 if st is None else min(st.st_size, st.st_blocks * 512)
        need += max(0, e.size - have)
    return need


def check_free_space(target: TargetFolder, m: mf.Manifest, done: set[int], statvfs=os.statvfs,
                     wants: Callable[[str], bool] | None = None) -> None:
    need = bytes_needed(target, m, done, wants)
    if need == 0:
        return
    st = statvfs(target.root_fd)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise DiskError(
            f"disk full: not enough space in {target.root}: version {m.version} needs {need} more bytes "
            f"({need / 2**20:.1f} MiB), {free} bytes ({free / 2**20:.1f} MiB) are free; free "
            "some space or choose another folder, then run the same command again")
