"""Share secret keys, kept outside the shared folder.

Each writable share's ed25519 seed lives in
``<state dir>/keys/<discovery-key-hex>.key``, mode 0600, as two lines::

    dattui-secret-key 1
    <64 lowercase hex characters: the 32-byte seed>

The file name is the discovery key, not the public key, so a directory listing
does not reveal links. A key file readable by anyone but its owner is refused.
No error message ever contains the seed.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from .errors import UsageError
from .keys import ShareKey, discovery_key
from .statedir import write_private

__all__ = [
    "KEYS_DIR",
    "HEADER",
    "key_path",
    "save",
    "load",
    "list_keys",
    "export_text",
    "import_text",
    "import_file",
    "remember_folder",
    "folders_of",
]

KEYS_DIR = "keys"
SUFFIX = ".key"
HEADER = "dattui-secret-key 1"
_MAGIC = "dattui-secret-key"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_MAX_FILE = 4096  # a key file is ~85 bytes; anything far bigger is not one


def key_path(public_key: bytes, state: Path) -> Path:
    """Where the secret key of the share with `public_key` is kept."""
    return Path(state) / KEYS_DIR / (discovery_key(public_key).hex() + SUFFIX)


def export_text(key: ShareKey) -> str:
    """The key file's text. Treat it as a password: it lets anyone publish
    new versions of the share."""
    if key.secret is None:
        raise ValueError("this share key has no secret (a clone's key cannot be exported)")
    return f"{HEADER}\n{key.secret.hex()}\n"


def import_text(text: str, *, source: str = "secret key") -> ShareKey:
    """Parse a key file's text. Raises UsageError (one line, naming `source`)
    if it is not a dattui secret key."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].startswith(_MAGIC):
        raise UsageError(
            f"{source}: not a dattui secret key; the first line must be "
            f"{HEADER!r} (export one with dattui's key export)"
        )
    header = lines[0].split()
    if len(header) != 2 or header[0] != _MAGIC:
        raise UsageError(f"{source}: malformed first line; expected {HEADER!r}")
    if header[1] != "1":
        raise UsageError(
            f"{source}: secret key format version {header[1][:10]!r} is not supported "
            "by this dattui (it reads version 1); upgrade dattui"
        )
    if len(lines) != 2 or not _HEX64.fullmatch(lines[1]):
        # never echo the line: it may be (most of) a secret
        raise UsageError(
            f"{source}: malformed secret key; after the first line there must be exactly "
            "one line of 64 hex characters"
        )
    return ShareKey.from_seed(bytes.fromhex(lines[1]))


def save(key: ShareKey, state: Path) -> Path:
    """Store `key`'s secret (mode 0600, atomically) and return the file's path."""
    path = key_path(key.public, state)
    write_private(path, export_text(key).encode("ascii"))
    return path


def _read(path: Path) -> ShareKey:
    """Read and check one key file. Raises UsageError on anything wrong."""
    try:
        # O_NONBLOCK: a FIFO planted under this name must not hang us
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise UsageError(f"{path}: cannot read secret key: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path}: a secret key must be a regular file")
        if st.st_mode & 0o077:
            raise UsageError(
                f"{path}: secret key permissions {stat.S_IMODE(st.st_mode):04o} are too "
                f"open, others could read it; run: chmod 600 {path}"
            )
        if st.st_size > _MAX_FILE:
            raise UsageError(f"{path}: not a dattui secret key (file too large)")
        data = os.read(fd, _MAX_FILE + 1)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a dattui secret key (not text)") from None
    return import_text(text, source=str(path))


def load(public_key: bytes, state: Path) -> ShareKey | None:
    """The writable key of the share `public_key`, or None if its secret is not
    stored here. Raises UsageError if the file is unsafe or damaged."""
    path = key_path(public_key, state)
    try:
        key = _read(path)
    except FileNotFoundError:
        return None
    if key.public != public_key:
        raise UsageError(
            f"{path}: this secret key belongs to a different share "
            f"({key.link}); move the file away and import the right one"
        )
    return key


def list_keys(state: Path) -> list[ShareKey]:
    """Every stored writable key, sorted by file name. Raises UsageError on an
    unsafe or damaged key file, naming it."""
    folder = Path(state) / KEYS_DIR
    try:
        names = sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []
    out: list[ShareKey] = []
    for path in names:
        try:
            key = _read(path)
        except FileNotFoundError:  # removed meanwhile
            continue
        if path.name != discovery_key(key.public).hex() + SUFFIX:
            raise UsageError(
                f"{path}: file name does not match the key inside; "
                "re-import it with dattui's key import"
            )
        out.append(key)
    return out


def import_file(path: Path, state: Path) -> ShareKey:
    """Read an exported key file (any permissions: it may come from a USB
    stick) and store it in `state`. Returns the key."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as e:
        raise UsageError(f"{path}: cannot read secret key: {e.strerror or e}") from None
    if len(data) > _MAX_FILE:
        raise UsageError(f"{path}: not a dattui secret key (file too large)")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a dattui secret key (not text)") from None
    key = import_text(text, source=str(path))
    save(key, state)
    return key


# ---- which folders each key shares ---------------------------------------------------
# ``<state dir>/keys/folders.json``: {"<discovery key hex>": ["/abs/folder", ...]}.
# Written when a share starts, read by `dattui keys list`; a damaged file is
# treated as empty (it is a convenience, never a source of truth).
FOLDERS_FILE = "folders.json"


def remember_folder(key: ShareKey, folder: Path, state: Path) -> None:
    """Note that `key` shares `folder` (absolute), for `dattui keys list`."""
    known = folders(state)
    dkey = discovery_key(key.public).hex()
    entry = known.setdefault(dkey, [])
    if str(folder) in entry:
        return
    entry.append(str(folder))
    write_private(Path(state) / KEYS_DIR / FOLDERS_FILE,
                  json.dumps(known, indent=1, sort_keys=True).encode())


def folders(state: Path) -> dict[str, list[str]]:
    """discovery key hex -> the folders shared with that key on this machine."""
    try:
        data = json.loads((Path(state) / KEYS_DIR / FOLDERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: [f for f in v if isinstance(f, str)] for k, v in data.items()
            if isinstance(k, str) and isinstance(v, list)}


def folders_of(key: ShareKey, state: Path) -> list[str]:
    return folders(state).get(discovery_key(key.public).hex(), [])
