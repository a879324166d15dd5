"""The signed manifest: every path of a share version, with sizes, modes,
mtimes and content roots.

Binary, canonical encoding (all integers big-endian):
    header  b"DATM" | u16 format | u64 version | u32 block_size | u16 name_len | name
            | u32 entry_count
    entry   u8 kind (1 file, 2 dir) | u16 path_len | path (UTF-8, '/'-separated)
            | u32 mode | i64 mtime_ns | u64 size | 32-byte root (files only)
The signature is ed25519 over b"dattui-manifest\\0" || BLAKE2b-256(encoding).
Everything read from the network goes through `decode`, which bounds sizes and
refuses any path that could leave the target folder.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from . import keys, merkle, names
from .errors import UnsafeManifest

FORMAT = 1
MAGIC = b"DATM"
DEFAULT_BLOCK_SIZE = 256 * 1024
MAX_MANIFEST_BYTES = 128 * 1024 * 1024
MAX_ENTRIES = 2_000_000
MAX_PATH_BYTES = 4096
MAX_FILE_SIZE = 1 << 50
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 4096, 4 * 1024 * 1024
SIGN_CONTEXT = b"dattui-manifest\x00"
RESERVED = ".dat"

_HEAD = struct.Struct(">4sHQIH")
_ENTRY = struct.Struct(">BH")
_META = struct.Struct(">IqQ")


class Kind(IntEnum):
    FILE = 1
    DIR = 2


@dataclass(frozen=True, slots=True)  # a clone holds one per entry: 80 bytes, not 280
class Entry:
    kind: Kind
    path: str
    mode: int
    mtime_ns: int
    size: int = 0
    root: bytes = b""

    def blocks(self, block_size: int) -> int:
        return -(-self.size // block_size)


@dataclass(frozen=True)
class Manifest:
    version: int
    block_size: int
    name: str
    entries: tuple[Entry, ...]

    # Computed once: a clone's status (several times a second) asks for both,
    # and over a million entries each walk took tens of milliseconds.
    @functools.cached_property
    def files(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.kind == Kind.FILE)

    @functools.cached_property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.kind == Kind.FILE)

    def encode(self) -> bytes:
        return encode_rows(self.version, self.block_size, self.name, len(self.entries),
                           ((e.kind, e.path, e.mode, e.mtime_ns, e.size, e.root) for e in self.entries))


def encode_rows(version: int, block_size: int, name: str, count: int, rows) -> bytes:
    """The encoding of a manifest whose `count` entries come, in order, from the
    iterable `rows` of (kind, path, mode, mtime_ns, size, root)."""
    return b"".join(encode_chunks(version, block_size, name, count, rows))


def encode_chunks(version: int, block_size: int, name: str, count: int, rows,
                  chunk: int = 1 << 16):
    """`encode_rows` in pieces: first the header (see `header`), then the rest in
    pieces of about `chunk` bytes. A share encodes straight from its database
    into its database this way, never holding the entries or the encoding."""
    yield header(version, block_size, name)
    buf = bytearray(struct.pack(">I", count))
    pack_entry, pack_meta = _ENTRY.pack, _META.pack
    n = 0
    for kind, path, mode, mtime_ns, size, root in rows:
        p = path.encode()
        buf += pack_entry(kind, len(p))
        buf += p
        buf += pack_meta(mode & 0o7777, mtime_ns, size)
        if kind == Kind.FILE:
            buf += root
        n += 1
        if len(buf) >= chunk:
            yield bytes(buf)
            buf.clear()
    if n != count:
        raise ValueError(f"{n} entries, announced {count}")
    yield bytes(buf)


def encoded_size(header_size: int, path_bytes: int, entries: int, files: int) -> int:
    """Length of an encoding: header, entry count, per entry its fixed fields,
    its path and, for a file, its root."""
    return header_size + 4 + entries * (_ENTRY.size + _META.size) + path_bytes + files * merkle.HASH_SIZE


def header(version: int, block_size: int, name: str) -> bytes:
    """What precedes the entry count: the only part that differs between two
    versions with the same entries."""
    raw = name.encode()
    return _HEAD.pack(MAGIC, FORMAT, version, block_size, len(raw)) + raw


def header_size(encoded) -> int:
    """Length of the header (see `header`) of an encoded manifest."""
    return _HEAD.size + _HEAD.unpack_from(encoded, 0)[4]


def peek(encoded) -> tuple[int, int]:
    """(version, block_size) of an encoded manifest, without decoding its entries."""
    _, _, version, block_size, _ = _HEAD.unpack_from(encoded, 0)
    return version, block_size


def signing_message(encoded: bytes) -> bytes:
    return signing_message_of(hashlib.blake2b(encoded, digest_size=32).digest())


def signing_message_of(digest: bytes) -> bytes:
    """The message signed for an encoding whose BLAKE2b-256 is `digest`."""
    return SIGN_CONTEXT + digest


def sign(manifest: Manifest, key: keys.ShareKey) -> tuple[bytes, bytes]:
    enc = manifest.encode()
    return enc, key.sign(signing_message(enc))


def verify(public_key: bytes, encoded: bytes, signature: bytes) -> bool:
    return keys.verify(public_key, signing_message(encoded), signature)


MAX_NAME_BYTES = 255  # one path component: what Linux, macOS and Windows filesystems take
MAX_DEPTH = 256       # components in one path
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1


def check_path(path: str) -> None:
    """Refuse anything that is not a plain relative path inside the target,
    or that no filesystem or terminal should be handed."""
    bad, why = None, "that would leave the target folder"
    if not path:
        bad = "an empty path"
    elif "\x00" in path or "\\" in path:
        bad = "a path with a NUL or backslash"
    elif path.startswith("/"):
        bad = "an absolute path"
    else:
        parts = path.split("/")
        if any(p in ("", ".", "..") for p in parts):
            bad = "a path with '..', '.' or an empty component"
        elif parts[0] == RESERVED:
            bad = "a path inside .dat/"
        elif len(parts) > MAX_DEPTH:
            bad, why = f"a path {len(parts)} folders deep", f"deeper than the {MAX_DEPTH} allowed"
        elif any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
            bad, why = "a name", f"longer than the {MAX_NAME_BYTES} bytes a filesystem takes"
        elif _CONTROL.search(path):
            bad, why = "a name", "with a control character"
    if bad:
        raise UnsafeManifest(
            f"refusing the share's manifest: it names {bad} ({names.shown(path, 80)}) {why}; "
            "nothing was written; ask the sharer to check their folder and dattui version"
        )


def decode(data: bytes) -> Manifest:
    """Parse and validate a manifest from an untrusted source."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise UnsafeManifest("refusing the share's manifest: larger than the 128 MiB limit")
    try:
        magic, fmt, version, block_size, name_len = _HEAD.unpack_from(data, 0)
        off = _HEAD.size
        if magic != MAGIC or fmt != FORMAT:
            raise ValueError("unknown manifest format")
        if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError("block size out of range")
        name = data[off:off + name_len].decode()
        off += name_len
        (count,) = struct.unpack_from(">I", data, off)
        off += 4
        if count > MAX_ENTRIES:
            raise ValueError("too many entries")
        entries = []
        seen: set[str] = set()
        dirs: set[str] = set()
        for _ in range(count):
            kind, plen = _ENTRY.unpack_from(data, off)
            off += _ENTRY.size
            if plen > MAX_PATH_BYTES:
                raise ValueError("path too long")
            raw = data[off:off + plen]
            if len(raw) != plen:
                raise ValueError("truncated")
            path = raw.decode()
            off += plen
            mode, mtime_ns, size = _META.unpack_from(data, off)
            off += _META.size
            kind = Kind(kind)
            root = b""
            if kind == Kind.FILE:
                root = data[off:off + 32]
                if len(root) != 32:
                    raise ValueError("truncated")
                off += 32
                if size > MAX_FILE_SIZE:
                    raise ValueError("file too large")
            elif size:
                raise ValueError("directory with a size")
            check_path(path)
            if path in seen:
                raise ValueError(f"duplicate path {path!r}")
            seen.add(path)
            if kind == Kind.DIR:
                dirs.add(path)
            entries.append(Entry(kind, path, mode & 0o7777, mtime_ns, size, root))
        if off != len(data):
            raise ValueError("trailing bytes")
    except UnsafeManifest:
        raise
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise UnsafeManifest(f"refusing the share's manifest: malformed ({exc})") from None
    # a file may not also be a parent of another path
    for e in entries:
        parent = e.path.rpartition("/")[0]
        while parent:
            if parent in seen and parent not in dirs:
                raise UnsafeManifest(
                    f"refusing the share's manifest: {parent!r} is both a file and a folder")
            parent = parent.rpartition("/")[0]
    name = _CONTROL.sub("", name.replace("/", "_"))
    if name in ("", ".", ".."):
        name = ""
    return Manifest(version, block_size, name, tuple(entries))


def block_leaf(m: Manifest, file: int, block: int, data, proof) -> bytes | None:
    """The leaf hash of `data` when it is block `block` of entry `file` under
    the signed tree (with `proof`, its siblings up to the file's root); None
    when it is not, or when no such block exists."""
    if not 0 <= file < len(m.entries):
        return None
    e = m.entries[file]
    if e.kind != Kind.FILE:
        return None
    n = e.blocks(m.block_size)
    if not 0 <= block < n or len(data) != min(m.block_size, e.size - block * m.block_size):
        return None
    leaf = merkle.leaf_hash(data)
    return leaf if merkle.verify_proof(leaf, block, n, list(proof), e.root) else None
