"""What a front end (the dashboard, `dattui list`) can ask of the engine daemon.

`DaemonClient` implements this over the control socket; tests use fakes that
replay recorded events. Everything returned is immutable (events.* dataclasses).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ..events import Event, FileProgress, TransferStatus


@dataclass(frozen=True)
class FilePage:
    total: int                       # files matching the filter
    files: tuple[FileProgress, ...]  # one page of them


@dataclass(frozen=True)
class CheckResult:
    """One connectivity check (doctor): streamed as each finishes."""

    name: str          # e.g. "udp", "public_address", "nat_mapping", "dht", "relay_tcp"
    ok: bool | None    # None: could not tell
    summary: str       # one line in plain words
    detail: str = ""
    advice: str = ""


class EngineApi(Protocol):
    async def status(self) -> tuple[TransferStatus, ...]: ...
    def events(self) -> AsyncIterator[Event]: ...
    async def share(self, path: str) -> str: ...                      # returns tid
    async def clone(self, link: str, path: str) -> str: ...           # returns tid
    async def pause(self, tid: str) -> None: ...
    async def resume(self, tid: str) -> None: ...
    async def remove(self, tid: str) -> None: ...                     # stop and forget (files stay)
    async def files(self, tid: str, *, offset: int = 0, limit: int = 200,
                    pattern: str = "", sort: str = "path") -> FilePage: ...   # sort: path|size|progress
    def doctor(self) -> AsyncIterator[CheckResult]: ...
    async def logs(self, limit: int = 200) -> tuple[str, ...]: ...
    async def limits(self, up: str | None = None,                       # bandwidth, bytes/s
                     down: str | None = None) -> tuple[float | None, float | None]: ...
    async def close(self) -> None: ...
