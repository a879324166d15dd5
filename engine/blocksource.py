"""Reading blocks to serve, with their Merkle proofs.

Used by shares (leaf hashes from the scan) and by clones (leaf hashes kept as
blocks were verified; for a file not yet complete, the leaf and the proof each
block was verified with). A file changed on disk since is reported, not served:
a complete file's block is served as read while the open file's size and
modification time (nanoseconds) are still those in the manifest, and hashed
against its leaf when they are not (a hash per block read cost the share 5-10 %
of its CPU); a partial file's block is always hashed. The receiving side
verifies every block whatever the sender did.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable

from . import manifest as mf
from . import merkle

OPEN_FILES = 64
TREES = 32


class FileBlockSource:
    def __init__(self, open_fd: Callable[[str], int],
                 leaves: Callable[[int, mf.Entry], bytes | None],
                 changed: Callable[[], None] = lambda: None) -> None:
        self._open = open_fd
        self._leaves = leaves
        self._changed = changed
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._trees: OrderedDict[int, list[list[bytes]]] = OrderedDict()

    def _tree(self, file: int, entry: mf.Entry) -> list[list[bytes]] | None:
        tree = self._trees.get(file)
        if tree is not None:
            self._trees.move_to_end(file)
            return tree
        blob = self._leaves(file, entry)
        if blob is None:
            return None
        tree = merkle.tree_levels(merkle.split_leaves(blob))
        if tree[-1][0] != entry.root:
            return None
        self._trees[file] = tree
        if len(self._trees) > TREES:
            self._trees.popitem(last=False)
        return tree

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._open(path)
            self._fds[path] = fd
            if len(self._fds) > OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(path)
        return fd

    def read(self, m: mf.Manifest, file: int, block: int) -> tuple[bytes, list[bytes]] | None:
        if not 0 <= file < len(m.entries):
            return None
        return self.read_entry(m.block_size, file, m.entries[file], block)

    def read_entry(self, block_size: int, file: int, entry: mf.Entry,
                   block: int) -> tuple[bytes, list[bytes]] | None:
        """`read` given the entry (a share looks it up in its database)."""
        if entry.kind != mf.Kind.FILE or not 0 <= block < entry.blocks(block_size):
            return None
        tree = self._tree(file, entry)
        if tree is None:
            return None
        try:
            fd = self._fd(entry.path)
            data = os.pread(fd, block_size, block * block_size)
            st = os.fstat(fd)
        except OSError:
            self._changed()
            return None
        if (st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns) \
                and merkle.leaf_hash(data) != tree[0][block]:
            self._changed()
            return None
        return data, merkle.proof_from_levels(tree, block)

    def read_verified(self, m: mf.Manifest, file: int, block: int, leaf: bytes,
                      proof: list[bytes]) -> tuple[bytes, list[bytes]] | None:
        """A block of a file not yet complete, served with the proof it was
        verified with (its siblings up to the signed root)."""
        entry = m.entries[file]
        want = min(m.block_size, entry.size - block * m.block_size)
        try:
            data = os.pread(self._fd(entry.path), m.block_size, block * m.block_size)
        except OSError:
            self._changed()
            return None
        if len(data) != want or merkle.leaf_hash(data) != leaf:
            self._changed()
            return None
        return data, proof

    def reset(self) -> None:
        self._trees.clear()
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
