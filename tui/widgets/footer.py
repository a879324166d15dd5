"""The footer: textual's, compact, with the command palette key shown only
where it fits (it is always on ctrl+p and listed in the help screen)."""

from __future__ import annotations

from textual import events
from textual.widgets import Footer

__all__ = ["KeysFooter"]

PALETTE_MIN_WIDTH = 100


class KeysFooter(Footer):
    def __init__(self) -> None:
        super().__init__(compact=True, show_command_palette=False)

    def on_resize(self, event: events.Resize) -> None:
        wide = event.size.width >= PALETTE_MIN_WIDTH
        if self.show_command_palette != wide:
            self.show_command_palette = wide
