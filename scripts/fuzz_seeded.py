"""Fuzz dattui's decoders with the suite's seeded generators, for longer
than the suite does (coverage-guided fuzzing of every decoder: scripts/fuzz.py).

    python scripts/fuzz_seeded.py seeded [--seconds 300] [--seed 0]
        the seeded generators of tests/fuzzgen.py (mutated frame streams and
        manifests) against wire.FrameDecoder and manifest.decode

Either way the only exceptions allowed out are the decoders' own
(ProtocolError, UnsafeManifest); anything else is a finding, printed with
the input that caused it, and the exit status is 1.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dattui.engine import manifest as mf  # noqa: E402
from dattui.engine import wire  # noqa: E402
from dattui.engine.errors import ProtocolError, UnsafeManifest  # noqa: E402


def feed_wire(data: bytes, step: int = 0) -> None:
    d = wire.FrameDecoder()
    try:
        if step <= 0:
            d.feed(data)
        else:
            for i in range(0, len(data), step):
                d.feed(data[i:i + step])
    except ProtocolError:
        pass


def feed_manifest(data: bytes) -> None:
    try:
        mf.decode(data)
    except UnsafeManifest:
        pass


def seeded(seconds: float, seed: int) -> int:
    import fuzzgen
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        for make, feed in ((fuzzgen.frame_stream, lambda d: feed_wire(d, rng.randrange(0, 64))),
                           (fuzzgen.manifest_bytes, feed_manifest)):
            data = make(rng)
            try:
                feed(data)
            except Exception as exc:  # a finding
                print(f"{make.__name__}: {exc!r} on input {data!r}", file=sys.stderr)
                return 1
        n += 1
    print(f"{n} inputs each, no finding")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "seeded":
        print(__doc__)
        return 2
    seconds = float(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 60.0
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    return seeded(seconds, seed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
