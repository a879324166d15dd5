"""The log: the daemon's recent log lines, then every engine event as it
arrives (written at most once per refresh, the newest few hundred at most)."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Header, RichLog

from ..format import event_text, safe, stamp_text
from ..widgets.footer import KeysFooter
from ..messages import ModelUpdated

__all__ = ["LogScreen"]

EVENTS_PER_REFRESH = 300
DAEMON_LINES = 200


class LogScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("r", "reload", "Reload daemon log", id="log_reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._event_seq = 0
        self._ready = False  # events are written after the daemon's lines

    def compose(self) -> ComposeResult:
        yield Header()
        yield RichLog(id="log", max_lines=5000, wrap=True, markup=False,
                      highlight=False, auto_scroll=True)
        yield KeysFooter()

    def on_mount(self) -> None:
        self.sub_title = "log"
        self.query_one(RichLog).focus()
        self._load_daemon_log()

    @work(group="logs", exclusive=True)
    async def _load_daemon_log(self) -> None:
        log = self.query_one(RichLog)
        api = self.app.api  # type: ignore[attr-defined]
        try:
            lines = await api.logs(DAEMON_LINES)
        except Exception as exc:
            log.write(Text(f"daemon log unavailable: {safe(str(exc), 200)}", style="red"))
        else:
            log.write(Text(f"── daemon log (last {len(lines)} lines) ──", style="bold"))
            for line in lines:
                log.write(Text(safe(line, 2000)))
        log.write(Text("── events ──", style="bold"))
        self._ready = True
        self._write_events()

    def action_reload(self) -> None:
        self.query_one(RichLog).clear()
        self._ready = False
        self._event_seq = 0
        self._load_daemon_log()

    def on_model_updated(self, message: ModelUpdated) -> None:
        self._write_events()

    def on_screen_resume(self) -> None:
        self._write_events()

    def _write_events(self) -> None:
        if not self._ready:
            return
        model = self.app.model  # type: ignore[attr-defined]
        entries, skipped = model.events_after(self._event_seq, EVENTS_PER_REFRESH)
        if not entries:
            return
        log = self.query_one(RichLog)
        if skipped:
            log.write(Text(f"… {skipped:,} events not shown (too many at once)", style="dim"))
        names = model.names()
        for entry in entries:
            log.write(Text.assemble(stamp_text(entry.stamp), " ", event_text(entry.event, names)))
        self._event_seq = entries[-1].seq

    def action_back(self) -> None:
        self.app.pop_screen()
