import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT), str(ROOT / "tests")):  # engine/, tui/ and netlab importable
    if p not in sys.path:
        sys.path.insert(0, p)


@pytest.fixture
def lab():
    """A netlab.Lab torn down after the test (skips unless root with iproute2)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    if not shutil.which("ip"):
        pytest.skip("needs iproute2 ('ip') for network namespaces")
    from netlab import Lab

    with Lab() as the_lab:
        yield the_lab
