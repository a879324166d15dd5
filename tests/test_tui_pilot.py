"""The dashboard driven by keys, as a user would, against a fake engine that
replays recorded events (tests/recordings/demo.json)."""

from __future__ import annotations

import time
from pathlib import Path

from textual import events
from textual.command import CommandPalette
from textual.widgets import DataTable, Input, RichLog, Static

from dattui import config as config_mod
from fake_engine import (
    CLIMATE,
    DOCTOR_RESULTS,
    GENOMES,
    NOTES,
    SURVEY,
    FakeEngine,
    dashboard,
    demo_recording,
    dump_recording,
    flood,
    load_recording,
    load_snapshot,
)
from dattui.tui.screens.connectivity import ConnectivityScreen, check_text
from dattui.tui.screens.help import HelpScreen
from dattui.tui.screens.log import LogScreen
from dattui.tui.screens.modals import AddShareModal, CloneModal, ConfirmModal, LinkModal
from dattui.tui.screens.shares import SharesScreen
from dattui.tui.screens.transfer import TransferScreen
from dattui.tui.widgets.file_table import FileTable

SIZE = (80, 24)
DEMO_TIDS = [SURVEY, GENOMES, CLIMATE, NOTES]  # the order of the recording


async def wait_for(pilot, predicate, timeout: float = 2.0, what: str = "condition") -> float:
    """Pause until `predicate()` holds; the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.01)
    return time.monotonic() - start


def demo_engine(**kw) -> FakeEngine:
    engine = FakeEngine(load_recording("demo"), **kw)
    return engine


async def paste(pilot, text: str) -> None:
    """Paste `text` into the focused widget, as a terminal does (bracketed paste)."""
    pilot.app.focused.post_message(events.Paste(text))
    await pilot.pause()


async def started(pilot, engine: FakeEngine) -> DataTable:
    """Wait for the replay to end and the table to show it."""
    app = pilot.app
    await wait_for(pilot, lambda: engine.finished, 5, "the end of the replay")
    table = app.screen.query_one("#transfers", DataTable)
    await wait_for(pilot, lambda: table.row_count == len(engine.current()), what="rows")
    return table


def row_tids(table: DataTable) -> list[str]:
    return [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]


def cell_text(table: DataTable, tid: str, column: str) -> str:
    return table.get_cell(tid, column).plain.strip()


# ---- the recording ------------------------------------------------------------------


def test_committed_recording_is_the_generated_one():
    path = Path(__file__).parent / "recordings" / "demo.json"
    assert path.read_text(encoding="utf-8") == dump_recording(demo_recording()), (
        "tests/recordings/demo.json is stale: run python tests/fake_engine.py --write"
    )
    assert load_recording("demo") == demo_recording()


# ---- shares --------------------------------------------------------------------------


async def test_a_row_for_every_transfer():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        table = await started(pilot, engine)
        assert row_tids(table) == DEMO_TIDS
        assert cell_text(table, SURVEY, "name") == "survey-2024"
        assert cell_text(table, SURVEY, "role") == "share"
        assert cell_text(table, SURVEY, "state") == "seeding"
        assert cell_text(table, SURVEY, "link") == engine.current()[0].link[6:18]
        assert cell_text(table, GENOMES, "state") == "transferring"
        assert cell_text(table, GENOMES, "peers") == "3"
        assert cell_text(table, GENOMES, "progress") == "44.9%"
        assert cell_text(table, CLIMATE, "state") == "paused"
        hint = app.screen.query_one("#hint", Static).render().plain
        assert "keep going" in hint


async def test_rows_update_in_place_and_the_cursor_stays():
    engine = demo_engine(step=0.0)  # time moves only when the test says so
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#transfers", DataTable)
        await wait_for(pilot, lambda: table.row_count == 4, what="rows")
        await pilot.press("down")
        assert table.cursor_row == 1
        before = cell_text(table, GENOMES, "progress")
        engine.advance(10)
        await wait_for(pilot, lambda: cell_text(table, GENOMES, "progress") != before,
                       what="progress to move")
        assert table.cursor_row == 1
        assert app.screen.selected().tid == GENOMES
        assert row_tids(table) == DEMO_TIDS


async def test_arrows_and_enter_open_a_transfer_with_peers_and_files():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TransferScreen), what="transfer screen")
        screen = app.screen
        assert screen.tid == GENOMES
        peers = screen.query_one("#peers", DataTable)
        await wait_for(pilot, lambda: peers.row_count == 3, what="3 peers")
        paths = {peers.get_cell(k, "path").plain.strip() for k in peers.rows}
        assert paths == {"direct", "relay-udp", "relay-tcp"}
        files = screen.query_one(FileTable)
        await wait_for(pilot, lambda: files.total == 1234, what="1234 files")
        assert files.rows_held > 0
        assert "1,234 files" in screen.query_one("#files-count", Static).render().plain
        await pilot.press("escape")
        assert isinstance(app.screen, SharesScreen)


async def test_filter_narrows_the_files_and_s_cycles_the_sort():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TransferScreen))
        files = app.screen.query_one(FileTable)
        await wait_for(pilot, lambda: files.total == 1234)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"figures")
        await wait_for(pilot, lambda: 0 < files.total < 1234, what="fewer files")
        assert files.total == sum(1 for i in range(1234) if i % 5 == 2)
        assert engine.files_calls[-1]["pattern"] == "figures"
        await pilot.press("enter")  # back to the list
        assert app.focused is files
        assert files.file_at_cursor().path.startswith("figures/")
        await pilot.press("s")
        await wait_for(pilot, lambda: engine.files_calls[-1]["sort"] == "size", what="sort by size")
        await pilot.press("s")
        await wait_for(pilot, lambda: engine.files_calls[-1]["sort"] == "progress")
        await pilot.press("s")
        await wait_for(pilot, lambda: engine.files_calls[-1]["sort"] == "path")


async def test_p_pauses_the_selected_transfer_and_resumes_a_paused_one():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        table = await started(pilot, engine)
        await pilot.press("down", "p")
        await wait_for(pilot, lambda: ("pause", GENOMES) in engine.calls, what="pause call")
        await wait_for(pilot, lambda: cell_text(table, GENOMES, "state") == "paused")
        await pilot.press("down", "p")  # climate-model-output is paused: resume it
        await wait_for(pilot, lambda: ("resume", CLIMATE) in engine.calls, what="resume call")
        assert engine.calls == [("pause", GENOMES), ("resume", CLIMATE)]


async def test_delete_asks_first_then_removes():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        table = await started(pilot, engine)
        await pilot.press("down", "down", "delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("n")  # no
        assert isinstance(app.screen, SharesScreen)
        await pilot.pause(0.1)
        assert engine.calls == []
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_for(pilot, lambda: ("remove", CLIMATE) in engine.calls, what="remove call")
        await wait_for(pilot, lambda: table.row_count == 3, what="the row to go")
        assert CLIMATE not in row_tids(table)


async def test_remove_from_the_transfer_screen_goes_back():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TransferScreen))
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, SharesScreen), what="back to shares")
        assert engine.calls == [("remove", SURVEY)]


async def test_a_shares_a_folder(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (tmp_path / "a-file").write_text("x")
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        table = await started(pilot, engine)
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, AddShareModal))
        # a file is not a folder: refused, with the reason
        await paste(pilot, str(tmp_path / "a-fil"))
        await pilot.press("e", "enter")
        assert isinstance(app.screen, AddShareModal)
        assert "Not a folder" in app.screen.query_one("#share-error", Static).render().plain
        field = app.screen.query_one(Input)
        field.value = ""
        # completion: type the start of the folder's name, accept with the right arrow
        await paste(pilot, str(tmp_path) + "/")
        await pilot.press("r", "e", "s")
        await wait_for(pilot, lambda: field._suggestion == str(folder) + "/", what="completion")
        await pilot.press("right", "enter")
        await wait_for(pilot, lambda: ("share", str(folder)) in engine.calls, what="share call")
        assert isinstance(app.screen, SharesScreen)
        await wait_for(pilot, lambda: table.row_count == 5, what="the new share's row")
        assert cell_text(table, engine.current()[-1].tid, "name") == "results"


async def test_c_clones_a_link(tmp_path):
    engine = demo_engine()
    app = dashboard(engine)
    link = "dat://" + "ab" * 32
    target = tmp_path / "copy"
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CloneModal))
        await pilot.press(*"dat://nope", "enter")
        assert "not a dat:// link" in app.screen.query_one("#clone-error", Static).render().plain
        app.screen.query_one("#clone-link", Input).value = ""
        await paste(pilot, link)
        await pilot.press("enter")
        assert app.focused.id == "clone-path"
        await paste(pilot, str(target))
        await pilot.press("enter")
        await wait_for(pilot, lambda: ("clone", link, str(target)) in engine.calls, what="clone call")
        assert isinstance(app.screen, SharesScreen)


async def test_escape_cancels_a_dialog():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, AddShareModal))
        await pilot.press("escape")
        assert isinstance(app.screen, SharesScreen)
        assert engine.calls == []


async def test_y_shows_and_copies_the_link():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, LinkModal))
        link = engine.current()[0].link
        assert app.clipboard == link
        assert link in app.screen.query_one("#link-text", Static).render().plain
        await pilot.press("enter")
        assert isinstance(app.screen, SharesScreen)


async def test_question_mark_lists_every_binding():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        table = app.screen.query_one("#bindings", DataTable)
        rows = [tuple(c.plain for c in table.get_row_at(i)) for i in range(table.row_count)]
        by_id = {r[2]: r[0] for r in rows if r[2]}
        for binding_id, key in {
            "quit": "q", "help": "?", "add_share": "a", "clone": "c", "pause": "p",
            "remove": "del", "copy_link": "y", "connectivity": "d", "log": "l",
            "filter": "/", "sort": "s",
        }.items():
            assert by_id[binding_id] == key, binding_id
        assert set(config_mod.defaults().keys) <= set(by_id)
        await pilot.press("escape")
        assert isinstance(app.screen, SharesScreen)


async def test_d_shows_the_doctor_checks_and_peer_attempts():
    engine = demo_engine(doctor_delay=0.01)
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectivityScreen))
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.query(".check")) == len(DOCTOR_RESULTS),
                       what="every check")
        assert len(screen.query(".-ok")) == 4
        assert len(screen.query(".-fail")) == 2      # one check, and the verdict
        assert len(screen.query(".-unknown")) == 1
        assert len(screen.query(".-verdict")) == 1
        status = screen.query_one("#checks-status", Static).render().plain
        assert "4 ok, 1 failed, 1 unknown" in status and "done" in status
        attempts = screen.query_one("#attempts", RichLog)
        log_text = "".join(line.text for line in attempts.lines)
        squeezed = "".join(log_text.split())  # lines are wrapped to the width
        assert "relay-tcp" in squeezed and "noreplytothehandshake" in squeezed
        assert engine.doctor_calls == 1
        await pilot.press("r")
        await wait_for(pilot, lambda: engine.doctor_calls == 2)
        await wait_for(pilot, lambda: len(screen.query(".check")) == len(DOCTOR_RESULTS))


async def test_connectivity_rows_arrive_one_by_one_as_checks_finish():
    engine = demo_engine(doctor_manual=True)
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectivityScreen))
        screen = app.screen
        await wait_for(pilot, lambda: engine.doctor_calls == 1)

        def status() -> str:
            return screen.query_one("#checks-status", Static).render().plain

        await pilot.pause(0.1)
        assert len(screen.query(".check")) == 0 and "running the checks" in status()
        for n in range(1, len(DOCTOR_RESULTS) + 1):
            engine.release_checks(1)
            await wait_for(pilot, lambda: len(screen.query(".check")) == n, what=f"row {n}")
            await pilot.pause(0.05)
            rows = list(screen.query(".check"))
            assert len(rows) == n  # one more row for one more check: nothing waits for a batch
            assert rows[-1].result == DOCTOR_RESULTS[n - 1]
            if n < len(DOCTOR_RESULTS):
                assert "running" in status() and "done" not in status()
        await wait_for(pilot, lambda: "done" in status(), what="the end of the stream")
        verdict = list(screen.query(".check"))[-1]
        assert verdict.has_class("-verdict") and verdict.has_class("-fail")
        text = check_text(verdict.result).plain
        assert "verdict" in text and "• transfers still work" in text and "• for direct connections" in text
        assert "4 ok, 1 failed, 1 unknown" in status()   # the verdict is not counted as a check
        # run again: the rows start over and arrive one by one again
        await pilot.press("r")
        await wait_for(pilot, lambda: engine.doctor_calls == 2)
        await pilot.pause(0.05)
        assert len(screen.query(".check")) == 0
        engine.release_checks(2)
        await wait_for(pilot, lambda: len(screen.query(".check")) == 2)


async def test_l_shows_daemon_log_and_events():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen))
        log = app.screen.query_one(RichLog)

        def text() -> str:
            return "\n".join(line.text for line in log.lines)

        await wait_for(pilot, lambda: "sample_000122.h5" in text(), what="the last event")
        assert "resumed 4 transfers" in text()
        assert "bad block 4" in text()


async def test_keys_remapped_in_the_config_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[keys]\npause = "x"\nhelp = "f1"\n')
    cfg = config_mod.load(path)
    engine = demo_engine()
    app = dashboard(engine, config=cfg)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("p")  # no longer bound
        await pilot.pause(0.1)
        assert engine.calls == []
        await pilot.press("x")
        await wait_for(pilot, lambda: engine.calls == [("pause", SURVEY)], what="pause on x")
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        table = app.screen.query_one("#bindings", DataTable)
        rows = [tuple(c.plain for c in table.get_row_at(i)) for i in range(table.row_count)]
        assert ("x", "Pause or resume the selected transfer", "pause") in rows


async def test_command_palette_runs_actions():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"clone a link")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CloneModal), what="clone dialog")
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"open genomes")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TransferScreen), what="transfer")
        assert app.screen.tid == GENOMES


async def test_q_quits_and_leaves_transfers_running():
    engine = demo_engine()
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        await pilot.press("q")
        await wait_for(pilot, lambda: app._exit, what="exit")
    assert engine.calls == []  # nothing paused or removed
    assert not engine.closed   # the caller owns the client


async def test_no_color(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    engine = demo_engine()
    app = dashboard(engine)
    assert app.no_color
    async with app.run_test(size=SIZE) as pilot:
        table = await started(pilot, engine)
        assert table.row_count == 4
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TransferScreen))


# ---- load ---------------------------------------------------------------------------


async def test_stays_responsive_with_50_peers_100k_files_and_an_event_flood():
    snapshot = load_snapshot(peers=50, files=100_000)
    busy = snapshot[0].tid
    engine = FakeEngine([(0.0, snapshot)])
    hz = 10.0
    app = dashboard(engine, refresh_hz=hz)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#transfers", DataTable)
        await wait_for(pilot, lambda: table.row_count == 5, what="rows")
        polls_before, t0 = engine.status_calls, time.monotonic()

        engine.inject(flood(busy, 10_000))
        took = time.monotonic()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TransferScreen), 2.0, "enter")
        screen = app.screen
        files = screen.query_one(FileTable)
        await wait_for(pilot, lambda: files.total == 100_000, 2.0, "100,000 files")
        peers = screen.query_one("#peers", DataTable)
        await wait_for(pilot, lambda: peers.row_count == 50, 2.0, "50 peers")
        assert time.monotonic() - took < 2.0

        # only the rows around the viewport are ever fetched
        assert all(c["limit"] <= 200 for c in engine.files_calls)
        assert files.rows_held <= 200

        await pilot.press("end")
        await wait_for(pilot, lambda: files.cursor == 99_999, 2.0, "the last file")
        await wait_for(pilot, lambda: engine.files_calls[-1]["offset"] > 99_000, 2.0,
                       "a fetch near the end")
        await wait_for(pilot, lambda: files.file_at_cursor() is not None, 2.0, "the last row")

        engine.inject(flood(busy, 10_000))
        await pilot.press("slash", *"sample_0999")
        await wait_for(pilot, lambda: files.total == 100, 2.0, "the filtered files")
        await pilot.press("enter")

        engine.inject(flood(busy, 10_000))
        start = time.monotonic()
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, SharesScreen), 2.0, "escape")
        assert time.monotonic() - start < 2.0

        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen), 2.0, "the log")
        await wait_for(pilot, lambda: app.model.event_seq == 30_000, 5.0, "every event read")

        # polls (and so redraws) stay at the refresh rate whatever the events
        elapsed = time.monotonic() - t0
        assert engine.status_calls - polls_before <= hz * elapsed + 3
        log = app.screen.query_one(RichLog)
        await pilot.pause(0.3)
        assert len(log.lines) < 2000  # the flood was summarised, not drawn line by line


async def test_the_engine_going_away_is_reported_not_fatal():
    engine = demo_engine()
    app = dashboard(engine)

    async def broken(*a, **kw):
        raise ConnectionRefusedError("daemon socket closed")

    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, engine)
        engine.status = broken  # the daemon stops answering
        engine.pause = broken
        await wait_for(pilot, lambda: any("does not answer" in n.message
                                          for n in app._notifications), what="notice")
        await pilot.press("p")
        await wait_for(pilot, lambda: any("Pause failed" in n.message
                                          for n in app._notifications), what="failure notice")
        assert isinstance(app.screen, SharesScreen)


# ---- the sharing side sees its collaborators ------------------------------------------

async def test_share_shows_each_clones_progress():
    from fake_engine import share_with_clones_recording
    engine = FakeEngine(share_with_clones_recording())
    app = dashboard(engine)
    async with app.run_test(size=SIZE) as pilot:
        table = await started(pilot, engine)
        # the list's percentage follows the clones, not what the share holds (100 %)
        assert cell_text(table, SURVEY, "progress") == "75.0%"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TransferScreen), what="transfer screen")
        peers = app.screen.query_one("#peers", DataTable)
        await wait_for(pilot, lambda: peers.row_count == 2, what="2 peers")
        has = sorted(peers.get_cell(k, "has").plain.strip() for k in peers.rows)
        assert has == ["50.0%", "done"]
        summary = app.screen.query_one("#summary", Static).render().plain
        assert "2 clones 75.0%" in summary
