"""Every decoder that reads network bytes, fuzzed: a short coverage-guided
run per decoder (atheris; scripts/fuzz.py runs long campaigns), and every
input a campaign ever saved under tests/fuzzing/corpus/ replayed as a
regression test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fuzzing.targets import TARGETS
from installed import ROOT

CORPUS = ROOT / "tests" / "fuzzing" / "corpus"
RUNS, SEED = 4000, 20261206


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_coverage_guided_run_finds_nothing(target, capsys):
    pytest.importorskip("atheris", reason="atheris comes with the test extras (scripts/test.sh)")
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz.py"), target, "--runs", str(RUNS),
                        "--seed", str(SEED)], capture_output=True, text=True, timeout=300)
    with capsys.disabled():
        print("\n" + p.stdout.strip())  # runs, seed and duration, in the suite's output
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"Done {RUNS} runs" in p.stdout


def test_seeds_and_saved_inputs_decode_or_fail_cleanly():
    """The seeds every campaign starts from, and every input a campaign saved
    (a crash fixed since): each returns or raises the decoder's own error."""
    from fuzzing.targets import seeds
    saved = sorted(f for f in CORPUS.glob("*/*") if f.is_file()) if CORPUS.exists() else []
    for name, target in TARGETS.items():
        for data in seeds(name):
            target(data)
    for path in saved:
        TARGETS[path.parent.name](path.read_bytes())
