"""Errors a user can act on: each carries a one-line message that says what to do."""


class DattuiError(Exception):
    """An error shown to the user as one line; `exit_code` is the process status."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BadLink(DattuiError):
    exit_code = 2


class UsageError(DattuiError):
    exit_code = 2


class NotFound(DattuiError):
    """The share could not be found before the timeout."""

    exit_code = 3


class UnsafeManifest(DattuiError):
    """A manifest from the network names a path that would escape the target folder."""

    exit_code = 4


class DiskError(DattuiError):
    """Disk full, folder not writable: local storage problems."""

    exit_code = 5


class ProtocolError(Exception):
    """A peer broke the wire protocol; the connection is closed, nothing else happens."""
