"""Walk a shared folder and hash its files into Merkle leaves, using every core.

The walk never follows symlinks, always leaves out `.dat/` at the root (dattui's
own state), leaves out hidden names unless asked, and honours `.datignore`
(gitignore syntax). Hashing runs on a thread pool: BLAKE2b releases the GIL on
large buffers, so threads scale across cores. Big files are split into ranges
of whole blocks hashed by different threads; small files are batched. Memory is
bounded by one read buffer per worker plus 32 bytes per block.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from . import manifest, merkle
from .errors import DattuiError

IGNORE_FILE = ".datignore"
READ_TARGET = 1 << 20     # bytes per read call, rounded down to whole blocks
RANGE_TARGET = 16 << 20   # bytes of one big file hashed by one task
BATCH_FILES = 64          # most small files hashed by one task
PROGRESS_INTERVAL = 0.1   # seconds between progress calls

Ignore = Callable[[str, bool], bool]
Progress = Callable[[int, int], None]


class ScanCancelled(Exception):
    """The scan stopped because its `cancel` event was set."""


class FileChanged(OSError):
    """A file changed while it was being read."""


@dataclass(frozen=True)
class ScannedFile:
    path: str          # relative, '/'-separated
    size: int
    mode: int          # st_mode & 0o777
    mtime_ns: int
    leaves: bytes      # concatenated 32-byte merkle.leaf_hash of each block
    root: bytes        # merkle.root(leaves)


@dataclass(frozen=True)
class ScanResult:
    files: list[ScannedFile]           # sorted by path
    dirs: list[tuple[str, int, int]]   # (path, mode & 0o777, mtime_ns), sorted; not the root
    symlinks: list[str]                # never followed
    skipped: list[tuple[str, str]]     # (path, reason)


# --------------------------------------------------------------------------- ignore


def load_ignore(root: Path) -> Ignore:
    """Matcher for root/.datignore: (relpath, is_dir) -> ignored?"""
    path = Path(root) / IGNORE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return lambda rel, is_dir: False
    except (OSError, UnicodeDecodeError) as exc:
        raise DattuiError(f"cannot read {path} ({exc}); fix or remove it, then share again") from None
    # GitIgnoreSpec: gitwildmatch patterns with git's own precedence rules.
    spec = pathspec.GitIgnoreSpec.from_lines(text.splitlines())
    return lambda rel, is_dir: spec.match_file(rel + "/" if is_dir else rel)


# --------------------------------------------------------------------------- reading


def _open_regular(path: str) -> int:
    """Open a regular file for reading without following a symlink or blocking on a fifo."""
    flags = os.O_RDONLY
    for name in ("O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC", "O_BINARY"):
        flags |= getattr(os, name, 0)
    fd = os.open(path, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileChanged(f"{path} is no longer a regular file")
    return fd


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    os.lseek(fd, offset, os.SEEK_SET)
    data = os.read(fd, len(view))
    view[:len(data)] = data
    return len(data)


def _read_full(fd: int, view: memoryview, offset: int) -> int:
    """Fill `view` from `offset`; fewer bytes only at end of file."""
    got = 0
    while got < len(view):
        n = _pread_into(fd, view[got:], offset + got)
        if n == 0:
            break
        got += n
    return got


def _advise_sequential(fd: int, offset: int, length: int) -> None:
    """Ask for aggressive read-ahead on long ranges."""
    if hasattr(os, "posix_fadvise") and length > READ_TARGET:
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass


class _Reader:
    """Hashes byte ranges of files into leaves; one reused buffer per thread."""

    def __init__(self, block_size: int, cancel: threading.Event | None) -> None:
        if block_size <= 0:
            raise ValueError("block size must be positive")
        self.block_size = block_size
        self.read_size = max(1, READ_TARGET // block_size) * block_size
        self.cancel = cancel
        self._local = threading.local()

    def _buffer(self) -> memoryview:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = memoryview(bytearray(self.read_size))
        return buf

    def hash_range(self, path: str, offset: int, length: int) -> tuple[bytes, bool]:
        """Leaves of [offset, offset+length); True when the file ended early."""
        fd = _open_regular(path)
        try:
            _advise_sequential(fd, offset, length)
            return self._hash_fd(fd, offset, length)
        finally:
            os.close(fd)

    def _hash_fd(self, fd: int, offset: int, length: int) -> tuple[bytes, bool]:
        buf, bs = self._buffer(), self.block_size
        proto = hashlib.blake2b(b"\x00", digest_size=merkle.HASH_SIZE)
        leaves = bytearray()
        pos, end = offset, offset + length
        while pos < end:
            if self.cancel is not None and self.cancel.is_set():
                raise ScanCancelled("scan cancelled")
            want = min(len(buf), end - pos)
            got = _read_full(fd, buf[:want], pos)
            for i in range(0, got, bs):
                h = proto.copy()
                h.update(buf[i:min(i + bs, got)])
                leaves += h.digest()
            pos += got
            if got < want:
                return bytes(leaves), True
        return bytes(leaves), False

    def hash_batch(self, ranges: list[_Range]) -> list[tuple[bytes, bool] | OSError]:
        out: list[tuple[bytes, bool] | OSError] = []
        for r in ranges:
            try:
                out.append(self.hash_range(r.job.path, r.offset, r.length))
            except OSError as exc:
                out.append(exc)
        return out


# --------------------------------------------------------------------------- jobs


@dataclass(eq=False)
class _Job:
    """One file being hashed: its stat before reading and its ranges' leaves."""

    rel: str
    path: str
    st: os.stat_result
    attempt: int = 0
    parts: list[bytes] = field(default_factory=list)
    pending: int = 0
    counted: int = 0
    short: bool = False
    error: OSError | None = None


@dataclass(frozen=True, eq=False)
class _Range:
    job: _Job
    index: int
    offset: int
    length: int


Finish = Callable[[_Job], "_Job | None"]


class _Hasher:
    """Feeds jobs' ranges to a thread pool in bounded batches and gathers results."""

    def __init__(self, block_size: int, workers: int | None, cancel: threading.Event | None,
                 progress: Progress | None) -> None:
        self.reader = _Reader(block_size, cancel)
        self.workers = max(1, workers or _cpu_count())
        self.range_bytes = max(1, RANGE_TARGET // block_size) * block_size
        self.cancel = cancel
        self.progress = progress
        self.files_done = 0
        self.bytes_done = 0
        self._last_tick = time.monotonic()
        self._retry: deque[_Range] = deque()
        self._source: Iterator[_Range] = iter(())

    def split(self, job: _Job) -> list[_Range]:
        size, step = job.st.st_size, self.range_bytes
        spans = [(o, min(step, size - o)) for o in range(0, size, step)] or [(0, 0)]
        job.parts = [b""] * len(spans)
        job.pending = len(spans)
        return [_Range(job, i, o, n) for i, (o, n) in enumerate(spans)]

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise ScanCancelled("scan cancelled")

    def tick(self, final: bool = False) -> None:
        """Report progress at most every PROGRESS_INTERVAL, and always when final."""
        now = time.monotonic()
        if self.progress and (final or now - self._last_tick >= PROGRESS_INTERVAL):
            self._last_tick = now
            self.progress(self.files_done, self.bytes_done)

    def run(self, jobs: Iterator[_Job], finish: Finish) -> None:
        """Hash every job; `finish` gets each completed job and may return a retry."""
        self._source = (r for job in jobs for r in self.split(job))
        in_flight: dict[Future[list[tuple[bytes, bool] | OSError]], list[_Range]] = {}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="dattui-hash") as pool:
            try:
                while True:
                    self.check_cancel()
                    while len(in_flight) < 3 * self.workers and (batch := self._next_batch()):
                        in_flight[pool.submit(self.reader.hash_batch, batch)] = batch
                    if not in_flight:
                        break
                    done, _ = wait(in_flight, timeout=PROGRESS_INTERVAL, return_when=FIRST_COMPLETED)
                    for fut in done:
                        for r, outcome in zip(in_flight.pop(fut), fut.result()):
                            self._record(r, outcome, finish)
                    self.tick()
            except BaseException:
                for fut in in_flight:
                    fut.cancel()
                raise

    def _next_batch(self) -> list[_Range]:
        batch: list[_Range] = []
        size = 0
        while len(batch) < BATCH_FILES and size < self.range_bytes:
            r = self._retry.popleft() if self._retry else next(self._source, None)
            if r is None:
                break
            batch.append(r)
            size += r.length
        return batch

    def _record(self, r: _Range, outcome: tuple[bytes, bool] | OSError, finish: Finish) -> None:
        job = r.job
        if isinstance(outcome, OSError):
            job.error = job.error or outcome
        else:
            job.parts[r.index], short = outcome
            job.short |= short
            job.counted += r.length
            self.bytes_done += r.length
        job.pending -= 1
        if job.pending:
            return
        retry = finish(job)
        if retry is None:
            self.files_done += 1
        else:
            self.bytes_done -= job.counted
            self._retry.extend(self.split(retry))


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _root(leaves: bytes) -> bytes:
    """merkle.root over concatenated leaves, keeping one level at a time."""
    if not leaves:
        return merkle.EMPTY_ROOT
    hs = merkle.HASH_SIZE
    level = leaves
    while len(level) > hs:
        n = len(level) // hs
        up = [merkle.node_hash(level[i * hs:(i + 1) * hs], level[(i + 1) * hs:(i + 2) * hs])
              for i in range(0, n - 1, 2)]
        if n % 2:
            up.append(level[-hs:])
        level = b"".join(up)
    return level


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    key = lambda s: (s.st_size, s.st_mtime_ns, s.st_ino, s.st_dev, s.st_mode)  # noqa: E731
    return key(before) != key(after)


def _reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else str(exc)


def hash_file(path: Path, block_size: int, *, workers: int | None = None,
              cancel: threading.Event | None = None) -> tuple[bytes, bytes]:
    """(leaves, root) of one regular file, streamed; big files use every core.

    Raises OSError (FileChanged if the file changed while read)."""
    p = os.fspath(path)
    before = os.stat(p, follow_symlinks=False)
    if not stat.S_ISREG(before.st_mode):
        raise FileChanged(f"{p} is not a regular file")
    job = _Job(str(path), p, before)
    result: list[bytes] = []

    def finish(done: _Job) -> None:
        if done.error is not None:
            raise done.error
        if done.short or _changed(before, os.stat(p, follow_symlinks=False)):
            raise FileChanged(f"{p} changed while it was being read")
        result.append(b"".join(done.parts))

    _Hasher(block_size, workers, cancel, None).run(iter([job]), finish)
    return result[0], _root(result[0])


# --------------------------------------------------------------------------- walking


def _bad_name(name: str, rel: str) -> str | None:
    try:
        raw = rel.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not UTF-8"
    if "\\" in name:
        return "name contains a backslash"
    if len(raw) > manifest.MAX_PATH_BYTES:
        return f"path is longer than {manifest.MAX_PATH_BYTES} bytes"
    return None


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "is a fifo (named pipe)"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device"
    return "is not a regular file"


def _display(rel: str) -> str:
    """A printable form of a path whose bytes may not be UTF-8."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


class _Walker:
    """os.scandir walk recording dirs, symlinks and skips; yields regular files."""

    def __init__(self, root: Path, include_hidden: bool, ignored: Ignore,
                 cancel: threading.Event | None) -> None:
        self.root = os.fspath(root)
        self.include_hidden = include_hidden
        self.ignored = ignored
        self.cancel = cancel
        self.dirs: dict[str, tuple[int, int]] = {}
        self.symlinks: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def files(self) -> Iterator[tuple[str, str, os.stat_result]]:
        """(relpath, path, lstat) of every regular file kept."""
        stack = [("", self.root)]
        while stack:
            rel_dir, abs_dir = stack.pop()
            entries = self._list(rel_dir, abs_dir)
            for entry in entries:
                if self.cancel is not None and self.cancel.is_set():
                    raise ScanCancelled("scan cancelled")
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    st = self._visit(entry, rel, top=not rel_dir)
                except OSError as exc:
                    self.skipped.append((_display(rel), _reason(exc)))
                    continue
                if st is None:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    self.dirs[rel] = (st.st_mode & 0o777, st.st_mtime_ns)
                    stack.append((rel, entry.path))
                else:
                    yield rel, entry.path, st

    def _list(self, rel_dir: str, abs_dir: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(abs_dir) as it:
                return list(it)
        except OSError as exc:
            if not rel_dir:
                raise
            del self.dirs[rel_dir]
            self.skipped.append((_display(rel_dir), _reason(exc)))
            return []

    def _visit(self, entry: os.DirEntry[str], rel: str, top: bool) -> os.stat_result | None:
        """lstat of a dir or regular file to keep; None when left out or recorded."""
        name = entry.name
        if top and name == manifest.RESERVED:
            return None
        if name.startswith(".") and not self.include_hidden:
            return None
        if self.ignored(rel, entry.is_dir(follow_symlinks=False)):
            return None
        if bad := _bad_name(name, rel):
            self.skipped.append((_display(rel), bad))
            return None
        if entry.is_symlink():
            self.symlinks.append(rel)
            return None
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            return st
        self.skipped.append((rel, _special_kind(st.st_mode)))
        return None


# --------------------------------------------------------------------------- scan


Lookup = Callable[[str], "ScannedFile | None"]
Store = Callable[[ScannedFile], None]


@dataclass(frozen=True)
class ScanSummary:
    """What a scan into a store (`scan_into`) returns: everything but the files."""
    files: int                         # files stored (hashed or reused)
    dirs: list[tuple[str, int, int]]   # (path, mode & 0o777, mtime_ns), sorted; not the root
    symlinks: list[str]
    skipped: list[tuple[str, str]]


class _Scan:
    """One scan: walks, reuses unchanged files, hashes the rest, stores each
    file as it is done; holds no per-file state past a file's hashing."""

    def __init__(self, root: Path, block_size: int, include_hidden: bool, lookup: Lookup,
                 store: Store, workers: int | None, progress: Progress | None,
                 cancel: threading.Event | None) -> None:
        self.block_size = block_size
        self.lookup = lookup
        self.store = store
        self.stored = 0
        self.walker = _Walker(root, include_hidden, load_ignore(root), cancel)
        self.hasher = _Hasher(block_size, workers, cancel, progress)

    def run(self) -> ScanSummary:
        self.hasher.run(self._jobs(), self._finish)
        self.hasher.tick(final=True)
        w = self.walker
        return ScanSummary(
            files=self.stored,
            dirs=sorted((p, mode, mtime) for p, (mode, mtime) in w.dirs.items()),
            symlinks=sorted(w.symlinks),
            skipped=sorted(w.skipped),
        )

    def _jobs(self) -> Iterator[_Job]:
        for rel, path, st in self.walker.files():
            old = self.lookup(rel)
            if old is not None and self._unchanged(old, st):
                self._store(old)
                self.hasher.files_done += 1
                self.hasher.bytes_done += st.st_size
                self.hasher.tick()
            else:
                yield _Job(rel, path, st)

    def _store(self, f: ScannedFile) -> None:
        self.store(f)
        self.stored += 1

    def _unchanged(self, old: ScannedFile, st: os.stat_result) -> bool:
        blocks = -(-st.st_size // self.block_size)
        return (old.size == st.st_size and old.mtime_ns == st.st_mtime_ns
                and old.mode == st.st_mode & 0o777
                and len(old.leaves) == blocks * merkle.HASH_SIZE)

    def _finish(self, job: _Job) -> _Job | None:
        if job.error is not None:
            self.walker.skipped.append((job.rel, _reason(job.error)))
            return None
        try:
            now = os.stat(job.path, follow_symlinks=False)
        except OSError as exc:
            self.walker.skipped.append((job.rel, _reason(exc)))
            return None
        if job.short or _changed(job.st, now):
            if job.attempt == 0 and stat.S_ISREG(now.st_mode):
                return _Job(job.rel, job.path, now, attempt=1)
            self.walker.skipped.append((job.rel, "kept changing while being read"))
            return None
        leaves = b"".join(job.parts)
        st = job.st
        self._store(ScannedFile(job.rel, st.st_size, st.st_mode & 0o777, st.st_mtime_ns,
                                leaves, _root(leaves)))
        return None


def scan(root: Path, block_size: int = manifest.DEFAULT_BLOCK_SIZE, *, include_hidden: bool = False,
         previous: Mapping[str, ScannedFile] | None = None, workers: int | None = None,
         progress: Progress | None = None, cancel: threading.Event | None = None) -> ScanResult:
    """Walk `root` and hash every kept file, in memory (see `scan_into` for a
    scan whose memory does not grow with the number of files).

    `previous` (from a scan with the same block size) lets files whose size,
    mtime and mode are unchanged keep their hashes without being read.
    `progress(files_done, bytes_done)` runs on the calling thread; files_done
    counts files finished (hashed, reused or skipped). Raises ScanCancelled when
    `cancel` is set, OSError when `root` cannot be listed."""
    files: dict[str, ScannedFile] = {}
    old = previous or {}
    summary = _Scan(Path(root), block_size, include_hidden, old.get,
                    lambda f: files.__setitem__(f.path, f), workers, progress, cancel).run()
    return ScanResult(files=[files[p] for p in sorted(files)], dirs=summary.dirs,
                      symlinks=summary.symlinks, skipped=summary.skipped)


def scan_into(root: Path, block_size: int, lookup: Lookup, store: Store, *,
              include_hidden: bool = False, workers: int | None = None,
              progress: Progress | None = None, cancel: threading.Event | None = None) -> ScanSummary:
    """`scan`, streaming: `lookup(path)` gives the previous scan's file (or None),
    `store(file)` gets each file once it is hashed or reused, in walk order, on
    the calling thread. Only the folders, symlinks and skips are kept in memory."""
    return _Scan(Path(root), block_size, include_hidden, lookup, store, workers, progress,
                 cancel).run()


def to_manifest(result: ScanResult, version: int, block_size: int, name: str) -> manifest.Manifest:
    """Directories, then files, each sorted by path."""
    dirs = [manifest.Entry(manifest.Kind.DIR, p, mode, mtime) for p, mode, mtime in sorted(result.dirs)]
    files = [manifest.Entry(manifest.Kind.FILE, f.path, f.mode, f.mtime_ns, f.size, f.root)
             for f in sorted(result.files, key=lambda f: f.path)]
    return manifest.Manifest(version, block_size, name, tuple(dirs + files))
