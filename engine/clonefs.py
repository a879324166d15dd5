"""Writing a clone's files without ever leaving the target folder.

Every path is opened one component at a time, relative to a directory file
descriptor, with O_NOFOLLOW: a symlink planted anywhere in the target (or a
file where a folder should be) stops the clone with a clear error instead of
redirecting a write. Manifest paths are already checked by manifest.decode
(no '..', no absolute paths); this is the second line.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict
from pathlib import Path

from .errors import DiskError, UnsafeManifest

OPEN_FILES = 64
OPEN_DIRS = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def disk_error(exc: OSError, what: str) -> DiskError:
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return DiskError(f"disk full while writing {what}: free some space and run the same "
                         "command again (everything verified so far is kept)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DiskError(f"cannot write {what}: {exc.strerror}; choose a folder you can write to "
                         "or fix its permissions, then run the same command again")
    return DiskError(f"cannot write {what}: {exc.strerror}; run the same command again "
                     "once this is fixed (everything verified so far is kept)")


class TargetFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            self.root_fd = os.open(root, _DIR_FLAGS)
        except OSError as exc:
            raise disk_error(exc, str(root)) from None
        self._dirs: OrderedDict[str, int] = OrderedDict()
        self._files: OrderedDict[str, int] = OrderedDict()

    # ---- folders -------------------------------------------------------------------
    def _unsafe(self, path: str, what: str) -> UnsafeManifest:
        return UnsafeManifest(f"refusing to write {path!r}: {what} in the target folder "
                              f"{self.root}; move it away and run the same command again")

    def dir_fd(self, rel: str, create: bool = True) -> int:
        """fd of folder `rel` ('' is the root), created as needed, never through a symlink."""
        if not rel:
            return self.root_fd
        fd = self._dirs.get(rel)
        if fd is not None:
            self._dirs.move_to_end(rel)
            return fd
        # down from the deepest folder already open, one level at a time (a loop,
        # not a recursion: a manifest may nest deeply)
        parts = rel.split("/")
        i, fd = len(parts) - 1, None
        while i > 0:
            fd = self._dirs.get("/".join(parts[:i]))
            if fd is not None:
                break
            i -= 1
        if fd is None:
            fd = self.root_fd
        for j in range(i, len(parts)):
            fd = self._open_dir(fd, parts[j], "/".join(parts[:j + 1]), create)
        return fd

    def _open_dir(self, pfd: int, name: str, rel: str, create: bool) -> int:
        """Open (and create) folder `name` in the folder open as `pfd`; cached as `rel`."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, 0o755, dir_fd=pfd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise disk_error(exc, rel) from None
            fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._unsafe(rel, "a symlink or a file stands where a folder belongs") from None
            raise disk_error(exc, rel) from None
        self._dirs[rel] = fd
        self._dirs.move_to_end(rel)
        if len(self._dirs) > OPEN_DIRS:  # the parent may go: it is not used again
            _, old = self._dirs.popitem(last=False)
            os.close(old)
        return fd

    def check_existing(self, rel: str, is_dir: bool) -> None:
        """Refuse when `rel` exists as a symlink (or the wrong kind) in the target."""
        parent, _, name = rel.rpartition("/")
        try:
            pfd = self.dir_fd(parent, create=False)
        except FileNotFoundError:
            return
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        import stat as st_
        if st_.S_ISLNK(st.st_mode):
            raise self._unsafe(rel, "a symlink stands there")
        if is_dir and not st_.S_ISDIR(st.st_mode):
            raise self._unsafe(rel, "a file stands where a folder belongs")
        if not is_dir and not st_.S_ISREG(st.st_mode):
            raise self._unsafe(rel, "something other than a regular file stands there")

    # ---- files ---------------------------------------------------------------------
    def file_fd(self, rel: str, size: int) -> int:
        fd = self._files.get(rel)
        if fd is not None:
            self._files.move_to_end(rel)
            return fd
        parent, _, name = rel.rpartition("/")
        pfd = self.dir_fd(parent)
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=pfd)
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._unsafe(rel, "a symlink stands there") from None
            raise disk_error(exc, rel) from None
        self._files[rel] = fd
        if len(self._files) > OPEN_FILES:
            _, old = self._files.popitem(last=False)
            os.close(old)
        return fd

    def write(self, rel: str, size: int, offset: int, data) -> None:
        fd = self.file_fd(rel, size)
        try:
            n = os.pwrite(fd, data, offset)
            if n != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            raise disk_error(exc, rel) from None

    def finish_file(self, rel: str, size: int, mode: int, mtime_ns: int) -> None:
        fd = self.file_fd(rel, size)
        try:
            os.fchmod(fd, mode & 0o777)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        except OSError as exc:
            raise disk_error(exc, rel) from None
        os.close(self._files.pop(rel))

    def open_read(self, rel: str) -> int:
        """A read-only fd of a file in the target, never through a symlink."""
        parent, _, name = rel.rpartition("/")
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=self.dir_fd(parent, create=False))

    def stat_file(self, rel: str) -> os.stat_result | None:
        parent, _, name = rel.rpartition("/")
        try:
            pfd = self.dir_fd(parent, create=False)
            return os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except OSError:
            return None

    def finish_dir(self, rel: str, mode: int, mtime_ns: int) -> None:
        fd = self.dir_fd(rel)
        try:
            os.fchmod(fd, mode & 0o777)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        except OSError as exc:
            raise disk_error(exc, rel) from None

    def close(self) -> None:
        for d in (self._files, self._dirs):
            for fd in d.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            d.clear()
        try:
            os.close(self.root_fd)
        except OSError:
            pass
