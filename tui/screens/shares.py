"""The main screen: every share and clone in one table.

Rows are keyed by tid and updated cell by cell, so the cursor stays on the
same transfer while numbers change underneath it.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Header, Static

from dattui.engine.events import TransferStatus

from ..format import (
    fit_start,
    format_rate,
    name_of,
    percent,
    short_link,
    state_text,
    status_fraction,
)
from ..widgets.footer import KeysFooter
from ..messages import ModelUpdated
from .actions import TransferActions
from .modals import AddShareModal, CloneModal

__all__ = ["SharesScreen"]

# (key, label, width including the one-space gutter, right-aligned); name takes the rest
_FIXED = (
    ("link", "link", 13, False),
    ("role", "role", 6, False),
    ("state", "state", 13, False),
    ("progress", "done", 7, True),
    ("peers", "peers", 6, True),
    ("down", "↓ rate", 10, True),
    ("up", "↑ rate", 10, True),
)
_FIXED_W = sum(c[2] for c in _FIXED)
NAME_MIN, NAME_MAX = 10, 60


def _cell(value: str | Text, right: bool = False) -> Text:
    t = Text(" ") + (value if isinstance(value, Text) else Text(value))
    if right:
        t.justify = "right"
    return t


class SharesScreen(TransferActions):
    """Shares and clones; Enter opens one."""

    BINDINGS = [
        Binding("enter", "open", "Open", id="open", show=False),
        Binding("a", "add_share", "Share", id="add_share"),
        Binding("c", "clone", "Clone", id="clone"),
        Binding("p", "pause", "Pause", id="pause"),
        Binding("delete", "remove", "Remove", id="remove"),
        Binding("y", "copy_link", "Link", id="copy_link"),
    ]

    def __init__(self) -> None:
        super().__init__(id="shares")
        self._rows: dict[str, tuple[Text, ...]] = {}
        self._name_w = NAME_MIN
        self._hinted: bool | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="transfers", cursor_type="row", cell_padding=0,
                        zebra_stripes=False)
        yield Static("", id="empty")
        yield Static("", id="hint")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.sub_title = "shares and clones"
        self._build_columns()
        self.sync()

    # ---- the table ---------------------------------------------------------------

    def _table(self) -> DataTable:
        return self.query_one("#transfers", DataTable)

    def _name_width(self) -> int:
        width = self.size.width or 80
        return max(NAME_MIN, min(NAME_MAX, width - _FIXED_W - 2))

    def _build_columns(self) -> None:
        table = self._table()
        selected = self._selected_tid()
        table.clear(columns=True)
        self._rows.clear()
        self._name_w = self._name_width()
        table.add_column(_cell("name"), width=self._name_w, key="name")
        for key, label, width, right in _FIXED:
            table.add_column(_cell(label, right), width=width, key=key)
        self.sync()
        if selected is not None and selected in self._rows:
            table.move_cursor(row=table.get_row_index(selected), animate=False)

    def on_resize(self) -> None:
        if self._name_width() != self._name_w:
            self._build_columns()

    def _row(self, s: TransferStatus) -> tuple[Text, ...]:
        return (
            _cell(fit_start(name_of(s), self._name_w - 1)),
            _cell(short_link(s.link)),
            _cell(s.role.value),
            _cell(state_text(s.state)),
            _cell(percent(status_fraction(s)), right=True),
            _cell(str(len(s.peers)), right=True),
            _cell(format_rate(s.rate_down), right=True),
            _cell(format_rate(s.rate_up), right=True),
        )

    def sync(self) -> None:
        """Bring the table in line with the model, touching only changed cells."""
        model = self.app.model  # type: ignore[attr-defined]
        table = self._table()
        keys = ("name",) + tuple(c[0] for c in _FIXED)
        for tid, status in model.transfers.items():
            row = self._row(status)
            old = self._rows.get(tid)
            if old is None:
                table.add_row(*row, key=tid)
            else:
                for key, a, b in zip(keys, old, row):
                    if a != b:
                        table.update_cell(tid, key, b)
            self._rows[tid] = row
        for tid in [t for t in self._rows if t not in model.transfers]:
            table.remove_row(tid)
            del self._rows[tid]
        self._update_hints()

    def _update_hints(self) -> None:
        key = self.app.key_for  # type: ignore[attr-defined]
        has_rows = bool(self._rows)
        if self._hinted == has_rows:
            return
        self._hinted = has_rows
        empty = self.query_one("#empty", Static)
        empty.display = not has_rows
        empty.update(Text(
            f"No shares or clones yet. Press {key('add_share')} to share a folder "
            f"or {key('clone')} to clone a dat:// link."
        ))
        self.query_one("#hint", Static).update(Text(
            f"Transfers run in the daemon: {key('quit')} closes the dashboard, "
            "they keep going."
        ))

    def on_model_updated(self, message: ModelUpdated) -> None:
        self.sync()

    def on_screen_resume(self) -> None:
        self.sync()

    # ---- selection and actions -------------------------------------------------

    def _selected_tid(self) -> str | None:
        try:
            table = self._table()
        except Exception:
            return None
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def selected(self) -> TransferStatus | None:
        tid = self._selected_tid()
        return None if tid is None else self.app.model.transfers.get(tid)  # type: ignore[attr-defined]

    @on(DataTable.RowSelected, "#transfers")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        status = self._need_selection()
        if status is not None:
            self.app.open_transfer(status.tid)  # type: ignore[attr-defined]

    def action_add_share(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                api = self.app.api  # type: ignore[attr-defined]
                self.call_engine("Share", lambda: api.share(path), f"Sharing {path}.")

        self.app.push_screen(AddShareModal(), chosen)

    def action_clone(self) -> None:
        def chosen(answer: tuple[str, str] | None) -> None:
            if answer:
                link, path = answer
                api = self.app.api  # type: ignore[attr-defined]
                self.call_engine("Clone", lambda: api.clone(link, path),
                                 f"Cloning into {path}.")

        self.app.push_screen(CloneModal(), chosen)
