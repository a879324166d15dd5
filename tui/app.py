"""The dattui dashboard: a Textual app over the engine daemon's `EngineApi`.

    app = DattuiApp(api, config)
    app.run()

The app owns the two streams from the engine and nothing else:

- events: consumed in a worker as fast as they come, each one appended to the
  model's bounded buffers (no redraw);
- status: polled at most `config.tui.refresh_hz` times a second by a timer;
  each poll updates the model and sends one `ModelUpdated` to the screens,
  which redraw from the model. Redraws are therefore bounded by the refresh
  rate, whatever the rate of events.

Screens call the engine for what the user asks (share, clone, pause, remove,
files, doctor, logs). Quitting leaves every transfer running in the daemon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from functools import partial

from rich.markup import escape
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen

from dattui.config import Config
from dattui.engine.daemon.interface import EngineApi
from dattui.engine.events import TransferFailed

from .format import name_of, safe
from .messages import ModelUpdated
from .model import Dashboard
from .screens.actions import TransferActions
from .screens.connectivity import ConnectivityScreen
from .screens.help import HelpScreen
from .screens.log import LogScreen
from .screens.modals import AddShareModal, ConfirmModal, LinkModal
from .screens.shares import SharesScreen
from .screens.transfer import TransferScreen
from .widgets.file_table import FileTable

__all__ = ["DattuiApp", "QUIT_MESSAGE"]

QUIT_MESSAGE = (
    "dattui: the dashboard is closed; your shares and clones keep running in the "
    "dattui daemon. Run `dattui` to watch them again, `dattui stop` to stop them."
)

EVENTS_PER_YIELD = 100  # let the screen breathe during a flood of events

# The long form of each binding, for the help screen and the command palette.
HELP_TEXT = {
    "quit": "Close the dashboard (transfers keep running)",
    "help": "Show this help",
    "connectivity": "Connectivity checks and peer connection attempts",
    "log": "Show the log",
    "open": "Open the selected transfer",
    "add_share": "Share a folder",
    "clone": "Clone a dat:// link into a folder",
    "pause": "Pause or resume the selected transfer",
    "remove": "Stop and remove the selected transfer (files stay)",
    "copy_link": "Show the link and copy it to the clipboard",
    "back": "Go back",
    "filter": "Filter the files",
    "sort": "Sort the files by path, size or progress",
    "doctor_again": "Run the connectivity checks again",
    "log_reload": "Reload the daemon's log",
    "file_up": "Previous file",
    "file_down": "Next file",
    "file_page_up": "Page up",
    "file_page_down": "Page down",
    "file_first": "First file",
    "file_last": "Last file",
    "dialog_cancel": "Cancel the dialog",
    "confirm_yes": "Yes (in a confirmation)",
    "confirm_no": "No (in a confirmation)",
    "link_close": "Close the link dialog",
    "link_copy": "Copy the link again",
}


class DattuiApp(App[None]):
    """The dashboard. `api` is the daemon client; the caller closes it."""

    CSS_PATH = "dattui.tcss"
    TITLE = "dattui"

    BINDINGS: list[BindingType] = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("d", "connectivity", "Net", id="connectivity"),
        Binding("l", "log", "Log", id="log"),
    ]

    def __init__(
        self,
        api: EngineApi,
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` paces the rate graph (one sample a second); `wallclock`
        stamps log lines. Tests inject fixed clocks."""
        super().__init__()
        self.api = api
        self.config = config
        self.model = Dashboard()
        self._clock = clock
        self._wallclock = wallclock
        self._polling = False
        self._told_seq = 0
        self._engine_error = ""
        self._failures_told: set[tuple[str, str]] = set()
        self.set_keymap(dict(config.keys))

    def get_default_screen(self) -> Screen:
        return SharesScreen()

    # ---- engine streams ------------------------------------------------------------

    def on_mount(self) -> None:
        hz = max(float(self.config.tui.refresh_hz), 0.1)
        self._consume_events()
        self.poll_now()
        self.set_interval(1.0 / hz, self.poll_now, name="status-poll")

    def poll_now(self) -> None:
        """Ask the engine for a status snapshot, unless a poll is running."""
        if self._polling:
            return
        self._polling = True
        self.run_worker(self._poll, group="status", exit_on_error=False)

    async def _poll(self) -> None:
        try:
            statuses = await self.api.status()
        except Exception as exc:
            self._engine_unreachable(exc)
            return
        finally:
            self._polling = False
        if self._engine_error:
            self._engine_error = ""
            self.notify("The dattui daemon answers again.")
        changed = self.model.apply(statuses, self._clock())
        if changed or self.model.event_seq != self._told_seq:
            # nothing new, nothing to redraw: an idle dashboard costs a poll
            self._told_seq = self.model.event_seq
            for screen in self.screen_stack:
                screen.post_message(ModelUpdated())

    def _engine_unreachable(self, exc: Exception) -> None:
        message = str(exc) or type(exc).__name__
        if message != self._engine_error:
            self._engine_error = message
            self.notify(f"The dattui daemon does not answer: {message}",
                        severity="error", timeout=10, markup=False)

    def _consume_events(self) -> None:
        self.run_worker(self._events, group="events", exit_on_error=False)

    async def _events(self) -> None:
        n = 0
        try:
            async for ev in self.api.events():
                self.model.add_event(ev, self._wallclock())
                if isinstance(ev, TransferFailed):
                    self._tell_failure(ev)
                n += 1
                if n % EVENTS_PER_YIELD == 0:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.notify(f"Lost the event stream from the daemon: {exc}",
                        severity="error", timeout=10, markup=False)
        else:
            self.notify("The daemon closed the event stream: the log and connection "
                        "attempts no longer update.", severity="warning", timeout=10)

    def _tell_failure(self, ev: TransferFailed) -> None:
        key = (ev.tid, ev.message)
        if key in self._failures_told:
            return
        self._failures_told.add(key)
        name = self.model.names().get(ev.tid, ev.tid[:8])
        self.notify(f"{name}: {ev.message}", title="Transfer failed",
                    severity="error", timeout=10, markup=False)

    # ---- screens -------------------------------------------------------------------

    def open_transfer(self, tid: str) -> None:
        self.push_screen(TransferScreen(tid))

    def _show(self, screen_type: type[Screen]) -> None:
        if not isinstance(self.screen, screen_type):
            self.push_screen(screen_type())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # no screen switching from inside a dialog
        if action in ("help", "connectivity", "log") and isinstance(self.screen, ModalScreen):
            return False
        return True

    def action_help(self) -> None:
        self._show(HelpScreen)

    def action_connectivity(self) -> None:
        self._show(ConnectivityScreen)

    def action_log(self) -> None:
        self._show(LogScreen)

    async def action_quit(self) -> None:
        # no exit message here: the command that ran the app says goodbye once,
        # after the alternate screen is gone (tui/daemon_cmds.py)
        self.exit()

    # ---- keys ---------------------------------------------------------------------

    def _binding_sections(self) -> Iterable[tuple[str, Iterable[BindingType]]]:
        yield "Everywhere", self.BINDINGS
        yield "Shares and clones", SharesScreen.BINDINGS
        yield "One transfer", TransferScreen.BINDINGS
        yield "Its files list", FileTable.BINDINGS
        yield "Connectivity", ConnectivityScreen.BINDINGS
        yield "Log", LogScreen.BINDINGS
        yield "Dialogs", [*AddShareModal.BINDINGS, *ConfirmModal.BINDINGS, *LinkModal.BINDINGS]

    def _key_of(self, binding: Binding) -> str:
        keys = self.config.keys.get(binding.id, binding.key) if binding.id else binding.key
        shown = []
        for key in keys.split(","):
            shown.append(self.get_key_display(Binding(key.strip(), binding.action)))
        return " ".join(shown)

    def key_for(self, binding_id: str) -> str:
        """How the key bound to `binding_id` is shown (after remapping)."""
        for _, bindings in self._binding_sections():
            for b in bindings:
                if isinstance(b, Binding) and b.id == binding_id:
                    return self._key_of(b)
        return binding_id

    def binding_sections(self) -> list[tuple[str, list[tuple[str, str, str]]]]:
        """For the help screen: (where, [(key, what it does, config name)])."""
        out = []
        for where, bindings in self._binding_sections():
            rows: list[tuple[str, str, str]] = []
            seen: set[str] = set()
            for b in bindings:
                if not isinstance(b, Binding) or (b.id or b.key) in seen:
                    continue
                seen.add(b.id or b.key)
                rows.append((self._key_of(b), HELP_TEXT.get(b.id or "", b.description),
                             b.id or ""))
            if where == "Everywhere":
                rows.append((self.get_key_display(Binding("ctrl+p", "")),
                             "Command palette", ""))
            out.append((where, rows))
        return out

    # ---- command palette ---------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        shares = self._shares_screen()
        if shares is not None:
            yield SystemCommand("Share a folder", HELP_TEXT["add_share"], shares.action_add_share)
            yield SystemCommand("Clone a link", HELP_TEXT["clone"], shares.action_clone)
        if isinstance(screen, TransferActions) and screen.selected() is not None:
            yield SystemCommand("Pause or resume", HELP_TEXT["pause"], screen.action_pause)
            yield SystemCommand("Stop and remove", HELP_TEXT["remove"], screen.action_remove)
            yield SystemCommand("Show the link", HELP_TEXT["copy_link"], screen.action_copy_link)
        yield SystemCommand("Connectivity", HELP_TEXT["connectivity"], self.action_connectivity)
        yield SystemCommand("Log", HELP_TEXT["log"], self.action_log)
        yield SystemCommand("Help", "Every key and its config name", self.action_help)
        for tid, status in self.model.transfers.items():
            yield SystemCommand(
                escape(f"Open {name_of(status)}"),
                escape(f"{status.role.value}, {status.state.value}: {safe(status.path)}"),
                partial(self.open_transfer, tid),
                discover=False,
            )

    def _shares_screen(self) -> SharesScreen | None:
        for s in self.screen_stack:
            if isinstance(s, SharesScreen):
                return s
        return None
