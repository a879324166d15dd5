"""What the shares screen and a transfer's screen both do to the selected
transfer: pause or resume it, stop and remove it, show its link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from textual import work
from textual.screen import Screen

from dattui.engine.events import State, TransferStatus

from ..format import name_of, safe
from .modals import ConfirmModal, LinkModal

__all__ = ["TransferActions"]


class TransferActions(Screen):
    """A screen with a selected transfer. Subclasses define `selected()`."""

    def selected(self) -> TransferStatus | None:
        raise NotImplementedError

    def _need_selection(self) -> TransferStatus | None:
        status = self.selected()
        if status is None:
            self.notify("No transfer selected.", severity="warning")
        return status

    @work(group="engine-call")
    async def call_engine(
        self, what: str, call: Callable[[], Awaitable[object]], done: str = ""
    ) -> None:
        """Run one engine call; report failures in plain words, then poll."""
        try:
            await call()
        except Exception as exc:  # the daemon's error, shown, never a crash
            self.notify(f"{what} failed: {exc}", severity="error", timeout=8, markup=False)
            return
        if done:
            self.notify(done, markup=False)
        self.app.poll_now()  # type: ignore[attr-defined]

    def action_pause(self) -> None:
        status = self._need_selection()
        if status is None:
            return
        api = self.app.api  # type: ignore[attr-defined]
        name = name_of(status)
        if status.state is State.PAUSED:
            self.call_engine("Resume", lambda: api.resume(status.tid), f"Resumed {name}.")
        else:
            self.call_engine("Pause", lambda: api.pause(status.tid), f"Paused {name}.")

    def action_remove(self) -> None:
        status = self._need_selection()
        if status is None:
            return
        name = name_of(status)

        def answered(yes: bool | None) -> None:
            if yes:
                api = self.app.api  # type: ignore[attr-defined]
                self.call_engine(
                    "Remove", lambda: api.remove(status.tid),
                    f"Stopped and removed {name}; its files stay on disk.",
                )
                self.removed(status.tid)

        self.app.push_screen(
            ConfirmModal(
                f"Stop and remove {name}?",
                f"dattui stops {'sharing' if status.role.value == 'share' else 'cloning'} "
                f"{safe(status.path)} and forgets it. The files stay on disk.",
                yes="Remove",
            ),
            answered,
        )

    def removed(self, tid: str) -> None:
        """Called once the user confirmed removing `tid`."""

    def action_copy_link(self) -> None:
        status = self._need_selection()
        if status is None:
            return
        if not status.link:
            self.notify("This transfer has no link yet.", severity="warning")
            return
        self.app.push_screen(LinkModal(name_of(status), status.link))
