"""dattui: move research data directly between institutions.

Installed, the package is `dattui` with `dattui.engine`, `dattui.tui` and
`dattui.config` inside it (setup.py maps the repository's top-level folders
there). In a checkout those folders sit beside this one; so that
`python -m dattui` and the tests also work from a checkout without an
install, the checkout's root is added to this package's search path then.
"""

import os as _os

_here = _os.path.dirname(_os.path.abspath(__file__))
_checkout = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "engine")) and _os.path.isfile(
        _os.path.join(_checkout, "engine", "__init__.py")):
    __path__.append(_checkout)  # noqa: F821 - a package's own __path__
