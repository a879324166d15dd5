"""Filesystem completion and validation for path inputs.

`PathSuggester` plugs into textual's `Input(suggester=...)`: the completion is
shown greyed after the cursor and accepted with the right arrow (or End).
"""

from __future__ import annotations

import asyncio
import os

from textual.suggester import Suggester
from textual.validation import ValidationResult, Validator

from dattui.engine.errors import BadLink
from dattui.engine.keys import parse_link

__all__ = ["PathSuggester", "IsFolder", "IsCloneTarget", "IsLink", "complete_path", "expand"]

MAX_SCAN = 20_000  # entries looked at in one folder: completion stays fast anywhere


def expand(value: str) -> str:
    """What the user typed as an absolute path (~ expanded; symlinks kept)."""
    return os.path.abspath(os.path.expanduser(value.strip()))


def complete_path(value: str, *, folders_only: bool = True) -> str | None:
    """`value` extended to the first matching entry of its folder, or None.

    Folders get a trailing slash so that the next completion goes inside.
    Hidden entries are offered only once a '.' has been typed.
    """
    if not value:
        return None
    expanded = os.path.expanduser(value)
    head, tail = os.path.split(expanded)
    base = head or "."
    best: str | None = None
    try:
        with os.scandir(base) as it:
            for n, entry in enumerate(it):
                if n >= MAX_SCAN:
                    break
                name = entry.name
                if not name.startswith(tail):
                    continue
                if name.startswith(".") and not tail.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                if folders_only and not is_dir:
                    continue
                candidate = name + ("/" if is_dir else "")
                if best is None or candidate < best:
                    best = candidate
    except OSError:
        return None
    if best is None or best == tail:
        return None
    return value + best[len(tail):]


class PathSuggester(Suggester):
    """Suggests the rest of a path from the filesystem (folders by default)."""

    def __init__(self, *, folders_only: bool = True) -> None:
        # no cache: folders change while the dashboard runs
        super().__init__(use_cache=False, case_sensitive=True)
        self.folders_only = folders_only

    async def get_suggestion(self, value: str) -> str | None:
        return await asyncio.to_thread(complete_path, value, folders_only=self.folders_only)


class IsFolder(Validator):
    """An existing folder (to share)."""

    def validate(self, value: str) -> ValidationResult:
        if not value.strip():
            return self.failure("Type the path of a folder to share.")
        path = expand(value)
        if os.path.isdir(path):
            return self.success()
        if os.path.exists(path):
            return self.failure(f"Not a folder: {path}")
        return self.failure(f"No such folder: {path}")


class IsCloneTarget(Validator):
    """A folder to clone into: an existing folder, or a new one whose parent exists."""

    def validate(self, value: str) -> ValidationResult:
        if not value.strip():
            return self.failure("Type the folder to clone into.")
        path = expand(value)
        if os.path.isdir(path):
            return self.success()
        if os.path.exists(path):
            return self.failure(f"Not a folder: {path}")
        if os.path.isdir(os.path.dirname(path)):
            return self.success()
        return self.failure(f"Its parent folder does not exist: {os.path.dirname(path)}")


class IsLink(Validator):
    """A dat:// link (64 hex characters)."""

    def validate(self, value: str) -> ValidationResult:
        try:
            parse_link(value)
        except BadLink as e:
            return self.failure(str(e) if value.strip() else "Paste the dat:// link to clone.")
        return self.success()
