"""The help screen: every key binding, where it works, and the name to remap
it with in the config file's [keys] table."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from ..widgets.footer import KeysFooter

__all__ = ["HelpScreen"]


class HelpScreen(Screen):
    BINDINGS = [Binding("escape", "back", "Back", id="back")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            Text(
                "Keys of dattui. Change one in the [keys] table of config.toml: "
                "name = \"key\". Ctrl+P opens the command palette.",
            ),
            id="help-intro",
        )
        yield DataTable(id="bindings", cursor_type="row", zebra_stripes=False)
        yield KeysFooter()

    def on_mount(self) -> None:
        self.sub_title = "help"
        table = self.query_one(DataTable)
        table.add_column("key", key="key")
        table.add_column("does", key="does")
        table.add_column("config name", key="id")
        for where, rows in self.app.binding_sections():  # type: ignore[attr-defined]
            table.add_row(Text(""), Text(where, style="bold underline"), Text(""),
                          key=f"section:{where}")
            for key, does, binding_id in rows:
                table.add_row(Text(key, style="bold"), Text(does), Text(binding_id, style="dim"))
        table.focus()

    def action_back(self) -> None:
        self.app.pop_screen()
