"""Writing a clone's files without ever leaving the target folder.

Every path is opened one component at a time, relative to a directory file
descriptor, with O_NOFOLLOW: a symlink planted anywhere in the target (or a
file where a folder should be) stops the clone with a clear error instead of
redirecting a write. Manifest paths are already checked by manifest.decode
(no '..', no absolute paths); this is the second line.

It also knows what is not yet durable: files written since the last `sync`,
files finished since (kept open until then), folders whose entries or
metadata changed. `sync` makes all of it durable; engine/durable.py says
when it is called and why.
"""

from __future__ import annotations

import ctypes
import errno
import os
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from pathlib import Path

from .errors import DiskError, UnsafeManifest

OPEN_FILES = 64
OPEN_DIRS = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# more dirty files than this: one syncfs(2) instead of an fsync each (and their fds
# closed). syncfs also writes out other programs' data on that file system, so it
# is the fallback that bounds open fds, not the rule: batches close well before
# (durable.FLUSH_FILES)
SYNCFS_OVER = 512
PARALLEL_OVER = 8   # more sync jobs than this run in SYNC_THREADS threads at once
SYNC_THREADS = 8


def _syncfs_call():
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    return fn


_SYNCFS = _syncfs_call()


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
        self._dirty: set[str] = set()        # files written since the last sync
        self._finished: dict[str, int] = {}  # finished files, open until synced
        self._dirty_dirs: set[str] = set()   # folders with new/removed entries or new metadata
        self._whole_fs = False               # so many dirty files that one syncfs(2) is due
        self.durable = True                  # False: sync does nothing (benchmarks only)

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
                self._dirty_dirs.add(rel.rpartition("/")[0])
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
            old_rel, old = self._dirs.popitem(last=False)
            if old_rel in self._dirty_dirs:  # its new entries reach the disk first
                self._fsync(old, old_rel)
                self._dirty_dirs.discard(old_rel)
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
        """fd of file `rel` open for writing, `size` bytes long: a file of
        another size (another version's) is cut or extended to `size` when
        opened, so no byte of another version survives past its end."""
        fd = self._files.get(rel)
        if fd is not None:
            self._files.move_to_end(rel)
            return fd
        fd = self._finished.pop(rel, None)
        if fd is None:
            parent, _, name = rel.rpartition("/")
            pfd = self.dir_fd(parent)
            flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                try:
                    fd = os.open(name, flags, dir_fd=pfd)
                except FileNotFoundError:
                    fd = os.open(name, flags | os.O_CREAT, 0o644, dir_fd=pfd)
                    self._dirty_dirs.add(parent)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._unsafe(rel, "a symlink stands there") from None
                raise disk_error(exc, rel) from None
        try:
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
                self._dirty.add(rel)
        except OSError as exc:
            os.close(fd)
            raise disk_error(exc, rel) from None
        self._files[rel] = fd
        if len(self._files) > OPEN_FILES:
            old_rel, old = next(iter(self._files.items()))
            if old_rel in self._dirty:
                self._fsync(old, old_rel, data_only=True)
                self._dirty.discard(old_rel)
            del self._files[old_rel]
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
        self._dirty.add(rel)

    def finish_file(self, rel: str, size: int, mode: int, mtime_ns: int) -> None:
        fd = self.file_fd(rel, size)
        try:
            os.fchmod(fd, mode & 0o777)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        except OSError as exc:
            raise disk_error(exc, rel) from None
        # open until the next sync, which makes its bytes and metadata durable
        self._finished[rel] = self._files.pop(rel)
        self._dirty.add(rel)
        if len(self._finished) > SYNCFS_OVER and _SYNCFS is not None:
            # many small files: one syncfs(2) will cover them, no need to keep their fds
            self._whole_fs = True
            for fd in self._finished.values():
                os.close(fd)
            self._finished.clear()

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
        self._dirty_dirs.add(rel)

    def remove_file(self, rel: str) -> None:
        """Remove a file of a version left behind (never through a symlink)."""
        for d in (self._files, self._finished):
            fd = d.pop(rel, None)
            if fd is not None:
                os.close(fd)
        self._dirty.discard(rel)
        parent, _, name = rel.rpartition("/")
        try:
            pfd = self.dir_fd(parent, create=False)
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            import stat as st_
            if st_.S_ISREG(st.st_mode):
                os.unlink(name, dir_fd=pfd)
                self._dirty_dirs.add(parent)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise disk_error(exc, rel) from None

    def forget_files(self) -> None:
        """Close every file open for writing (after a sync): the next write
        opens it again and sets its size for the version being written."""
        if self._dirty:
            raise RuntimeError("forget_files before sync")
        for d in (self._files, self._finished):
            for fd in d.values():
                os.close(fd)
            d.clear()

    # ---- durability ------------------------------------------------------------------
    def _fsync(self, fd: int, rel: str, data_only: bool = False) -> None:
        """Before an fd that is not durable yet is closed (LRU eviction)."""
        if not self.durable:
            return
        try:
            (os.fdatasync if data_only else os.fsync)(fd)
        except OSError as exc:
            raise disk_error(exc, rel or str(self.root)) from None

    @property
    def finished_open(self) -> int:
        """Finished files kept open until the next sync."""
        return len(self._finished)

    def take_dirty(self) -> list[tuple[int, str, str]]:
        """Everything not yet durable, as (fd, how, path) jobs for `sync_jobs`,
        which may run in another thread (how: "data" fdatasync, "full" fsync,
        "fs" syncfs): fds of files still open for writing and of folders are
        duplicated, finished files' fds handed over. Afterwards nothing here
        is dirty."""
        jobs: list[tuple[int, str, str]] = []
        try:
            if not self.durable or not (self._dirty or self._dirty_dirs or self._whole_fs):
                return jobs
            if self._whole_fs or len(self._dirty) + len(self._dirty_dirs) > SYNCFS_OVER \
                    and _SYNCFS is not None:
                return [(os.dup(self.root_fd), "fs", "")]
            for rel in self._dirty:
                fd = self._files.get(rel)
                if fd is not None:
                    jobs.append((os.dup(fd), "data", rel))
            for rel, fd in self._finished.items():
                jobs.append((fd, "full", rel))
            self._finished.clear()
            for rel in self._dirty_dirs:
                try:
                    jobs.append((os.dup(self.dir_fd(rel, create=False)), "full", rel))
                except FileNotFoundError:
                    pass
        except OSError as exc:
            sync_jobs(jobs, False)
            raise disk_error(exc, str(self.root)) from None
        finally:
            for fd in self._finished.values():
                os.close(fd)
            self._finished.clear()
            self._dirty.clear()
            self._dirty_dirs.clear()
            self._whole_fs = False
        return jobs

    def sync(self) -> None:
        """Make every write, finished file and folder change so far durable, now."""
        sync_jobs(self.take_dirty())

    def close(self) -> None:
        for fd in self._finished.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._finished.clear()
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


def _sync_one(job: tuple[int, str, str]) -> None:
    fd, how, rel = job
    if how == "fs":
        if _SYNCFS(fd) != 0:
            e = ctypes.get_errno()
            raise disk_error(OSError(e, os.strerror(e)), rel or ".")
        return
    try:
        (os.fdatasync if how == "data" else os.fsync)(fd)
    except OSError as exc:
        raise disk_error(exc, rel or ".") from None


def sync_jobs(jobs: list[tuple[int, str, str]], durable: bool = True) -> None:
    """Run what take_dirty returned: fdatasync a file written ("data"), fsync
    a finished file (its mode and mtime too) or a folder (its entries)
    ("full"), syncfs(2) the whole file system ("fs"); then close every fd.
    Safe in a worker thread (the calls release the GIL)."""
    try:
        if not durable:
            return
        if len(jobs) > PARALLEL_OVER:
            # the file system commits concurrent fsyncs together (one journal
            # commit for many small files instead of one each)
            with ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="dattui-fsync") as pool:
                for _ in pool.map(_sync_one, jobs):
                    pass
        else:
            for job in jobs:
                _sync_one(job)
    finally:
        for fd, _, _ in jobs:
            try:
                os.close(fd)
            except OSError:
                pass
