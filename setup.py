"""Package layout: the repository's top-level folders engine/, tui/ and config/
(the design card's layout) install as dattui.engine, dattui.tui and
dattui.config, found rather than listed. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

FOLDERS = ("engine", "tui", "config")

setup(
    packages=["dattui"] + ["dattui." + p for p in find_packages(
        include=[*FOLDERS, *(f + ".*" for f in FOLDERS)])],
    package_dir={"dattui": "dattui", **{"dattui." + f: f for f in FOLDERS}},
)
