"""What a version change and the end of a clone do to the tree on disk.

A clone holds exactly the signed version it reports: files a newer version
no longer names are removed (only files this clone wrote: the old signed
manifest names them; never anything else), every file has the new version's
size (TargetFolder.file_fd cuts it when opened), and `done` is reported only
when every file on disk has its manifest size.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from . import manifest as mf
from .clonefs import TargetFolder, disk_error


def remove_left_behind(target: TargetFolder, old: mf.Manifest, new: mf.Manifest,
                       wants: Callable[[str], bool] | None = None) -> list[str]:
    """Remove the files and (empty) folders of `old` that `new` does not name
    (of the files this clone selected and so wrote, all when `wants` is None)."""
    keep = {e.path: e.kind for e in new.entries}
    removed = []
    for e in old.entries:
        if e.kind == mf.Kind.FILE and keep.get(e.path) != mf.Kind.FILE \
                and (wants is None or wants(e.path)):
            target.remove_file(e.path)
            removed.append(e.path)
    dirs = [e.path for e in old.entries if e.kind == mf.Kind.DIR and e.path not in keep]
    for rel in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        parent, _, name = rel.rpartition("/")
        try:
            os.rmdir(name, dir_fd=target.dir_fd(parent, create=False))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise disk_error(exc, rel) from None
    return removed


def sizes_differ(target: TargetFolder, m: mf.Manifest,
                 wants: Callable[[str], bool] | None = None) -> list[str]:
    """Paths of files (those `wants`, all when None) whose size on disk is not
    the manifest's (empty: the tree matches)."""
    bad = []
    for e in m.entries:
        if e.kind == mf.Kind.FILE and (wants is None or wants(e.path)):
            st = target.stat_file(e.path)
            if st is None or st.st_size != e.size:
                bad.append(e.path)
    return bad
