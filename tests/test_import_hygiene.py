"""The engine knows nothing of the screen: importing it pulls in neither textual nor rich."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_engine_imports_no_front_end():
    code = (
        "import sys, pkgutil, importlib, dattui.engine as engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'dattui.engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'rich') or n.startswith('dattui.tui'))\n"
        "print(','.join(bad))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ""


def test_no_engine_source_mentions_front_ends():
    for f in (ROOT / "engine").rglob("*.py"):
        text = f.read_text()
        for bad in ("import textual", "from textual", "import rich", "from rich", "from dattui.tui",
                    "import dattui.tui", "from ..tui", "from ...tui"):
            assert bad not in text, f"{f} contains {bad!r}"
