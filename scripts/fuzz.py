"""Coverage-guided fuzzing (atheris, libFuzzer) of every decoder that reads
network bytes: wire frames, manifests, STUN, KRPC/bencode, the rendezvous
protocol, the lane pipe (tests/fuzzing/targets.py).

    python scripts/fuzz.py TARGET [--runs N | --seconds S] [--seed N]
    python scripts/fuzz.py all --seconds 600        # a longer campaign

Starts from valid seed inputs. An input that raises anything but the
decoder's documented errors is a bug: libFuzzer stops and saves it under
tests/fuzzing/corpus/TARGET/, where tests/test_fuzz_decoders.py replays it for
ever after (commit it with the fix). Prints runs, seed and duration."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzzing" / "corpus"


def _child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    with atheris.instrument_imports(include=["dattui"]):
        from fuzzing.targets import TARGETS, seeds
    fn = TARGETS[target]
    with tempfile.TemporaryDirectory() as seed_dir:
        for i, s in enumerate(seeds(target)):
            Path(seed_dir, f"seed-{i}").write_bytes(s)
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
        atheris.Setup([sys.argv[0], *libfuzzer_args, f"-artifact_prefix={CORPUS / target}/crash-",
                       "-max_len=65536", seed_dir], fn)
        atheris.Fuzz()


def run(target: str, runs: int | None, seconds: float | None, seed: int) -> int:
    args = [f"-seed={seed}"]
    if runs is not None:
        args.append(f"-runs={runs}")
    if seconds is not None:
        args.append(f"-max_total_time={int(seconds)}")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, __file__, "--child", target, *args], capture_output=True, text=True)
    took = time.monotonic() - t0
    done = [line for line in p.stderr.splitlines() if line.startswith("Done ")]
    print(f"fuzz {target}: seed {seed}, {done[-1] if done else 'no summary'}, {took:.1f} s wall, "
          f"exit {p.returncode}")
    if p.returncode != 0:
        print(p.stderr[-3000:], file=sys.stderr)
    return p.returncode


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3:])
        return 0
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from fuzzing.targets import TARGETS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", choices=[*TARGETS, "all"])
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.runs is None and a.seconds is None:
        a.seconds = 60
    targets = list(TARGETS) if a.target == "all" else [a.target]
    return max(run(t, a.runs, a.seconds, a.seed) for t in targets)


if __name__ == "__main__":
    sys.exit(main())
