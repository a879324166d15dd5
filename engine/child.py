"""Starting the program's own processes (the daemon, lane workers).

They run as `python -P -m dattui.<module>` with this interpreter: `-P` keeps
the current folder off `sys.path`, so a user's `config.py`, `engine/` or
`dattui/` folder can never stand in for ours. Installed, `dattui` is found in
site-packages as usual; from a plain checkout (no install), the checkout's
root goes on the child's PYTHONPATH so that it finds the same package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import dattui


def module_argv(module: str) -> list[str]:
    """argv for `python -m dattui.MODULE`, safe from the current folder."""
    return [sys.executable, "-P", "-m", "dattui." + module]


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` for a child process that must import this same dattui."""
    env = dict(environ)
    paths = list(dattui.__path__)
    if len(paths) > 1:  # a checkout: dattui/ plus the checkout's root (dattui/__init__.py)
        root = os.path.dirname(os.path.abspath(paths[0]))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
