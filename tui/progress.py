"""The command line's live display for ``dattui share`` and ``dattui clone``.

`ProgressView` keeps only the newest `TransferStatus`; rich's Live thread asks
for it at most `refresh_hz` times a second, so the engine may call `update()` as
often as it likes. `render()` is the pure status -> renderable function.

Every string that can come from the network (file names, addresses, reasons)
goes through `_safe()`, which escapes control characters, and is put in `Text`
objects, never parsed as rich markup.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dattui.engine.events import (
    BadBlockReceived,
    Event,
    FileCompleted,
    ManifestProgressed,
    PeerCompleted,
    PeerConnected,
    PeerDisconnected,
    Role,
    State,
    SymlinkSkipped,
    TransferFailed,
    TransferStatus,
)

__all__ = [
    "ProgressView",
    "render",
    "format_bytes",
    "format_rate",
    "format_eta",
    "MAX_FILES_SHOWN",
    "FEW_FILES",
]

MAX_FILES_SHOWN = 8
FEW_FILES = 20  # FileCompleted lines are printed only for transfers this small
_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


# ---- formatting ---------------------------------------------------------------

def format_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units)."""
    if not math.isfinite(n) or n < 0:
        n = 0
    if n < 1000:
        return f"{int(n)} B"
    for unit in _UNITS[1:]:
        n /= 1000
        if n < 1000 or unit == _UNITS[-1]:
            return f"{n:.1f} {unit}" if n < 100 else f"{n:.0f} {unit}"
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """1500000 -> '1.5 MB/s'."""
    return format_bytes(bytes_per_second) + "/s"


def format_eta(seconds: float | None) -> str:
    """Seconds -> '42s', '3m05s', '2h07m', or '-' if unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 100 * 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return ">4d"


def _safe(s: str, limit: int = 300) -> str:
    """Escape control and format characters (terminal escape injection, bidi
    reordering from file names or peers) and bound the length."""
    out = []
    for ch in s:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o < 0xA0 or (o > 0xA0 and not ch.isprintable()):
            # C0, DEL, C1; and bidi overrides, other format characters, line and
            # paragraph separators, unassigned code points: nothing that can move
            # the cursor or reorder what is shown
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shorten(path: str, limit: int = 48) -> str:
    """Middle-ellipsize a long path, keeping its end (the file name)."""
    if len(path) <= limit:
        return path
    tail = limit * 2 // 3
    return path[: limit - tail - 1] + "…" + path[-tail:]


def _fraction(have: int, total: int, complete: bool = False) -> float:
    if total <= 0:
        return 1.0 if complete else 0.0
    return min(max(have / total, 0.0), 1.0)


def _percent(fraction: float) -> str:
    # never show 100% before it is really complete
    pct = math.floor(fraction * 1000) / 10
    return f"{pct:5.1f}%"


# ---- rendering ----------------------------------------------------------------

_STATE_STYLE = {
    State.SCANNING: "yellow",
    State.SEARCHING: "yellow",
    State.CONNECTING: "yellow",
    State.TRANSFERRING: "cyan",
    State.SEEDING: "green",
    State.DONE: "bold green",
    State.PAUSED: "magenta",
    State.FAILED: "bold red",
}


def _header(status: TransferStatus) -> Text:
    state = status.state
    t = Text()
    t.append(f"{status.role.value} ", style="bold")
    t.append(state.value, style=_STATE_STYLE.get(state, ""))
    t.append("  ")
    t.append(_safe(status.path))
    if status.version:
        t.append(f"  v{status.version}", style="dim")
    if status.files_total:
        t.append(f"  {status.files_done}/{status.files_total} files", style="dim")
    if status.role is Role.SHARE and status.link:
        t.append("\nlink ", style="dim")
        t.append(_safe(status.link), style="bold")
    if status.message:
        style = "red" if state is State.FAILED else "dim"
        t.append("\n")
        t.append(_safe(status.message), style=style)
    return t


def _total(status: TransferStatus) -> Table:
    complete = status.state in (State.DONE, State.SEEDING)
    frac = _fraction(status.bytes_have, status.bytes_total, complete)
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column("label", no_wrap=True, width=5)
    grid.add_column("bar", ratio=1, min_width=10)
    grid.add_column("pct", no_wrap=True, justify="right")
    grid.add_column("bytes", no_wrap=True, justify="right")
    grid.add_column("rate", no_wrap=True, justify="right")
    grid.add_column("tail", no_wrap=True, justify="right")
    if status.role is Role.CLONE:
        rate = status.rate_down
        arrow = "↓ "
        remaining = max(status.bytes_total - status.bytes_have, 0)
        if status.state is State.DONE or (status.bytes_total and remaining == 0):
            tail = "done"
        elif rate > 0 and status.bytes_total:
            tail = "ETA " + format_eta(remaining / rate)
        else:
            tail = "ETA -"
    else:
        rate = status.rate_up
        arrow = "↑ "
        tail = "sent " + format_bytes(status.bytes_sent)
        reporting = [p for p in status.peers if p.have_bytes >= 0 and p.have_total > 0]
        if reporting:  # the bar follows the collaborators, not what the share holds
            have = sum(p.have_bytes for p in reporting)
            total = sum(p.have_total for p in reporting)
            frac = _fraction(have, total)
            label = "clone" if len(reporting) == 1 else f"{len(reporting)} clones"
            grid.add_row(
                Text(label, style="bold"),
                ProgressBar(total=1000, completed=round(frac * 1000),
                            complete_style="green" if frac >= 1 else "cyan", finished_style="green"),
                Text(_percent(frac), style="bold"),
                Text(f"{format_bytes(have)} / {format_bytes(total)}"),
                Text(arrow + format_rate(rate)),
                Text(tail),
            )
            return grid
    bar = ProgressBar(
        total=1000, completed=round(frac * 1000),
        complete_style="green" if frac >= 1 else "cyan",
        finished_style="green",
    )
    grid.add_row(
        Text("total", style="bold"),
        bar,
        Text(_percent(frac), style="bold"),
        Text(f"{format_bytes(status.bytes_have)} / {format_bytes(status.bytes_total)}"),
        Text(arrow + format_rate(rate)),
        Text(tail),
    )
    return grid


def _files(status: TransferStatus) -> Table | None:
    files = status.active_files
    if not files:
        return None
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column("name", ratio=2, no_wrap=True, overflow="ellipsis", min_width=8)
    grid.add_column("bar", ratio=1, min_width=6)
    grid.add_column("pct", no_wrap=True, justify="right")
    grid.add_column("bytes", no_wrap=True, justify="right")
    for f in files[:MAX_FILES_SHOWN]:
        frac = _fraction(f.have, f.size, complete=True)
        grid.add_row(
            Text(_shorten(_safe(f.path)), no_wrap=True, overflow="ellipsis"),
            ProgressBar(total=1000, completed=round(frac * 1000), finished_style="green"),
            Text(_percent(frac)),
            Text(f"{format_bytes(f.have)} / {format_bytes(f.size)}", style="dim"),
        )
    if len(files) > MAX_FILES_SHOWN:
        grid.add_row(Text(f"+{len(files) - MAX_FILES_SHOWN} more", style="dim"), "", "", "")
    return grid


def _has(p) -> str:
    """What a peer reports holding of the version (sharing side)."""
    if p.have_all:
        return "done"
    if p.have_bytes < 0 or p.have_total <= 0:
        return "-"
    return _percent(_fraction(p.have_bytes, p.have_total)).strip()


def _peers(status: TransferStatus, seen: int = 0) -> RenderableType:
    if not status.peers:
        if seen:
            return Text("no peers connected now", style="dim")
        waiting = status.state in (State.SEARCHING, State.CONNECTING, State.SEEDING)
        return Text("no peers connected" + (" yet" if waiting else ""), style="dim")
    share = status.role is Role.SHARE
    table = Table(
        box=None, show_edge=False, pad_edge=False, header_style="bold dim",
        expand=False,
    )
    table.add_column("peer", no_wrap=True)
    table.add_column("address", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("path", no_wrap=True)
    table.add_column("rtt", no_wrap=True, justify="right")
    table.add_column("down", no_wrap=True, justify="right")
    table.add_column("up", no_wrap=True, justify="right")
    if share:
        table.add_column("has", no_wrap=True, justify="right")
        table.add_column("gets", no_wrap=True, justify="right")
    for p in status.peers:
        rtt = f"{p.rtt_ms:.0f} ms" if math.isfinite(p.rtt_ms) and p.rtt_ms >= 0 else "-"
        extra = (_has(p), format_rate(p.have_rate) if p.have_bytes >= 0 and not p.have_all
                 else "") if share else ()
        table.add_row(
            Text(_safe(p.peer_id[:8])),
            Text(_safe(p.address, 60)),
            Text(_path_value(p.path)),
            rtt,
            format_rate(p.rate_down),
            format_rate(p.rate_up),
            *extra,
        )
    return table


def _path_value(path: object) -> str:
    return _safe(str(getattr(path, "value", path)))


def render(status: TransferStatus, seen: int = 0) -> RenderableType:
    """The live area for one snapshot: header, total bar, file bars, peers
    (`seen`: how many peers have been connected so far)."""
    parts: list[RenderableType] = [_header(status), _total(status)]
    files = _files(status)
    if files is not None:
        parts.append(files)
    parts.append(_peers(status, seen))
    return Group(*parts)


def _placeholder(role: Role) -> RenderableType:
    what = "scanning folder…" if role is Role.SHARE else "looking for peers…"
    return Text(f"{role.value}: {what}", style="dim")


# ---- the live view ------------------------------------------------------------

class ProgressView:
    """Live progress for one transfer on `console`.

    Use as a context manager; feed it `update(status)` and `event(ev)` from the
    thread that runs the engine's callbacks. Redraws happen on rich's refresh
    thread, at most `refresh_hz` per second, from the newest snapshot only.
    """

    def __init__(self, console: Console, role: Role, refresh_hz: float = 8) -> None:
        if not refresh_hz > 0:
            raise ValueError("refresh_hz must be > 0")
        self.console = console
        self.role = role
        self.refresh_hz = float(refresh_hz)
        self._status: TransferStatus | None = None
        self._seen: set[str] = set()
        self._live = Live(
            get_renderable=self._renderable,
            console=console,
            refresh_per_second=self.refresh_hz,
            transient=False,
            auto_refresh=True,
            redirect_stdout=True,
            redirect_stderr=True,
        )

    @property
    def status(self) -> TransferStatus | None:
        """The newest snapshot given to `update()`."""
        return self._status

    def update(self, status: TransferStatus) -> None:
        """Keep `status` as the newest snapshot; cheap, renders nothing."""
        self._status = status

    def _renderable(self) -> RenderableType:
        status = self._status  # one read: the engine may replace it meanwhile
        if status is None:
            return _placeholder(self.role)
        return render(status, len(self._seen))

    def event(self, ev: Event) -> None:
        """Print one log line above the live area for the events users care about."""
        line = self._format_event(ev)
        if line is not None:
            self.console.print(line, soft_wrap=False, overflow="ellipsis", no_wrap=True)

    def _format_event(self, ev: Event) -> Text | None:
        stamp = Text(time.strftime("%H:%M:%S "), style="dim")
        if isinstance(ev, PeerConnected):
            self._seen.add(ev.peer_id)
            body = Text.assemble(
                ("peer ", ""), (_safe(ev.peer_id[:8]), "bold"),
                f" connected from {_safe(ev.address, 80)} "
                f"({_path_value(ev.path)}, {ev.connect_seconds * 1000:.0f} ms to connect)",
            )
            body.stylize("green")
        elif isinstance(ev, PeerDisconnected):
            body = Text.assemble(
                ("peer ", ""), (_safe(ev.peer_id[:8]), "bold"),
                f" at {_safe(ev.address, 80)} disconnected"
                + (f": {_safe(ev.reason, 120)}" if ev.reason else ""),
            )
            body.stylize("yellow")
        elif isinstance(ev, PeerCompleted):
            body = Text.assemble(
                ("collaborator ", ""), (_safe(ev.peer_id[:8]), "bold"),
                f" has the whole version {ev.version} ({ev.files} files, {format_bytes(ev.bytes)})",
            )
            body.stylize("bold green")
        elif isinstance(ev, BadBlockReceived):
            body = Text(
                f"bad block {ev.block} of {_safe(ev.path)} from peer "
                f"{_safe(ev.peer_id[:8])}: discarded",
                style="bold yellow",
            )
        elif isinstance(ev, ManifestProgressed):
            body = Text(f"receiving the list of files of version {ev.version}: "
                        f"{format_bytes(ev.received)} of {format_bytes(ev.total)}", style="dim")
        elif isinstance(ev, SymlinkSkipped):
            body = Text(f"skipped symlink {_safe(ev.path)}", style="dim")
        elif isinstance(ev, FileCompleted):
            status = self._status
            if status is None or not (0 < status.files_total <= FEW_FILES):
                return None
            body = Text(f"✓ {_safe(ev.path)} ({format_bytes(ev.size)})")
        elif isinstance(ev, TransferFailed):
            body = Text(f"error: {_safe(ev.message, 500)}", style="bold red")
        else:
            return None
        return stamp + body

    def __enter__(self) -> "ProgressView":
        self._live.start(refresh=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # stop() draws the newest snapshot once more and leaves it on screen
        self._live.stop()

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Print above the live area (plain console.print works too)."""
        self.console.print(*objects, **kwargs)
