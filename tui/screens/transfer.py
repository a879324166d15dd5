"""One transfer: a summary, its rate over time, its peers and its files.

The files list is virtual (see widgets/file_table.py): this screen fetches only
the window around the viewport with `api.files()`, one request at a time; a
request asked for while one is running is coalesced into one more.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widgets import DataTable, Header, Input, Sparkline, Static

from dattui.engine.events import PeerStatus, Role, State, TransferStatus

from ..format import (
    clones_held,
    fit,
    fit_middle,
    format_bytes,
    format_rate,
    name_of,
    path_text,
    peer_held,
    percent,
    rtt_text,
    safe,
    short_link,
    state_text,
    status_fraction,
)
from ..widgets.footer import KeysFooter
from ..messages import ModelUpdated
from ..model import HISTORY_SECONDS
from ..widgets.file_table import FileTable
from .actions import TransferActions

__all__ = ["TransferScreen", "SORTS"]

SORTS = ("path", "size", "progress")
FILES_REFRESH_SECONDS = 0.5

# (key, label, width including the gutter, right-aligned); address takes the rest
_PEER_FIXED = (
    ("peer", "peer", 9, False),
    ("path", "path", 10, False),
    ("rtt", "rtt", 7, True),
    ("down", "↓ rate", 10, True),
    ("up", "↑ rate", 10, True),
    ("blocks_down", "blk ↓", 7, True),
    ("blocks_up", "blk ↑", 7, True),
)
# a share downloads nothing: the column says what each clone holds instead
_SHARE_PEER_FIXED = tuple(("has", "has", 7, True) if c[0] == "blocks_down" else c
                          for c in _PEER_FIXED)
_PEER_FIXED_W = sum(c[2] for c in _PEER_FIXED)
ADDR_MIN, ADDR_MAX = 12, 46


def _cell(value: str | Text, right: bool = False) -> Text:
    t = Text(" ") + (value if isinstance(value, Text) else Text(value))
    if right:
        t.justify = "right"
    return t


class TransferScreen(TransferActions):
    """Everything about one share or clone."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("slash", "focus_filter", "Filter", id="filter"),
        Binding("s", "cycle_sort", "Sort", id="sort"),
        Binding("p", "pause", "Pause", id="pause"),
        Binding("delete", "remove", "Remove", id="remove"),
        Binding("y", "copy_link", "Link", id="copy_link"),
    ]

    def __init__(self, tid: str) -> None:
        super().__init__()
        self.tid = tid
        self.sort = SORTS[0]
        self.pattern = ""
        self._peer_rows: dict[str, tuple[Text, ...]] = {}
        self._addr_w = ADDR_MIN
        self._columns: tuple = _PEER_FIXED
        self._fetching = False
        self._fetch_again = False
        self._gone = False
        self._last_fetch = 0.0
        self._files_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary")
        with Horizontal(id="graph"):
            yield Static("", id="rate-label")
            yield Sparkline([], id="rate")
        yield DataTable(id="peers", cursor_type="row", cell_padding=0)
        with Horizontal(id="filter-bar"):
            yield Input(placeholder="/ filter files", id="filter", compact=True)
            yield Static("", id="files-count")
        yield FileTable(id="files")
        yield KeysFooter()

    def on_mount(self) -> None:
        self._build_peer_columns()
        self.sync()
        self.query_one(FileTable).focus()
        self.request_files()

    # ---- model -> widgets ----------------------------------------------------------

    def selected(self) -> TransferStatus | None:
        return self.app.model.transfers.get(self.tid)  # type: ignore[attr-defined]

    def on_model_updated(self, message: ModelUpdated) -> None:
        self.sync()
        self._refresh_files_soon()  # progress moves: refresh the visible window

    def _refresh_files_soon(self) -> None:
        """Refresh the visible files at most every FILES_REFRESH_SECONDS (the
        engine filters and sorts the whole list for each page), and once more
        after the last change so the picture ends up current."""
        if self._files_timer is not None:
            return
        wait = self._last_fetch + FILES_REFRESH_SECONDS - time.monotonic()
        if wait <= 0:
            self.request_files()
        else:
            self._files_timer = self.set_timer(wait, self._files_timer_fired)

    def _files_timer_fired(self) -> None:
        self._files_timer = None
        self.request_files()

    def on_screen_resume(self) -> None:
        self.sync()
        self.request_files()

    def sync(self) -> None:
        status = self.selected()
        if status is None:
            self._gone = True
            self.sub_title = "removed"
            self.query_one("#summary", Static).update(
                Text("This transfer is no longer in the daemon. Esc goes back.", style="bold")
            )
            return
        self._gone = False
        self.sub_title = name_of(status)
        self.query_one("#summary", Static).update(self._summary(status))
        self._sync_graph(status)
        self._sync_peers(status.peers)

    def _summary(self, s: TransferStatus) -> Text:
        frac = status_fraction(s)
        t = Text()
        t.append(f"{s.role.value} ", style="bold")
        t.append_text(state_text(s.state))
        held = clones_held(s)
        if held is None:
            t.append(f"  {percent(frac)}  {format_bytes(s.bytes_have)} / {format_bytes(s.bytes_total)}")
        else:
            who = "clone" if held[2] == 1 else f"{held[2]} clones"
            t.append(f"  {who} {percent(frac)}  {format_bytes(held[0])} / {format_bytes(held[1])}")
        t.append(f"  {s.files_done}/{s.files_total} files")
        if s.version:
            t.append(f"  v{s.version}", style="dim")
        t.append(f"  {len(s.peers)} peers")
        t.append("\n")
        t.append(fit(safe(s.path, 1000), 60), style="dim")
        t.append(f"  dat://{short_link(s.link)}…", style="dim")
        if s.message:
            t.append("\n")
            t.append(safe(s.message), style="red" if s.state is State.FAILED else "")
        return t

    def _sync_graph(self, s: TransferStatus) -> None:
        history = self.app.model.history(self.tid)  # type: ignore[attr-defined]
        sparkline = self.query_one("#rate", Sparkline)
        if sparkline.data != history:
            sparkline.data = history
        peak = max(history) if history else 0.0
        main = "↓" if s.role is Role.CLONE else "↑"
        now = s.rate_down if s.role is Role.CLONE else s.rate_up
        label = Text()
        label.append(f"{main} {format_rate(now)}\n", style="bold")
        label.append(f"peak {format_rate(peak)}\n", style="dim")
        label.append(f"last {HISTORY_SECONDS // 60} min", style="dim")
        self.query_one("#rate-label", Static).update(label)

    # ---- peers -------------------------------------------------------------------

    def _addr_width(self) -> int:
        width = self.size.width or 80
        return max(ADDR_MIN, min(ADDR_MAX, width - _PEER_FIXED_W - 2))

    def _peer_columns(self) -> tuple:
        status = self.selected()
        return _SHARE_PEER_FIXED if status is not None and status.role is Role.SHARE \
            else _PEER_FIXED

    def _build_peer_columns(self) -> None:
        table = self.query_one("#peers", DataTable)
        table.clear(columns=True)
        self._peer_rows.clear()
        self._addr_w = self._addr_width()
        self._columns = self._peer_columns()
        table.add_column(_cell("peer"), width=self._columns[0][2], key="peer")
        table.add_column(_cell("address"), width=self._addr_w, key="address")
        for key, label, width, right in self._columns[1:]:
            table.add_column(_cell(label, right), width=width, key=key)

    def on_resize(self) -> None:
        if self._addr_width() != self._addr_w:
            self._build_peer_columns()
            status = self.selected()
            if status is not None:
                self._sync_peers(status.peers)

    def _peer_row(self, p: PeerStatus) -> tuple[Text, ...]:
        return (
            _cell(safe(p.peer_id[:8])),
            _cell(fit_middle(safe(p.address, 100), self._addr_w - 1)),
            _cell(path_text(p.path)),
            _cell(rtt_text(p.rtt_ms), right=True),
            _cell(format_rate(p.rate_down), right=True),
            _cell(format_rate(p.rate_up), right=True),
            _cell(peer_held(p) if self._columns is _SHARE_PEER_FIXED else str(p.blocks_down),
                  right=True),
            _cell(str(p.blocks_up), right=True),
        )

    def _sync_peers(self, peers: tuple[PeerStatus, ...]) -> None:
        table = self.query_one("#peers", DataTable)
        if self._peer_columns() is not self._columns:  # the role is known now
            self._build_peer_columns()
        keys = ("peer", "address") + tuple(c[0] for c in self._columns[1:])
        seen = set()
        for p in peers:
            seen.add(p.peer_id)
            row = self._peer_row(p)
            old = self._peer_rows.get(p.peer_id)
            if old is None:
                table.add_row(*row, key=p.peer_id)
            else:
                for key, a, b in zip(keys, old, row):
                    if a != b:
                        table.update_cell(p.peer_id, key, b)
            self._peer_rows[p.peer_id] = row
        for pid in [k for k in self._peer_rows if k not in seen]:
            table.remove_row(pid)
            del self._peer_rows[pid]
        table.border_title = f"peers ({len(peers)})"

    # ---- files -------------------------------------------------------------------

    def request_files(self) -> None:
        """Fetch the file table's window; coalesced while a fetch runs."""
        if self._gone:
            return
        if self._fetching:
            self._fetch_again = True
            return
        self._fetching = True
        self._fetch_files()

    @work(group="files")
    async def _fetch_files(self) -> None:
        table = self.query_one(FileTable)
        api = self.app.api  # type: ignore[attr-defined]
        try:
            while True:
                self._fetch_again = False
                self._last_fetch = time.monotonic()
                offset, limit = table.window()
                pattern, sort = self.pattern, self.sort
                try:
                    page = await api.files(self.tid, offset=offset, limit=limit,
                                           pattern=pattern, sort=sort)
                except Exception as exc:
                    self.query_one("#files-count", Static).update(
                        Text(f"files unavailable: {safe(str(exc), 100)}", style="red")
                    )
                    return
                if (pattern, sort) == (self.pattern, self.sort):
                    table.set_window(offset, page.total, page.files)
                    self._show_count(page.total)
                if not self._fetch_again:
                    return
        finally:
            self._fetching = False

    def _show_count(self, total: int) -> None:
        status = self.selected()
        everything = status.files_total if status is not None else total
        what = f"{total:,} files" if not self.pattern else f"{total:,} of {everything:,} files"
        self.query_one("#files-count", Static).update(Text(f"{what} · sort: {self.sort}"))

    @on(FileTable.WindowNeeded)
    def _window_needed(self, event: FileTable.WindowNeeded) -> None:
        self.request_files()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.pattern = event.value.strip()
        self.query_one(FileTable).reset()
        self.request_files()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.query_one(FileTable).focus()

    # ---- actions -----------------------------------------------------------------

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.query_one(FileTable).reset()
        self.request_files()

    def action_back(self) -> None:
        if self.focused is self.query_one("#filter", Input):
            self.query_one(FileTable).focus()
            return
        self.app.pop_screen()

    def removed(self, tid: str) -> None:
        self.call_after_refresh(self._leave)

    def _leave(self) -> None:
        if self.app.screen is self:
            self.app.pop_screen()
