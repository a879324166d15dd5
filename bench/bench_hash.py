"""Hashing throughput: raw BLAKE2b on one core vs hash_file() and scan() on all cores.

    python bench/bench_hash.py [SIZE]      SIZE like 512M (default), 2G, or bytes

The test file is written to a temporary folder first, so it sits in the page
cache: the figures measure hashing, not the disk.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dattui.engine import manifest, merkle, scan  # noqa: E402

BLOCK = manifest.DEFAULT_BLOCK_SIZE
MB = 1_000_000
ROUNDS = 3


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def make_file(path: Path, size: int) -> None:
    chunk = os.urandom(8 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n


def best_time(fn: Callable[[], object]) -> float:
    """Fastest of ROUNDS runs, in seconds."""
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def blake2b_one_core(data: memoryview) -> None:
    proto = hashlib.blake2b(b"\x00", digest_size=merkle.HASH_SIZE)
    for i in range(0, len(data), BLOCK):
        h = proto.copy()
        h.update(data[i:i + BLOCK])
        h.digest()


def main() -> None:
    size = parse_size(sys.argv[1]) if len(sys.argv) > 1 else 512 << 20
    cores = scan._cpu_count()
    with tempfile.TemporaryDirectory(prefix="dattui-bench-") as tmp:
        folder = Path(tmp) / "share"
        folder.mkdir()
        path = folder / "big.bin"
        make_file(path, size)
        data = memoryview(path.read_bytes())

        t_raw = best_time(lambda: blake2b_one_core(data))
        expected = scan.hash_file(path, BLOCK, workers=1)
        del data
        t_file = best_time(lambda: scan.hash_file(path, BLOCK))
        t_scan = best_time(lambda: scan.scan(folder, BLOCK))
        t_scan1 = best_time(lambda: scan.scan(folder, BLOCK, workers=1))
        assert scan.hash_file(path, BLOCK) == expected
        assert scan.scan(folder, BLOCK).files[0].root == expected[1]

    raw, file_all, scan_all, scan_one = (size / t / MB for t in (t_raw, t_file, t_scan, t_scan1))
    print(f"file: {size / (1 << 20):.0f} MiB, block {BLOCK // 1024} KiB, {cores} cores, "
          f"best of {ROUNDS} (page-cached)")
    print(f"  blake2b, 1 core, from memory  {raw:9.0f} MB/s")
    print(f"  scan(), workers=1             {scan_one:9.0f} MB/s")
    print(f"  hash_file(), {cores} cores         {file_all:9.0f} MB/s   ({file_all / cores:.0f} MB/s per core)")
    print(f"  scan(), {cores} cores              {scan_all:9.0f} MB/s   ({scan_all / cores:.0f} MB/s per core)")
    ratio = scan_all / cores / raw
    print(f"scan per core vs blake2b per core: {ratio:.2f}  (target >= 0.80: "
          f"{'met' if ratio >= 0.8 else 'NOT met'})")


if __name__ == "__main__":
    main()
