"""The typed modules ([tool.mypy] in pyproject.toml) pass mypy."""

import subprocess
import sys

import pytest

from installed import ROOT


def test_mypy_passes_on_the_typed_modules():
    pytest.importorskip("mypy", reason="mypy comes with the test extras (scripts/test.sh)")
    p = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--config-file",
                        str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Success" in p.stdout
