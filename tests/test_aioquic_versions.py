"""The aioquic versions the pin admits, and an aioquic the fast paths do not support.

For the lowest and the highest aioquic that pyproject.toml admits, a virtualenv
with that aioquic and the other dependencies (kept in the checkout's
`.venv-aioquic-<version>/` and reused) runs this checkout's `dattui share` and
`dattui clone` over loopback, with the fast paths on and off
(DATTUI_FAST_PATH): the clone is byte-identical, and the PeerConnected events
say which fast paths each end ran. In process, an aioquic that behaves
otherwise (1.7.0's stream sender) or claims another version gets transfers
through aioquic's own code.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import aioquic
import pytest
from aioquic.quic.connection import QuicConnection
from aioquic.quic.stream import QuicStreamSender
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from dattui.engine import events as ev
from dattui.engine.transport import aioquic_compat
from dattui.engine.transport.fastconn import DattuiConnection
from dattui.engine.transport.quic import QuicEndpoint
from cli import env, follow_share
from helpers import engine, make_tree, tree, visible
from installed import ROOT, checkout_cmd

ALL_FAST = tuple(sorted(aioquic_compat.VERIFIED))


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pin() -> SpecifierSet:
    (req,) = [d for d in _project()["dependencies"] if re.match(r"aioquic\b", d)]
    return SpecifierSet(req[len("aioquic"):])


def _verified_everywhere() -> list[str]:
    """Versions on which every fast path is verified."""
    sets = [set(v) for v in aioquic_compat.VERIFIED.values()]
    return sorted(set.intersection(*sets), key=Version)


@functools.cache
def _released() -> list[str]:
    """aioquic's released versions, from the package index (pip's own client);
    the verified ones when the index cannot be asked."""
    p = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "aioquic",
                        "--disable-pip-version-check"], capture_output=True, text=True, timeout=60)
    m = re.search(r"Available versions: (.+)", p.stdout)
    if p.returncode != 0 or not m:
        return _verified_everywhere()
    return [v.strip() for v in m.group(1).split(",")]


def _admitted(end: str) -> str:
    """The lowest or the highest released aioquic the pin admits."""
    admitted = sorted((v for v in _released() if v in _pin()), key=Version)
    assert admitted, f"no released aioquic satisfies {_pin()}"
    return admitted[0] if end == "lowest" else admitted[-1]


def test_the_pin_admits_only_versions_every_fast_path_was_verified_on():
    pin = _pin()
    verified = _verified_everywhere()
    assert pin.contains(verified[0]) and pin.contains(verified[-1])
    for too_old in ("1.6.1", "1.7.0"):  # run, but through aioquic's own code only
        assert not pin.contains(too_old)
    assert not pin.contains("1.8.0")  # private fields move between minor versions
    lowest = min((v for v in ("1.7.0", "1.7.1", "1.7.2") if v in pin), key=Version)
    assert lowest in verified


# ---- real transfers on the lowest and the highest admitted aioquic ---------------------
def _venv(version: str) -> Path:
    """`.venv-aioquic-VERSION/` of the checkout, made once: that aioquic and the
    project's other dependencies (not dattui: the checkout is run)."""
    venv = ROOT / f".venv-aioquic-{version}"
    python = venv / "bin" / "python"
    stamp = venv / ".complete"
    deps = [f"aioquic=={version}"] + [d for d in _project()["dependencies"]
                                       if not re.match(r"aioquic\b", d)]
    if stamp.exists() and stamp.read_text() == "\n".join(deps):
        return python
    # no pip of its own (ensurepip is most of a venv's making): this pip installs into it
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)],
                   check=True, timeout=120)
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                        "--no-compile", "--disable-pip-version-check", *deps],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    stamp.write_text("\n".join(deps))
    return python


def _transfer(python: Path, tmp: Path, src: Path, fast: bool) -> tuple[Path, list, list]:
    """share + clone, both with `python`; (clone folder, share lines, clone lines)."""
    tag = "on" if fast else "off"
    extra = {"DATTUI_FAST_PATH": "1" if fast else "0"}
    share = subprocess.Popen(checkout_cmd(python, "share", src, "--json", "--no-lan"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env(tmp / "home-share", **extra))  # the folder's key is there
    try:
        try:
            share_lines = follow_share(share)
        except ValueError:  # it said nothing, or not JSON: it failed
            share.kill()
            pytest.fail("share failed: " + share.stderr.read()[-3000:])
        link, port = share_lines[0]["link"], share_lines[0]["port"]
        dst = tmp / f"clone-{tag}"
        p = subprocess.run(checkout_cmd(python, "clone", link, dst, "--json", "--no-lan",
                                        "--peer", f"127.0.0.1:{port}"),
                           capture_output=True, text=True, timeout=60,
                           env=env(tmp / f"home-clone-{tag}", **extra))
        assert p.returncode == 0, p.stderr[-2000:]
        clone_lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    finally:
        share.terminate()
        try:
            share.wait(10)
        except subprocess.TimeoutExpired:
            share.kill()
            share.wait()
    return dst, share_lines, clone_lines


def _fast_paths(lines: list[dict]) -> list[tuple]:
    return [tuple(l["fast_paths"]) for l in lines if l.get("event") == "peer_connected"]


@pytest.fixture
def dataset(tmp_path) -> Path:
    src = make_tree(tmp_path / "src")
    (src / "bulk.bin").write_bytes(os.urandom(3 << 20))  # enough for the bulk paths
    return src


@pytest.mark.parametrize("end", ["lowest", "highest"])
def test_loopback_transfer_on_admitted_aioquic(end, dataset, tmp_path):
    version = _admitted(end)
    python = _venv(version)
    got = subprocess.run([str(python), "-c", "import aioquic; print(aioquic.__version__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert got == version
    for fast in (True, False):
        dst, share_lines, clone_lines = _transfer(python, tmp_path, dataset, fast)
        assert visible(tree(dst)) == visible(tree(dataset))
        assert (dst / "bulk.bin").read_bytes() == (dataset / "bulk.bin").read_bytes()
        ends = _fast_paths(clone_lines) + _fast_paths(share_lines)
        assert len(ends) >= 2, (clone_lines, share_lines)
        if not fast:
            assert set(ends) == {()}
        elif version in _verified_everywhere():
            assert set(ends) == {ALL_FAST}
        else:
            pytest.fail(f"aioquic {version} is admitted by the pin but no fast path is verified "
                        f"on it (ran: {ends}): run tests/test_fastconn.py, test_fastack.py, "
                        "test_shortcrypto.py, test_pacing.py, test_pmtu.py on it and add it to "
                        "aioquic_compat.VERIFIED, or narrow the pin")


# ---- an aioquic the fast paths do not support, in process -----------------------------
@pytest.fixture
def fresh_decision():
    aioquic_compat.reset()
    yield
    aioquic_compat.reset()


async def _in_process_transfer(tmp_path: Path) -> list[ev.PeerConnected]:
    src = make_tree(tmp_path / "src")
    (src / "bulk.bin").write_bytes(os.urandom(2 << 20))
    a = await engine(tmp_path / "ha")
    b = await engine(tmp_path / "hb")
    qa, qb = a.subscribe(), b.subscribe()
    try:
        tid = await a.share(src)
        dst = tmp_path / "dst"
        ctid = await b.clone(a.transfer(tid).link, dst, peers=[f"127.0.0.1:{a.port}"])
        await asyncio.wait_for(b.wait(ctid, find_timeout=10), 30)
        assert visible(tree(dst)) == visible(tree(src))
    finally:
        await b.close()
        await a.close()
    seen = []
    for q in (qa, qb):
        while not q.empty():
            e = q.get_nowait()
            if isinstance(e, ev.PeerConnected):
                seen.append(e)
    assert len(seen) >= 2
    return seen


async def test_another_aioquic_version_gets_aioquics_own_paths(tmp_path, monkeypatch,
                                                                  fresh_decision):
    monkeypatch.setattr(aioquic, "__version__", "1.6.9")
    st = aioquic_compat.status()
    assert st.on == frozenset() and "not verified on aioquic 1.6.9" in st.describe()
    assert type(QuicEndpoint._connection(aioquic_compat._configuration(True))) is QuicConnection
    for e in await _in_process_transfer(tmp_path):
        assert e.fast_paths == ()


async def test_an_aioquic_that_behaves_otherwise_gets_aioquics_own_stream_paths(
        tmp_path, monkeypatch, fresh_decision):
    """aioquic 1.7.0's sender goes on with a negative size (and marks its buffer
    empty) where 1.7.2 returns at once: under the right version number, the
    self-test alone turns bulkstream (and fastconn, which sends with it) off."""
    real = QuicStreamSender.get_frame

    def get_frame_170(self, max_size, max_offset=None):
        if max_size < 0 and not len(self._pending) and not self._pending_eof:
            self.buffer_is_empty = True
            return None
        return real(self, max_size, max_offset)
    monkeypatch.setattr(QuicStreamSender, "get_frame", get_frame_170)
    st = aioquic_compat.status()
    off = {d.name: d.reason for d in st.decisions if not d.on}
    assert off == {"bulkstream": "self-test: differs from aioquic's own",
                   "fastconn": "needs bulkstream"}
    assert type(QuicEndpoint._connection(aioquic_compat._configuration(True))) is QuicConnection
    for e in await _in_process_transfer(tmp_path):
        assert "fastconn" not in e.fast_paths and "bulkstream" not in e.fast_paths
        assert "fastack" in e.fast_paths  # the rest still runs


def test_doctor_tells_which_fast_paths_run(monkeypatch, fresh_decision):
    from dattui.engine.doctor import _aioquic_check

    monkeypatch.setattr(aioquic, "__version__", "1.6.9")
    r = _aioquic_check()
    assert r.name == "aioquic" and r.ok is True
    assert r.summary.startswith(f"aioquic 1.6.9: {len(ALL_FAST)} of {len(ALL_FAST)} fast paths off")
    assert "not verified on aioquic 1.6.9" in r.detail and "pyproject.toml" in r.advice


async def test_the_switch_turns_every_fast_path_off(tmp_path, monkeypatch, fresh_decision):
    monkeypatch.setenv(aioquic_compat.ENV, "0")
    assert aioquic_compat.status().on == frozenset()
    for e in await _in_process_transfer(tmp_path):
        assert e.fast_paths == ()


async def test_with_everything_verified_every_fast_path_runs(tmp_path, monkeypatch,
                                                             fresh_decision):
    monkeypatch.delenv(aioquic_compat.ENV, raising=False)
    if aioquic.__version__ not in _verified_everywhere():
        pytest.skip(f"aioquic {aioquic.__version__} is not verified")
    assert aioquic_compat.status().on == frozenset(ALL_FAST)
    assert type(QuicEndpoint._connection(aioquic_compat._configuration(True))) is DattuiConnection
    for e in await _in_process_transfer(tmp_path):
        assert e.fast_paths == ALL_FAST


def test_a_failing_self_test_is_aioquics_path_not_an_error():
    def boom(on):
        raise AttributeError("'QuicPacketSpace' object has no attribute 'ack_queue'")
    probes = dict(aioquic_compat.PROBES, fastack=boom)
    st = aioquic_compat.check(aioquic_compat.VERIFIED["fastconn"][-1], environ={}, probes=probes)
    assert "fastack" not in st.on and "fastconn" in st.on
    assert "self-test failed: AttributeError" in st.describe()


def test_importing_the_engine_does_not_need_aiquics_private_constants():
    """Without MAX_ACK_RANGES (aioquic before 1.7) the engine imports, and the
    receive fast path is off."""
    # aioquic 1.7's own code needs the constant: it is gone only while the engine imports
    code = ("import aioquic.quic.connection, aioquic.quic.recovery as r; "
            "kept = r.MAX_ACK_RANGES; del r.MAX_ACK_RANGES; "
            "import dattui.engine.node; "
            "r.MAX_ACK_RANGES = kept; "
            "from dattui.engine.transport import fastconn, aioquic_compat as c; "
            "assert fastconn.MAX_ACK_RANGES is None and not fastconn._aioquic_fits(); "
            "print(sorted(c.status().on))")
    p = subprocess.run([sys.executable, "-P", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                        + code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "fastconn" not in p.stdout and "fastack" in p.stdout
