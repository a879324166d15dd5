"""Dat's habits: `dattui pull`, `sync`, `status`, `keys DIR`, `keys list` with
folders, and an unknown command that names the closest real one (real
processes of the installed dattui)."""

from __future__ import annotations

import json
import subprocess
import time

from cli import ShareProcess, cmd, env, run_clone


def _run(home, *args, cwd=None, timeout=90):
    return subprocess.run(cmd(*args), capture_output=True, text=True, env=env(home), cwd=cwd,
                          timeout=timeout)


def test_unknown_command_names_the_closest(tmp_path):
    p = _run(tmp_path / "h", "clon", "dat://x")
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "dattui: unknown command 'clon': did you mean `dattui clone`?"]
    p = _run(tmp_path / "h", "frobnicate")
    assert p.returncode == 2 and "dattui --help" in p.stderr and len(p.stderr.splitlines()) == 1


def test_status_of_a_plain_folder_says_what_to_do(tmp_path):
    p = _run(tmp_path / "h", "status", tmp_path)
    assert p.returncode == 2 and "neither shared nor cloned" in p.stderr
    assert len(p.stderr.splitlines()) == 1


def test_share_status_pull_sync_and_keys(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("first\n")
    (src / "b.bin").write_bytes(bytes(range(256)) * 1000)
    hs, hc = tmp_path / "hs", tmp_path / "hc"
    sp = ShareProcess(src, hs, "--port", "0")
    try:
        # the share's folder: status, keys DIR, keys list with the folder
        st = json.loads(_run(hs, "status", src, "--json").stdout)
        assert st["role"] == "share" and st["link"] == sp.link and st["complete"]
        assert st["files_total"] == 2 and st["version"] >= 1
        p = _run(hs, "keys", src)
        assert p.returncode == 0 and p.stdout.strip() == sp.link
        p = _run(hs, "keys", "list")
        assert p.returncode == 0 and p.stdout.strip() == f"{sp.link}  {src.resolve()}"

        dst = tmp_path / "dst"
        p, _ = run_clone(sp.link, dst, hc, "--peer", f"127.0.0.1:{sp.port}")
        assert p.returncode == 0, p.stderr
        st = json.loads(_run(hc, "status", dst, "--json").stdout)
        assert st["role"] == "clone" and st["link"] == sp.link and st["complete"]
        assert st["bytes_have"] == st["bytes_total"] == 6 + 256_000

        # a new version: `pull` in the clone's folder (no link given) fetches it and exits 0
        (src / "a.txt").write_text("second version\n")
        share_version = st["version"]
        deadline = time.monotonic() + 60  # the share rescans every 10 s
        while not any(line.get("event") == "version_published" and line["version"] > share_version
                      for line in list(sp.lines)):
            assert time.monotonic() < deadline, "the share never published version 2"
            time.sleep(0.2)
        p = _run(hc, "pull", "--json", "--no-lan", "--peer", f"127.0.0.1:{sp.port}", cwd=dst)
        assert p.returncode == 0, p.stderr
        assert (dst / "a.txt").read_text() == "second version\n"
        done = [json.loads(line) for line in p.stdout.splitlines() if '"done"' in line]
        assert done and done[-1]["version"] > share_version and done[-1]["link"] == sp.link

        # `pull` of a share is refused with what to do; `sync --help` names the folder
        p = _run(hs, "pull", src)
        assert p.returncode == 2 and "is a share, not a clone" in p.stderr
    finally:
        sp.stop()


def test_ls_lists_a_links_files_without_fetching_data(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("x,y\n1,2\n")
    (src / "sub" / "big.bin").write_bytes(b"\0" * 300_000)
    (src / "evil\u202ename.txt").write_text("e")  # a bidi override: allowed, shown escaped
    sp = ShareProcess(src, tmp_path / "hs", "--port", "0")
    try:
        p = _run(tmp_path / "hc", "ls", sp.link, "--json", "--no-lan", "--peer", f"127.0.0.1:{sp.port}",
                 cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        rows = [json.loads(line) for line in p.stdout.splitlines()]
        assert [(r["path"], r["size"]) for r in rows[:-1]] == [
            ("a.csv", 8), ("evil\u202ename.txt", 1), ("sub/big.bin", 300_000)]
        assert rows[-1]["event"] == "listed" and rows[-1]["files"] == 3
        p = _run(tmp_path / "hc", "ls", sp.link, "--no-lan", "--peer", f"127.0.0.1:{sp.port}",
                 cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert "\u202e" not in p.stdout and "evil\\u202ename.txt" in p.stdout
        assert "3 files" in p.stdout.splitlines()[-1]
        # nothing written: no clone folder, no state beside where it ran
        assert sorted(x.name for x in tmp_path.iterdir()) == ["hc", "hs", "src"]
    finally:
        sp.stop()
    # nobody answers: exit 3, one line
    p = _run(tmp_path / "hc", "ls", sp.link, "--no-lan", "--timeout", "2")
    assert p.returncode == 3 and len(p.stderr.strip().splitlines()) == 1, p.stderr
