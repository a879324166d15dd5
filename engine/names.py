"""Names from a manifest, as a filesystem and a terminal see them.

- `shown(name)`: a name safe to print: every character that is not printable
  (control characters, bidi overrides and other format characters, unassigned
  code points) is written as a backslash escape, so a name can neither move
  the cursor nor reorder what the terminal shows.
- `folding(folder)`: whether the filesystem under `folder` treats names that
  differ in case, or only in Unicode normalisation, as one name (macOS APFS
  and HFS+, Windows NTFS, FAT, ext4 with casefold), tested with a probe file.
- `collision(paths, casefold, nfc)`: two paths that would land in one file.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable


def shown(name: str, limit: int | None = None) -> str:
    if limit is not None and len(name) > limit:
        name = name[:limit] + "…"
    if name.isprintable():
        return name
    out = []
    for ch in name:
        if ch.isprintable() or ch == "…":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


PROBE = "Dattui-Fold-Probe-\u00c9"  # an upper-case, composed name


def folding(folder_fd: int) -> tuple[bool, bool]:
    """(case-insensitive, normalisation-insensitive) for the folder open as
    `folder_fd`: a probe file is created there, looked up under other
    spellings and removed. (False, False) when the probe cannot be made."""
    try:
        fd = os.open(PROBE, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=folder_fd)
    except OSError:
        return False, False
    os.close(fd)
    try:
        def exists(name: str) -> bool:
            try:
                os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
                return True
            except OSError:
                return False
        return (exists(PROBE.casefold()),
                exists(unicodedata.normalize("NFD", PROBE)))
    finally:
        try:
            os.unlink(PROBE, dir_fd=folder_fd)
        except OSError:
            pass


def key(path: str, casefold: bool, nfc: bool) -> str:
    if nfc:
        path = unicodedata.normalize("NFC", path)
    if casefold:
        path = unicodedata.normalize("NFC", path.casefold()) if nfc else path.casefold()
    return path


def collision(paths: Iterable[str], casefold: bool, nfc: bool) -> tuple[str, str] | None:
    """The first two paths that one file would have to hold, if any."""
    if not (casefold or nfc):
        return None
    seen: dict[str, str] = {}
    for p in paths:
        k = key(p, casefold, nfc)
        other = seen.get(k)
        if other is not None and other != p:
            return other, p
        seen[k] = p
    return None
