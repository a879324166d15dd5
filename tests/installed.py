"""The `dattui` that end-to-end tests start: the one installed from the built wheel.

scripts/test.sh builds the wheel, installs it into a clean virtual environment
(no repository on `sys.path`, no editable install) and exports DATTUI_VENV.
Every test that starts a dattui process (CLI, daemon, lanes, namespaces, tmux)
takes its command line from here, so what is tested is what users install.

Run without test.sh (a developer's quick `pytest`), DATTUI_VENV is unset and
this checkout's tree is used instead (whatever is installed in the venv);
under CI (CI=true) that is an error, not a silent fallback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_VENV = os.environ.get("DATTUI_VENV")
if not _VENV and os.environ.get("CI") == "true":
    raise RuntimeError("CI=true but DATTUI_VENV is unset: run the suite through scripts/test.sh")

#: the Python of the installed wheel's venv (or this interpreter, from a checkout)
PYTHON = str(Path(_VENV) / "bin" / "python") if _VENV else sys.executable
#: True when tests run against the installed wheel
FROM_WHEEL = bool(_VENV)


def dattui_cmd(*args) -> list[str]:
    """argv that runs `dattui ARGS...` as a user would."""
    if _VENV:
        return [str(Path(_VENV) / "bin" / "dattui"), *map(str, args)]
    return checkout_cmd(sys.executable, *args)


def checkout_cmd(python: str, *args) -> list[str]:
    """argv that runs this checkout's `dattui ARGS...` with `python` (say, a venv
    with another aioquic), the checkout first on sys.path, whatever is installed."""
    return [str(python), "-P", "-c", _FROM_CHECKOUT.format(root=str(ROOT), module="dattui"),
            *map(str, args)]


def module_cmd(module: str, *args) -> list[str]:
    """argv that runs `python -m dattui.MODULE ARGS...` with the installed package."""
    if _VENV:
        return [PYTHON, "-P", "-m", "dattui." + module, *map(str, args)]
    return [sys.executable, "-P", "-c", _FROM_CHECKOUT.format(root=str(ROOT), module="dattui." + module),
            *map(str, args)]


_FROM_CHECKOUT = ("import runpy, sys; sys.path.insert(0, {root!r}); "
                  "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
