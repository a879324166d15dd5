"""A virtual table of a transfer's files: it holds only the rows around the
viewport, so a folder of 100,000 files costs what a screenful does.

The widget never calls the engine. It knows the total number of rows and the
window of rows it was last given; when the viewport leaves that window it posts
`FileTable.WindowNeeded`, and the screen fetches `window()` with `api.files()`
and hands the page back with `set_window()`.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from dattui.engine.events import FileProgress

from ..format import bar, fit, format_bytes, fraction_of, percent, safe

__all__ = ["FileTable"]

SIZE_W = 9
BAR_W = 10
PCT_W = 6
RIGHT_W = 1 + SIZE_W + 1 + BAR_W + 1 + PCT_W  # size, bar and percentage columns


class FileTable(ScrollView, can_focus=True):
    """Files of one transfer: path, size and a progress bar, one per row."""

    DEFAULT_CSS = """
    FileTable {
        height: 1fr;
        overflow-x: hidden;
        overflow-y: auto;
        background: $surface;
        & > .file-table--header { text-style: bold; color: $text-muted; }
        & > .file-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .file-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """

    COMPONENT_CLASSES = {"file-table--header", "file-table--cursor"}

    BINDINGS = [
        Binding("up", "cursor_up", "Previous file", id="file_up", show=False),
        Binding("down", "cursor_down", "Next file", id="file_down", show=False),
        Binding("pageup", "page_up", "Page up", id="file_page_up", show=False),
        Binding("pagedown", "page_down", "Page down", id="file_page_down", show=False),
        Binding("home", "first", "First file", id="file_first", show=False),
        Binding("end", "last", "Last file", id="file_last", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=False, repaint=True)

    class WindowNeeded(Message):
        """The viewport shows rows this table does not hold: fetch `window()`."""

        def __init__(self, table: FileTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> FileTable:
            return self.table

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, FileTable.WindowNeeded) and message.table is self.table

    def __init__(self, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._total = 0
        self._rows: dict[int, FileProgress] = {}
        self._covered = (0, 0)            # [start, end) of the rows held
        self._asked: tuple[int, int] | None = None  # window last asked for

    # ---- the data the screen gives ----------------------------------------------

    @property
    def total(self) -> int:
        """How many files match (all of them are scrollable to)."""
        return self._total

    @property
    def rows_held(self) -> int:
        return len(self._rows)

    @property
    def _body_height(self) -> int:
        return max(self.scrollable_content_region.height - 1, 1)  # minus the header

    def window(self) -> tuple[int, int]:
        """(offset, limit) of the rows to fetch: the viewport and a screenful
        on either side, so that scrolling a little needs no fetch."""
        h = self._body_height
        top = int(self.scroll_offset.y)
        offset = max(0, top - h)
        return offset, min(3 * h, 200)

    def set_window(self, offset: int, total: int, files: tuple[FileProgress, ...]) -> None:
        """The rows [offset, offset + len(files)) and the total count."""
        self._rows = {offset + i: f for i, f in enumerate(files)}
        self._covered = (offset, offset + len(files))
        # `_asked` stays: rows still missing from this window (the engine's
        # list changed meanwhile) are not asked for again until the view moves
        # or the next refresh, so a short page cannot cause a fetch loop
        if total != self._total:
            self._total = total
            self._update_virtual_size()
            if self.cursor >= total:
                self.cursor = max(total - 1, 0)
        self.refresh()

    def reset(self) -> None:
        """Forget the rows (the filter or the sort changed): back to the top."""
        self._rows = {}
        self._covered = (0, 0)
        self._asked = None
        self.cursor = 0
        self.scroll_to(y=0, animate=False, immediate=True)
        self.refresh()

    def file_at_cursor(self) -> FileProgress | None:
        return self._rows.get(self.cursor)

    # ---- sizes and scrolling ---------------------------------------------------

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, self._total + 1)

    def on_resize(self) -> None:
        self._update_virtual_size()
        self._check_window()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._check_window()

    def _check_window(self) -> None:
        top = int(self.scroll_offset.y)
        bottom = min(top + self._body_height, self._total)
        start, end = self._covered
        if bottom > top and not (start <= top and bottom <= end):
            self._ask()

    def _ask(self) -> None:
        window = self.window()
        if window != self._asked:
            self._asked = window
            self.post_message(self.WindowNeeded(self))

    def watch_cursor(self, old: int, new: int) -> None:
        h = self._body_height
        top = int(self.scroll_offset.y)
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new > top + h - 1:
            self.scroll_to(y=new - h + 1, animate=False)

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            index = int(self.scroll_offset.y) + event.y - 1
            if index < self._total:
                self.cursor = index

    def _move(self, delta: int) -> None:
        if self._total:
            self.cursor = min(max(self.cursor + delta, 0), self._total - 1)

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_cursor_down(self) -> None:
        self._move(1)

    def action_page_up(self) -> None:
        self._move(-self._body_height)

    def action_page_down(self) -> None:
        self._move(self._body_height)

    def action_first(self) -> None:
        self._move(-self._total)

    def action_last(self) -> None:
        self._move(self._total)

    # ---- rendering -------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            return self._strip(self._header(width), width, base)
        index = int(self.scroll_offset.y) + y - 1
        if index >= self._total:
            return Strip.blank(width, base)
        style = base
        if index == self.cursor:
            style = base + self.get_component_rich_style("file-table--cursor")
        f = self._rows.get(index)
        if f is None:
            self._ask()
            return self._strip(Text(" …", style="dim"), width, style)
        return self._strip(self._row(f, width), width, style)

    def _strip(self, text: Text, width: int, style: Style) -> Strip:
        text.stylize_before(style)
        segments = list(text.render(self.app.console))
        return Strip(segments).crop_extend(0, width, style)

    def _header(self, width: int) -> Text:
        path_w = max(width - RIGHT_W - 1, 4)
        style = self.get_component_rich_style("file-table--header")
        return Text(
            " " + "file".ljust(path_w) + " " + "size".rjust(SIZE_W) + " "
            + "progress".ljust(BAR_W + 1 + PCT_W),
            style=style,
        )

    def _row(self, f: FileProgress, width: int) -> Text:
        path_w = max(width - RIGHT_W - 1, 4)
        frac = fraction_of(f.have, f.size, complete=True)
        t = Text(" " + fit(safe(f.path, 1000), path_w).ljust(path_w) + " ")
        t.append(format_bytes(f.size).rjust(SIZE_W) + " ")
        t.append_text(bar(frac, BAR_W))
        t.append(" " + percent(frac).rjust(PCT_W))
        return t
