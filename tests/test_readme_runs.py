"""README's "Install and run" command, verbatim, in a fresh copy of the
repository: it installs dattui and shares the shipped example dataset,
printing a dat:// link; the collaborator's command then clones it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from cli import cmd, env
from installed import ROOT


def _install_and_run() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Install and run"):text.index("## Install and test")]
    first = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert first, "README's Install and run has no sh block"
    return first.group(1)


def _fresh_copy(dest: Path) -> Path:
    """The repository's tracked files as they are in the work tree (a fresh
    clone of what would be committed), without venvs or build output."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    return dest


def test_install_and_run_verbatim_then_clone(tmp_path):
    command = _install_and_run()
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install . && ")
    assert "./example-data" in command
    repo = _fresh_copy(tmp_path / "repo")
    home = tmp_path / "home"
    e = env(home)  # DATTUI_HOME in a temporary folder; DHT off: no internet here
    e["PATH"] = os.environ["PATH"]
    proc = subprocess.Popen(["bash", "-c", command], cwd=repo, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        link = port = None
        deadline = time.monotonic() + 400  # pip builds and installs first
        for line in proc.stdout:
            m = re.search(r"dat://[0-9a-f]{64}", line)
            link = link or (m.group(0) if m else None)
            p = re.search(r"on UDP port (\d+)", line)
            if p:
                port = int(p.group(1))
            if link and port:
                break
            assert time.monotonic() < deadline
        assert link and port, proc.stderr.read() if proc.poll() is not None else "no link printed"
        installed = repo / ".venv" / "bin" / "dattui"
        assert installed.exists()

        # the collaborator's command (README's second block), with a known peer address
        dst = tmp_path / "example-copy"
        p = subprocess.run(cmd("clone", link, dst, "--no-lan", "--peer", f"127.0.0.1:{port}"),
                           env=env(tmp_path / "hc"), capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        for f in (ROOT / "example-data").rglob("*"):
            rel = f.relative_to(ROOT / "example-data")
            if f.is_file() and ".dat" not in rel.parts:
                assert (dst / rel).read_bytes() == f.read_bytes(), rel
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


def test_readme_shows_the_collaborators_command():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Install and run"):text.index("## Install and test")]
    blocks = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(blocks) == 2 and blocks[1].startswith(".venv/bin/dattui clone dat://")
    assert "pipx install ." in section and ". .venv/bin/activate" in section
