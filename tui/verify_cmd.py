"""`dattui verify [DIR]`: re-hash a clone or share against its signed
manifest; `--receipt FILE` writes a receipt of a verified folder, or checks
the folder against an existing one. Exit 0 only when everything matches."""

from __future__ import annotations

from pathlib import Path

from dattui.engine import receipt as receipt_mod
from dattui.engine.verify import OK, FileResult, verify_folder

from . import jsonout

EXIT_MISMATCH = 1


def add_arguments(p) -> None:
    p.add_argument("dir", nargs="?", default=".", help="the clone or share folder (default: the current one)")
    p.add_argument("--receipt", metavar="FILE",
                   help="write a receipt of the verified folder to FILE (and FILE.sha256 for "
                        "`sha256sum -c`); if FILE exists, check the folder against it instead")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")


def describe(r: FileResult) -> str:
    if r.status == OK or not r.blocks:
        return f"{r.status:<10} {r.path}"
    blocks = ", ".join(str(b) for b in r.blocks[:20]) + (", …" if len(r.blocks) > 20 else "")
    return f"{r.status:<10} {r.path} (block{'s' if len(r.blocks) > 1 else ''} {blocks})"


def run_verify(args) -> int:
    folder = Path(args.dir)

    def show(r: FileResult) -> None:
        if args.json:
            jsonout.emit({"event": "file", "path": r.path, "status": r.status,
                          "blocks": list(r.blocks), "sha256": r.sha256 or None})
        elif r.status != OK:
            print(describe(r), flush=True)

    receipt = Path(args.receipt) if args.receipt else None
    if receipt is not None and receipt.exists():
        results = receipt_mod.check(receipt, folder, on_file=show)
        ok = all(r.status == OK for r in results)
        _summary(args, ok, results, f"against the receipt {receipt}")
        return 0 if ok else EXIT_MISMATCH
    res = verify_folder(folder, mark=True, on_file=show)
    _summary(args, res.ok, res.files, f"against version {res.version} of {res.link[:20]}…")
    if not res.ok:
        if not args.json and res.role == "clone":
            print("run the same `dattui clone` command again: it fetches exactly what is damaged "
                  "or missing")
        return EXIT_MISMATCH
    if receipt is not None:
        sums = receipt_mod.write(receipt, res)
        if args.json:
            jsonout.emit({"event": "receipt", "path": str(receipt), "sha256sums": str(sums)})
        else:
            print(f"receipt written to {receipt}; check with `cd {folder} && sha256sum -c "
                  f"{sums.absolute()}`")
    return 0


def _summary(args, ok: bool, results, what: str) -> None:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    if args.json:
        jsonout.emit({"event": "verified", "ok": ok, "counts": counts})
    else:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no files"
        print(f"{'all files match' if ok else 'MISMATCH'} {what}: {parts}")
