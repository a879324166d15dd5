"""What a user installs is what we test: the wheel holds every package of the
tree and nothing else at the top level, the installed `dattui` runs every
command's help and the doctor, and the processes it starts itself (daemon,
lanes) cannot be shadowed by the user's current folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from installed import FROM_WHEEL, PYTHON, ROOT, dattui_cmd

needs_wheel = pytest.mark.skipif(not FROM_WHEEL and os.environ.get("CI") != "true",
                                 reason="run through scripts/test.sh (it builds and installs the wheel)")


def _tree_packages() -> set[str]:
    out = {"dattui"}
    for top in ("engine", "tui", "config"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            if "__pycache__" not in rel.parts:
                out.add("dattui." + ".".join(rel.parts))
    return out


def _wheel() -> Path:
    path = os.environ.get("DATTUI_WHEEL")
    assert path, "DATTUI_WHEEL is set by scripts/test.sh"
    return Path(path)


@needs_wheel
def test_the_wheel_holds_every_package_and_only_dattui():
    names = zipfile.ZipFile(_wheel()).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"dattui"}
    packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packages == _tree_packages()
    # every module of the tree is in the wheel, and the data files the program reads
    for top in ("engine", "tui", "config"):
        for f in (ROOT / top).rglob("*.py"):
            assert "dattui/" + str(f.relative_to(ROOT)) in names, f
    assert "dattui/config/default.toml" in names and "dattui/tui/dattui.tcss" in names


@needs_wheel
def test_every_installed_module_imports_from_site_packages(tmp_path):
    code = ("import importlib, pkgutil, sys, dattui\n"
            "mods = [m.name for m in pkgutil.walk_packages(dattui.__path__, 'dattui.')]\n"
            "for m in mods: importlib.import_module(m)\n"
            "import site; sp = site.getsitepackages()[0]\n"
            "import os; print(dattui.__file__); print(len(mods)); print(sorted(os.listdir(sp)))\n")
    p = subprocess.run([PYTHON, "-P", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=120)
    assert p.returncode == 0, p.stderr
    where, count, listing = p.stdout.splitlines()
    assert "site-packages" in where and not where.startswith(str(ROOT) + "/engine")
    assert int(count) >= 100
    top = set(eval(listing))  # noqa: S307 - our own repr of a list of names
    assert not top & {"engine", "tui", "config"}


def _env(home: Path) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    e["DATTUI_HOME"] = str(home)
    return e


COMMANDS = ["share", "clone", "pull", "sync", "status", "ls", "rendezvous", "doctor", "list", "stop",
            "dashboard", "keys"]


def test_help_of_every_command_exits_0_and_the_doctor_reports(tmp_path):
    env = _env(tmp_path / "home")
    for argv in (["--help"], *([c, "--help"] for c in COMMANDS)):
        p = subprocess.run(dattui_cmd(*argv), capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=60)
        assert p.returncode == 0 and "usage: dattui" in p.stdout, (argv, p.stderr)
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "config.toml").write_text("[discovery]\ndht = false\n")
    p = subprocess.run(dattui_cmd("doctor", "--json"), capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    # 0 = direct connections will work, 1 = any other verdict (here: no rendezvous
    # server configured); what matters is a whole report and no crash
    assert p.returncode in (0, 1) and p.stderr == "", p.stderr
    report = json.loads(p.stdout.splitlines()[-1])
    assert report["verdict"]["kind"] == "no_servers"


def _shadowing_folder(where: Path) -> Path:
    """A folder a user might run dattui from: a config.py, an engine/ and a
    dattui/ package of their own, each failing loudly when imported."""
    where.mkdir()
    boom = "raise SystemExit('the user folder was imported')\n"
    (where / "config.py").write_text(boom)
    for pkg in ("engine", "dattui", "tui"):
        (where / pkg).mkdir()
        (where / pkg / "__init__.py").write_text(boom)
    return where


def test_the_daemon_starts_from_a_folder_that_would_shadow_it(tmp_path):
    cwd = _shadowing_folder(tmp_path / "work")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[discovery]\ndht = false\nlan = false\n")
    env = _env(home)
    try:
        p = subprocess.run(dattui_cmd("share", data, "--background", "--port", "0"), capture_output=True,
                           text=True, env=env, cwd=cwd, timeout=90)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("dat://")
        p = subprocess.run(dattui_cmd("list", "--json"), capture_output=True, text=True, env=env,
                           cwd=cwd, timeout=60)
        assert p.returncode == 0, p.stderr
        assert any(json.loads(line)["path"] == str(data) for line in p.stdout.splitlines())
    finally:
        subprocess.run(dattui_cmd("stop"), capture_output=True, env=env, cwd=cwd, timeout=60)


def test_a_lane_worker_starts_from_a_folder_that_would_shadow_it(tmp_path):
    cwd = _shadowing_folder(tmp_path / "work")
    # A clone lane given no peer fails at once and says why over its pipe: it
    # started, imported dattui's worker and clone lane, and spoke the pipe.
    code = ("import asyncio\n"
            "from dattui.engine.lanes.process import LaneProcess\n"
            "async def main():\n"
            "    said = asyncio.get_running_loop().create_future()\n"
            "    lane = LaneProcess(lambda m: said.done() or said.set_result(m))\n"
            "    await lane.start({'role': 'clone', 'public_key': '00' * 32})\n"
            "    print(getattr(await asyncio.wait_for(said, 60), 'reason', '?'))\n"
            "    await lane.stop()\n"
            "asyncio.run(main())\n")
    python = PYTHON if FROM_WHEEL else sys.executable
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if not FROM_WHEEL:
        env["PYTHONPATH"] = str(ROOT)
    p = subprocess.run([python, "-P", "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=90)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "lane failed: KeyError: 'peer_host'"
