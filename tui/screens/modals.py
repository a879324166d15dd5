"""Small dialogs. Each one only asks: it dismisses with what the user chose and
the screen that opened it calls the engine."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from ..format import safe
from ..widgets.paths import IsCloneTarget, IsFolder, IsLink, PathSuggester, expand

__all__ = ["AddShareModal", "CloneModal", "ConfirmModal", "LinkModal"]


class _Dialog(ModalScreen):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog_cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)


class AddShareModal(_Dialog):
    """Ask for a folder to share; dismisses with its absolute path or None."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Share a folder", classes="dialog-title")
            yield Input(
                placeholder="/path/to/folder",
                suggester=PathSuggester(folders_only=True),
                validators=[IsFolder()],
                validate_on=["submitted"],
                id="share-path",
            )
            yield Static("", id="share-error", classes="dialog-error")
            yield Static(
                "→ completes the path · Enter shares · Esc cancels", classes="dialog-hint"
            )

    @on(Input.Submitted, "#share-path")
    def _submitted(self, event: Input.Submitted) -> None:
        result = event.validation_result
        if result is not None and not result.is_valid:
            self.query_one("#share-error", Static).update(
                Text(safe(" ".join(result.failure_descriptions)))
            )
            return
        self.dismiss(expand(event.value))

    @on(Input.Changed, "#share-path")
    def _changed(self) -> None:
        self.query_one("#share-error", Static).update("")


class CloneModal(_Dialog):
    """Ask for a link and a target folder; dismisses with (link, path) or None."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Clone a link", classes="dialog-title")
            yield Input(placeholder="dat://…", validators=[IsLink()],
                        validate_on=["submitted"], id="clone-link")
            yield Input(
                placeholder="folder to clone into",
                suggester=PathSuggester(folders_only=True),
                validators=[IsCloneTarget()],
                validate_on=["submitted"],
                id="clone-path",
            )
            yield Static("", id="clone-error", classes="dialog-error")
            yield Static(
                "Enter goes to the next field, then clones · → completes · Esc cancels",
                classes="dialog-hint",
            )

    def _error(self, message: str) -> None:
        self.query_one("#clone-error", Static).update(Text(safe(message)))

    @on(Input.Changed)
    def _changed(self) -> None:
        self._error("")

    @on(Input.Submitted, "#clone-link")
    def _link_submitted(self, event: Input.Submitted) -> None:
        result = event.validation_result
        if result is not None and not result.is_valid:
            self._error(" ".join(result.failure_descriptions))
            return
        self.query_one("#clone-path", Input).focus()

    @on(Input.Submitted, "#clone-path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        link_input = self.query_one("#clone-link", Input)
        link_ok = link_input.validate(link_input.value)
        if link_ok is not None and not link_ok.is_valid:
            self._error(" ".join(link_ok.failure_descriptions))
            link_input.focus()
            return
        result = event.validation_result
        if result is not None and not result.is_valid:
            self._error(" ".join(result.failure_descriptions))
            return
        self.dismiss((link_input.value.strip(), expand(event.value)))


class ConfirmModal(ModalScreen[bool]):
    """A yes/no question; dismisses with True only on an explicit yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm_yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm_no"),
    ]

    def __init__(self, question: str, detail: str = "", yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.detail = detail
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.question), classes="dialog-title")
            if self.detail:
                yield Static(Text(self.detail), classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error", compact=True)
                yield Button("Cancel (n)", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # the safe answer is the default

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class LinkModal(_Dialog):
    """Shows a transfer's full link; it was copied to the clipboard on opening."""

    BINDINGS = [
        Binding("enter", "cancel", "Close", id="link_close"),
        Binding("c", "copy", "Copy again", id="link_copy"),
    ]

    def __init__(self, name: str, link: str) -> None:
        super().__init__()
        self.share_name = name
        self.link = link

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide"):
            yield Label(Text(f"Link of {self.share_name}"), classes="dialog-title")
            yield Static(Text(safe(self.link), style="bold"), id="link-text")
            yield Static(
                "Copied to the clipboard (through the terminal: works over SSH if the "
                "terminal allows it). Anyone with the link can read the share.",
                classes="dialog-text",
            )
            yield Static("c copies again · Enter or Esc closes", classes="dialog-hint")

    def on_mount(self) -> None:
        self.action_copy()

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.link)
