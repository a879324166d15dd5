"""A receipt a researcher can sign for: what a verified folder holds.

JSON: the link, version and signature of the signed manifest, and per file
its path, size, Merkle root (BLAKE2b, as signed) and SHA-256; next to it
(FILE.sha256) the same SHA-256s as `sha256sum -c` reads them, paths relative
to the folder (`cd DIR && sha256sum -c FILE.sha256`). Checking a folder
against a receipt needs nothing but the receipt: no state, no network.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import DiskError, UsageError
from .verify import DAMAGED, EXTRA, MISSING, OK, FileResult, VerifyResult, open_in

FORMAT = "dattui-receipt/1"


def _sum_line(path: str, digest: str) -> str:
    if "\n" in path or "\\" in path:  # GNU coreutils' escaping
        return "\\" + digest + "  " + path.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{digest}  {path}\n"


def sums_path(receipt: Path) -> Path:
    return receipt.with_name(receipt.name + ".sha256")


def write(receipt: Path, res: VerifyResult) -> Path:
    """Write the receipt of a folder verified whole; returns the .sha256 list's path."""
    files = [f for f in res.files if f.status == OK]
    obj = {"format": FORMAT, "link": res.link, "version": res.version,
           "signature": res.signature.hex(),
           "files": [{"path": f.path, "size": f.size, "merkle_root": f.root.hex(),
                      "sha256": f.sha256} for f in files]}
    sums = sums_path(receipt)
    try:
        receipt.write_text(json.dumps(obj, indent=1) + "\n")
        sums.write_text("".join(_sum_line(f.path, f.sha256) for f in files))
    except OSError as exc:
        raise DiskError(f"cannot write the receipt {receipt}: {exc.strerror}; choose a "
                        "folder you can write to") from None
    return sums


def load(receipt: Path) -> dict:
    try:
        obj = json.loads(receipt.read_text())
        if obj.get("format") != FORMAT or not isinstance(obj.get("files"), list):
            raise ValueError("not a dattui receipt")
        for f in obj["files"]:
            if not isinstance(f.get("path"), str) or not isinstance(f.get("sha256"), str):
                raise ValueError("a file without path or sha256")
        return obj
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise UsageError(f"cannot read the receipt {receipt}: {exc}; give a file written by "
                         "`dattui verify --receipt FILE`") from None


def _sha256(folder: Path, rel: str) -> tuple[str, int] | None:
    fd = open_in(folder, rel)
    if fd is None:
        return None
    h, n = hashlib.sha256(), 0
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
            n += len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return h.hexdigest(), n


def check(receipt: Path, folder: Path, on_file=None) -> list[FileResult]:
    """Every file of the receipt against the folder (SHA-256 and size), and
    files in the folder the receipt does not name (outside .dat/)."""
    obj = load(receipt)
    out = []
    named = set()
    for f in obj["files"]:
        named.add(f["path"])
        got = _sha256(folder, f["path"])
        if got is None:
            r = FileResult(f["path"], MISSING, f.get("size", 0))
        elif got[0] != f["sha256"] or got[1] != f.get("size", got[1]):
            r = FileResult(f["path"], DAMAGED, f.get("size", 0), sha256=got[0])
        else:
            r = FileResult(f["path"], OK, got[1], sha256=got[0])
        out.append(r)
        if on_file:
            on_file(r)
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        rel = "" if rel == "." else rel + "/"
        if not rel:
            dirnames[:] = [d for d in dirnames if d != ".dat"]
        for name in sorted(filenames):
            if rel + name not in named:
                r = FileResult(rel + name, EXTRA)
                out.append(r)
                if on_file:
                    on_file(r)
    return out
