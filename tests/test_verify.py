"""`dattui verify`: a damaged byte in a finished clone is found (file and block
named), and the next clone fetches only that block; receipts work with
`sha256sum -c`."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from cli import ShareProcess, cmd, env, run_clone
from helpers import tree, visible

BS = 262144


def verify(folder, home, *extra):
    p = subprocess.run(cmd("verify", folder, *extra), capture_output=True, text=True,
                       env=env(home), timeout=60)
    assert "Traceback" not in p.stderr
    return p


def flip(path, offset) -> None:
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as they were


@pytest.fixture
def cloned(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(10 * BS + 1234))
    (src / "sub" / "small.txt").write_text("small\n")
    sp = ShareProcess(src, tmp_path / "hs", "--port", "0")
    dst, home = tmp_path / "dst", tmp_path / "hc"
    p, lines = run_clone(sp.link, dst, home, "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    yield src, sp, dst, home
    sp.stop()


def test_a_flipped_byte_is_found_and_only_its_block_is_fetched_again(cloned):
    src, sp, dst, home = cloned
    assert verify(dst, home).returncode == 0
    flip(dst / "big.bin", 7 * BS + 100)
    p = verify(dst, home)
    assert p.returncode == 1
    assert "damaged" in p.stdout and "big.bin (block 7)" in p.stdout
    # the first verify marked block 7 unverified: from now on the clone lacks it
    p = verify(dst, home, "--json")
    objs = [json.loads(l) for l in p.stdout.splitlines()]
    assert {"path": "big.bin", "status": "incomplete", "blocks": [7]}.items() <= objs[0].items()
    assert objs[-1]["event"] == "verified" and objs[-1]["ok"] is False
    p, lines = run_clone(sp.link, dst, home, "--peer", f"127.0.0.1:{sp.port}")
    assert p.returncode == 0, p.stderr
    assert lines[-1]["bytes_received"] == BS  # exactly the damaged block
    assert visible(tree(dst)) == visible(tree(src))
    assert verify(dst, home).returncode == 0


def test_clone_verify_finds_damage_first_and_fetches_it(cloned):
    src, sp, dst, home = cloned
    flip(dst / "big.bin", 10 * BS + 5)  # the short last block
    (dst / "sub" / "small.txt").unlink()
    p, lines = run_clone(sp.link, dst, home, "--peer", f"127.0.0.1:{sp.port}", "--verify")
    assert p.returncode == 0, p.stderr
    assert lines[0]["event"] == "verified" and sorted(lines[0]["mismatched"]) == ["big.bin", "sub/small.txt"]
    assert lines[-1]["bytes_received"] == 1234 + 6
    assert visible(tree(dst)) == visible(tree(src))


def test_missing_and_extra_files_are_reported(cloned):
    src, sp, dst, home = cloned
    (dst / "sub" / "small.txt").unlink()
    (dst / "stray.txt").write_text("not from the share\n")
    p = verify(dst, home)
    assert p.returncode == 1
    assert "missing    sub/small.txt" in p.stdout and "extra      stray.txt" in p.stdout


def test_receipt_passes_sha256sum_on_the_clone_and_fails_on_a_damaged_copy(cloned, tmp_path):
    src, sp, dst, home = cloned
    receipt = tmp_path / "receipt.json"
    p = verify(dst, home, "--receipt", receipt)
    assert p.returncode == 0, p.stdout + p.stderr
    obj = json.loads(receipt.read_text())
    assert obj["link"] == sp.link and obj["version"] >= 1 and len(obj["signature"]) == 128
    assert {f["path"] for f in obj["files"]} == {"big.bin", "sub/small.txt"}
    assert all(len(f["merkle_root"]) == 64 and len(f["sha256"]) == 64 for f in obj["files"])
    sums = str(receipt) + ".sha256"
    assert subprocess.run(["sha256sum", "-c", sums], cwd=dst, capture_output=True).returncode == 0
    # a copy of the folder, elsewhere, without its state: checked against the receipt alone
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", dst, copy], check=True)
    subprocess.run(["rm", "-rf", copy / ".dat"], check=True)
    assert verify(copy, home, "--receipt", receipt).returncode == 0
    flip(copy / "big.bin", 3)
    assert subprocess.run(["sha256sum", "-c", sums], cwd=copy, capture_output=True).returncode != 0
    p = verify(copy, home, "--receipt", receipt)
    assert p.returncode == 1 and "damaged    big.bin" in p.stdout


def test_verify_of_a_folder_without_state_is_one_line(tmp_path):
    (tmp_path / "plain").mkdir()
    p = verify(tmp_path / "plain", tmp_path / "h")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no dattui state" in p.stderr
