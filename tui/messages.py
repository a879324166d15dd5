"""Messages shared by the app and its screens."""

from __future__ import annotations

from textual.message import Message

__all__ = ["ModelUpdated"]


class ModelUpdated(Message):
    """The app polled the engine: the model has a new status snapshot and maybe
    new events. Sent to every screen at most `refresh_hz` times a second; a
    newer one replaces an older one still queued, so a slow screen never falls
    behind."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ModelUpdated)
