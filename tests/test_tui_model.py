"""The dashboard's pure parts: the model, the formatting, path completion, and
the fake engine's own contract."""

from __future__ import annotations

from pathlib import Path

from dattui.engine.events import FileCompleted, PeerConnected, PathKind, Role, State, TransferStatus
from fake_engine import (
    GENOMES,
    SURVEY,
    FakeEngine,
    demo_recording,
    flood,
    from_json,
    load_recording,
    to_json,
)
from dattui.tui.format import bar, fit, fit_middle, name_of, percent, safe, short_link
from dattui.tui.model import HISTORY_SECONDS, Dashboard
from dattui.tui.widgets.paths import IsCloneTarget, IsFolder, IsLink, complete_path

ROOT = Path(__file__).resolve().parent.parent


def status(tid="t1", **kw) -> TransferStatus:
    base = dict(tid=tid, role=Role.CLONE, state=State.TRANSFERRING, path="/data/x",
                link="dat://" + "a" * 64)
    base.update(kw)
    return TransferStatus(**base)


# ---- model ------------------------------------------------------------------------


def test_apply_reports_changes_and_keeps_one_rate_sample_a_second():
    m = Dashboard()
    assert m.apply([status(rate_down=10.0)], now=100.2)
    assert not m.apply([status(rate_down=10.0)], now=100.5)  # same snapshot
    assert m.apply([status(rate_down=30.0)], now=100.9)      # same second: replaced
    m.apply([status(rate_down=50.0)], now=101.1)
    h = m.history("t1")
    assert len(h) == HISTORY_SECONDS
    assert h[-2:] == [30.0, 50.0]
    assert h[0] == 0.0


def test_history_keeps_a_zero_so_a_steady_rate_is_drawn():
    m = Dashboard(history_seconds=4)
    for t in range(10):
        m.apply([status(rate_down=7.0)], now=float(t))
    assert m.history("t1") == [0.0, 7.0, 7.0, 7.0]


def test_removed_transfers_are_forgotten():
    m = Dashboard()
    m.apply([status("a"), status("b")], now=0)
    m.apply([status("b")], now=1)
    assert list(m.transfers) == ["b"]
    assert m.history("a") == [0.0] * HISTORY_SECONDS


def test_events_are_bounded_and_read_after_a_sequence_number():
    m = Dashboard(event_capacity=100, attempt_capacity=10)
    for e in flood("t1", 1000):
        m.add_event(e, stamp=0.0)
    assert m.event_seq == 1000
    entries, skipped = m.events_after(0, limit=30)
    assert [e.seq for e in entries] == list(range(971, 1001))
    assert skipped == 970
    entries, skipped = m.events_after(995, limit=30)
    assert [e.seq for e in entries] == [996, 997, 998, 999, 1000] and skipped == 0
    assert m.events_after(1000) == ([], 0)
    # every tenth flood event is a PeerFound: an attempt
    attempts, skipped = m.attempts_after(0, limit=500)
    assert len(attempts) == 10 and skipped == 90


def test_only_peer_events_are_attempts():
    m = Dashboard()
    m.add_event(FileCompleted("t1", "a", 1), 0.0)
    m.add_event(PeerConnected("t1", "p", "1.2.3.4:5", PathKind.PUNCHED, 0.5, True), 0.0)
    entries, _ = m.attempts_after(0)
    assert [type(e.event) for e in entries] == [PeerConnected]


# ---- formatting -----------------------------------------------------------------------


def test_names_links_and_numbers():
    assert name_of(status(path="/srv/data/survey-2024/")) == "survey-2024"
    assert short_link("dat://0123456789abcdef" + "0" * 48) == "0123456789ab"
    assert percent(0.9999) == "99.9%"
    assert percent(1.0) == "100.0%"
    assert bar(0.5, 10).plain == "█████░░░░░"
    assert bar(0.999, 10).plain == "█████████░"  # never full before it is complete
    assert bar(1.0, 4).plain == "████"


def test_fitting_text():
    assert fit("abcdef", 4) == "…def"
    assert fit_middle("198.51.100.20:40112", 11) == "198.5…40112"
    assert fit_middle("short", 10) == "short"
    assert safe("evil\x1b[2Jname") == "evil\\x1b[2Jname"


# ---- paths ------------------------------------------------------------------------------


def test_complete_path(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    base = str(tmp_path) + "/"
    assert complete_path(base + "res") == base + "results/"
    assert complete_path(base + "re") == base + "reports/"  # first in order
    assert complete_path(base + "rea") is None               # files are not offered
    assert complete_path(base + "rea", folders_only=False) == base + "readme.txt"
    assert complete_path(base) == base + "reports/"
    assert complete_path(base + ".h") == base + ".hidden/"
    assert complete_path(base + "results/") is None
    assert complete_path(str(tmp_path / "nope" / "x")) is None
    assert complete_path("") is None


def test_complete_path_keeps_the_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    assert complete_path("~/da") == "~/data/"


def test_validators(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert IsFolder().validate(str(tmp_path)).is_valid
    assert not IsFolder().validate(str(f)).is_valid
    assert not IsFolder().validate(str(tmp_path / "nope")).is_valid
    assert not IsFolder().validate("  ").is_valid
    assert IsCloneTarget().validate(str(tmp_path / "new")).is_valid
    assert not IsCloneTarget().validate(str(tmp_path / "a" / "b")).is_valid
    assert not IsCloneTarget().validate(str(f)).is_valid
    assert IsLink().validate("dat://" + "AB" * 32).is_valid
    assert not IsLink().validate("dat://1234").is_valid


# ---- the fake engine ---------------------------------------------------------------------


def test_json_round_trip_of_every_frame():
    for _, item in demo_recording():
        items = item if isinstance(item, tuple) else (item,)
        for obj in items:
            assert from_json(to_json(obj)) == obj


async def test_fake_engine_replays_and_records():
    engine = FakeEngine(load_recording("demo"), step=5.0)
    first = await engine.status()
    assert [s.tid for s in first][:2] == [SURVEY, GENOMES]
    assert engine.now == 0.0
    await engine.status()
    assert engine.now == 5.0
    engine.advance_to_end()
    assert engine.finished
    await engine.pause(GENOMES)
    assert {s.tid: s.state for s in await engine.status()}[GENOMES] is State.PAUSED
    await engine.remove(SURVEY)
    assert SURVEY not in {s.tid for s in await engine.status()}
    page = await engine.files(GENOMES, offset=10, limit=5, pattern="figures", sort="size")
    assert page.total == 247 and len(page.files) == 5
    assert [f.size for f in page.files] == sorted((f.size for f in page.files), reverse=True)
    assert engine.calls == [("pause", GENOMES), ("remove", SURVEY)]
    results = [r async for r in engine.doctor()]
    checks = [r for r in results if r.name != "verdict"]
    assert [r.ok for r in checks].count(False) == 1  # the NAT mapping
    assert results[-1].name == "verdict" and results[-1].ok is False
    events = engine.events()
    first_event = await events.__anext__()
    assert first_event.tid == SURVEY


def test_the_dashboard_uses_only_the_engine_interface():
    # events, the daemon interface, and link parsing: never the engine's internals
    allowed = {"dattui.engine.events", "dattui.engine.daemon.interface", "dattui.engine.keys",
               "dattui.engine.errors"}
    tui = ROOT / "tui"
    dashboard_files = [tui / "app.py", tui / "format.py", tui / "model.py", tui / "messages.py",
                       *(tui / "screens").glob("*.py"), *(tui / "widgets").glob("*.py")]
    for f in dashboard_files:
        for line in f.read_text().splitlines():
            line = line.strip()
            if line.startswith(("from dattui.engine", "import dattui.engine", "from ..engine", "from ...engine")):
                module = line.split()[1]
                assert module in allowed, f"{f.relative_to(ROOT)}: {line}"


def test_path_attempts_are_shown_on_the_connectivity_screen():
    from dattui.engine.events import PathAttempted
    from dattui.tui.format import attempt_text
    ev = PathAttempted("t" * 16, "203.0.113.5:3282", "relay",
                       "no probe answered yet: relaying through 203.0.113.10:3478")
    text = attempt_text(ev, {}).plain
    assert "relay" in text and "203.0.113.5:3282" in text and "no probe answered" in text


def test_a_clone_that_left_with_everything_is_not_lost():
    from dattui.engine.events import PeerCompleted, PeerDisconnected, PeerProgressed
    from dattui.tui.format import attempt_text, event_text
    from dattui.tui.model import Dashboard
    left = PeerDisconnected("t", "0123abcd", "192.0.2.7:3282", "left with the whole version")
    assert attempt_text(left, {}).plain.split()[1] == "left"
    gone = PeerDisconnected("t", "0123abcd", "192.0.2.7:3282", "idle timeout")
    assert attempt_text(gone, {}).plain.split()[1] == "lost"
    done = PeerCompleted("t", "0123abcd", "192.0.2.7:3282", 3, 5, 1000)
    assert "has the whole version 3" in event_text(done, {}).plain
    m = Dashboard()
    m.add_event(PeerProgressed("t", "0123abcd", "192.0.2.7:3282", 3, 10, 1000, 0, 5, 1.0), 0.0)
    assert m.event_seq == 0  # progress is in the status, not the log
