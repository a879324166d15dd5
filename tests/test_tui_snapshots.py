"""Snapshot tests (pytest-textual-snapshot) of every screen at 80x24 and 120x40.

The data is the committed recording replayed to its end; the rate graph follows
the fake engine's virtual time and log stamps are a fixed time in UTC, so the
pictures do not move. After a deliberate change to the screens:

    python -m pytest tests/test_tui_snapshots.py --snapshot-update

and look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import time

import pytest
from textual.widgets import Input, RichLog, Static

from fake_engine import FakeEngine, dashboard, load_recording, share_with_clones_recording
from dattui.tui.screens.connectivity import ConnectivityScreen
from dattui.tui.screens.help import HelpScreen
from dattui.tui.screens.log import LogScreen
from dattui.tui.screens.modals import AddShareModal, ConfirmModal, LinkModal
from dattui.tui.screens.transfer import TransferScreen
from dattui.tui.widgets.file_table import FileTable

SIZES = [(80, 24), (120, 40)]


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def until(pilot, predicate, timeout: float = 5.0) -> None:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "the app did not settle"
        await pilot.pause(0.02)


def scenario(engine: FakeEngine, keys: tuple[str, ...] = (), ready=None):
    """run_before: replay to the end, press `keys`, wait until `ready(app)`."""

    async def run_before(pilot) -> None:
        app = pilot.app
        await until(pilot, lambda: engine.finished)
        calls = engine.status_calls
        await until(pilot, lambda: engine.status_calls >= calls + 2)  # one poll after the end
        for key in keys:
            await pilot.press(key)
        if ready is not None:
            await until(pilot, lambda: ready(app))
        for widget in app.screen.query(Input):
            widget.cursor_blink = False  # a blinking cursor would make the picture flicker
        await pilot.pause(0.1)

    return run_before


def files_loaded(app) -> bool:
    return isinstance(app.screen, TransferScreen) and app.screen.query_one(FileTable).total > 0


def checks_done(app) -> bool:
    return isinstance(app.screen, ConnectivityScreen) and "done" in str(
        app.screen.query_one("#checks-status").render()
    )


def log_loaded(app) -> bool:
    if not isinstance(app.screen, LogScreen):
        return False
    text = "".join(line.text for line in app.screen.query_one(RichLog).lines)
    return "sample_000122.h5" in text  # the last event of the recording


SCREENS = {
    "shares": ((), lambda app: app.screen.query_one("#transfers").row_count == 4),
    "transfer": (("down", "enter"), files_loaded),
    "connectivity": (("d",), checks_done),
    "log": (("l",), log_loaded),
    "help": (("question_mark",), lambda app: isinstance(app.screen, HelpScreen)),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare, screen, size):
    engine = FakeEngine(load_recording("demo"))
    keys, ready = SCREENS[screen]
    assert snap_compare(dashboard(engine), terminal_size=size,
                        run_before=scenario(engine, keys, ready))


DIALOGS = {
    "add_share": (("a",), lambda app: isinstance(app.screen, AddShareModal)),
    "confirm_remove": (("down", "delete"), lambda app: isinstance(app.screen, ConfirmModal)),
    "link": (("y",), lambda app: isinstance(app.screen, LinkModal)),
}


@pytest.mark.parametrize("dialog", list(DIALOGS))
def test_dialog(snap_compare, dialog):
    engine = FakeEngine(load_recording("demo"))
    keys, ready = DIALOGS[dialog]
    assert snap_compare(dashboard(engine), terminal_size=(80, 24),
                        run_before=scenario(engine, keys, ready))


def test_transfer_filtered_and_sorted(snap_compare):
    engine = FakeEngine(load_recording("demo"))

    def ready(app) -> bool:
        return files_loaded(app) and "sort: size" in str(
            app.screen.query_one("#files-count", Static).render()
        )

    assert snap_compare(
        dashboard(engine), terminal_size=(80, 24),
        run_before=scenario(engine, ("down", "enter", "slash", "f", "i", "g", "enter", "s"),
                            ready),
    )


def test_shares_without_colour(snap_compare, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    engine = FakeEngine(load_recording("demo"))
    assert snap_compare(dashboard(engine), terminal_size=(80, 24),
                        run_before=scenario(engine, (), SCREENS["shares"][1]))


def test_share_with_clones_reporting_progress(snap_compare):
    """A share's screen: its clones' progress in the summary and the 'has' column."""
    engine = FakeEngine(share_with_clones_recording())
    assert snap_compare(dashboard(engine), terminal_size=(80, 24),
                        run_before=scenario(engine, ("enter",), files_loaded))
