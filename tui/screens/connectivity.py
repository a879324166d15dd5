"""Connectivity: the doctor's checks as they finish, and every peer
connection attempt as it happens.

The checks run in a worker (`api.doctor()` streams one `CheckResult` at a
time: the daemon pushes each as it finishes); each becomes a row the moment
it arrives, the tally below counts them, and the verdict comes last, set
apart, with the steps to take. The attempts come from the model's buffer of
peer events, written at most once per refresh.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Label, RichLog, Static

from dattui.engine.daemon.interface import CheckResult

from ..format import attempt_text, safe, stamp_text
from ..widgets.footer import KeysFooter
from ..messages import ModelUpdated

__all__ = ["ConnectivityScreen", "CheckRow", "check_marker", "check_text"]

ATTEMPTS_PER_REFRESH = 200


def check_marker(ok: bool | None) -> Text:
    """[ ok ], [FAIL] or [ ?? ]: readable without colour."""
    if ok is True:
        return Text.assemble("[", (" ok ", "bold green"), "]")
    if ok is False:
        return Text.assemble("[", ("FAIL", "bold red"), "]")
    return Text.assemble("[", (" ?? ", "bold yellow"), "]")


def check_text(result: CheckResult) -> Text:
    """A check's name, summary, detail and advice (without the marker); the
    verdict's advice is its steps, one per line."""
    t = Text.assemble((safe(result.name, 40), "bold"), "  ", safe(result.summary, 300))
    if result.detail:
        t.append("\n" + safe(result.detail, 500), style="dim")
    if result.advice and result.name == "verdict":
        for step in result.advice.splitlines()[:10]:
            if step.strip():
                t.append("\n• " + safe(step, 400))
    elif result.advice:
        t.append("\n→ " + safe(result.advice, 1000))
    return t


def check_renderable(result: CheckResult) -> Table:
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(width=6, no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row(check_marker(result.ok), check_text(result))
    return grid


class CheckRow(Static):
    """One check's row; `result` is what it shows."""

    def __init__(self, result: CheckResult, **kw) -> None:
        super().__init__(check_renderable(result), **kw)
        self.result = result


class ConnectivityScreen(Screen):
    """Doctor checks (top) and live peer connection attempts (bottom)."""

    DEFAULT_CSS = """
    ConnectivityScreen .check.-verdict {
        margin-top: 1;
        border-top: solid $primary;
    }
    """

    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("r", "rerun", "Run again", id="doctor_again"),
    ]

    class CheckArrived(Message):
        def __init__(self, run: int, result: CheckResult) -> None:
            super().__init__()
            self.run = run
            self.result = result

    class ChecksFinished(Message):
        def __init__(self, run: int, error: str = "") -> None:
            super().__init__()
            self.run = run
            self.error = error

    def __init__(self) -> None:
        super().__init__()
        self._run = 0
        self._counts = {True: 0, False: 0, None: 0}
        self._attempt_seq = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Checks", classes="section-title")
        yield VerticalScroll(id="checks")
        yield Static("", id="checks-status")
        yield Label("Peer connection attempts", classes="section-title")
        yield RichLog(id="attempts", max_lines=1000, wrap=True, markup=False,
                      highlight=False, auto_scroll=True)
        yield KeysFooter()

    def on_mount(self) -> None:
        self.sub_title = "connectivity"
        self.action_rerun()
        self._write_attempts()

    # ---- doctor ----------------------------------------------------------------

    def action_rerun(self) -> None:
        self._run += 1
        self._counts = {True: 0, False: 0, None: 0}
        self.query_one("#checks", VerticalScroll).remove_children()
        self.query_one("#checks-status", Static).update(
            Text("running the checks…", style="italic")
        )
        self._doctor(self._run)

    @work(group="doctor", exclusive=True)
    async def _doctor(self, run: int) -> None:
        api = self.app.api  # type: ignore[attr-defined]
        try:
            async for result in api.doctor():
                self.post_message(self.CheckArrived(run, result))
        except Exception as exc:
            self.post_message(self.ChecksFinished(run, str(exc)))
            return
        self.post_message(self.ChecksFinished(run))

    def on_connectivity_screen_check_arrived(self, message: CheckArrived) -> None:
        if message.run != self._run:
            return
        result = message.result
        classes = {True: "check -ok", False: "check -fail", None: "check -unknown"}[result.ok]
        if result.name == "verdict":
            classes += " -verdict"
        else:
            self._counts[result.ok] = self._counts.get(result.ok, 0) + 1
        checks = self.query_one("#checks", VerticalScroll)
        checks.mount(CheckRow(result, classes=classes))
        checks.scroll_end(animate=False)
        self.query_one("#checks-status", Static).update(self._tally(running=True))

    def on_connectivity_screen_checks_finished(self, message: ChecksFinished) -> None:
        if message.run != self._run:
            return
        status = self._tally(running=False)
        if message.error:
            status.append(f"  The checks stopped: {safe(message.error, 200)}", style="bold red")
        self.query_one("#checks-status", Static).update(status)

    def _tally(self, running: bool) -> Text:
        ok, fail, unknown = self._counts[True], self._counts[False], self._counts[None]
        t = Text()
        t.append(f"{ok} ok, {fail} failed, {unknown} unknown", style="bold")
        t.append("  running…" if running else "  done.", style="italic" if running else "")
        return t

    # ---- peer attempts ---------------------------------------------------------

    def on_model_updated(self, message: ModelUpdated) -> None:
        self._write_attempts()

    def on_screen_resume(self) -> None:
        self._write_attempts()

    def _write_attempts(self) -> None:
        model = self.app.model  # type: ignore[attr-defined]
        entries, skipped = model.attempts_after(self._attempt_seq, ATTEMPTS_PER_REFRESH)
        if not entries:
            return
        log = self.query_one("#attempts", RichLog)
        if skipped:
            log.write(Text(f"… {skipped:,} earlier attempts not shown", style="dim"))
        names = model.names()
        for entry in entries:
            line = attempt_text(entry.event, names)
            if line is not None:
                log.write(Text.assemble(stamp_text(entry.stamp), " ", line))
        self._attempt_seq = entries[-1].seq

    def action_back(self) -> None:
        self.app.pop_screen()
