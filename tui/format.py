"""Pure formatting for the dashboard: status and events -> short strings and
rich `Text`. No textual here, so it is cheap to test.

Every string that can come from the network or the disk (names, paths,
addresses, reasons) goes through `safe()` and into `Text` objects, never into
markup.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping

from rich.text import Text

from dattui.engine.events import (
    BadBlockReceived,
    CloneCompleted,
    Event,
    FileCompleted,
    Listening,
    Logged,
    ManifestReceived,
    PathKind,
    PeerCompleted,
    PeerConnected,
    PeerDisconnected,
    PathAttempted,
    PeerFound,
    Role,
    ScanProgressed,
    State,
    SymlinkSkipped,
    TransferFailed,
    TransferStatus,
    VersionPublished,
)
from dattui.tui.progress import _safe, format_bytes, format_rate

__all__ = [
    "safe",
    "fit",
    "name_of",
    "short_link",
    "fraction_of",
    "percent",
    "bar",
    "state_text",
    "path_text",
    "rtt_text",
    "stamp_text",
    "event_text",
    "attempt_text",
    "format_bytes",
    "format_rate",
]

LINK_PREFIX = "dat://"
SHORT_LINK_CHARS = 12

STATE_STYLE: Mapping[State, str] = {
    State.SCANNING: "yellow",
    State.SEARCHING: "yellow",
    State.CONNECTING: "yellow",
    State.TRANSFERRING: "cyan",
    State.SEEDING: "green",
    State.DONE: "bold green",
    State.PAUSED: "magenta",
    State.FAILED: "bold red",
}

PATH_STYLE: Mapping[PathKind, str] = {
    PathKind.LAN: "green",
    PathKind.DIRECT: "green",
    PathKind.PUNCHED: "cyan",
    PathKind.RELAY_UDP: "yellow",
    PathKind.RELAY_TCP: "yellow",
}


def safe(s: str, limit: int = 300) -> str:
    """Control characters escaped, length bounded (see tui.progress)."""
    return _safe(str(s), limit)


def fit(s: str, width: int) -> str:
    """`s` cut to `width` cells with an ellipsis, keeping its end (file names
    and folder names are told apart by their ends)."""
    if width <= 0:
        return ""
    if len(s) <= width:
        return s
    if width == 1:
        return "…"
    return "…" + s[-(width - 1):]


def fit_middle(s: str, width: int) -> str:
    """`s` cut to `width` cells with an ellipsis in the middle (addresses:
    the host's start and the port both matter)."""
    if width <= 0:
        return ""
    if len(s) <= width:
        return s
    if width < 5:
        return fit(s, width)
    tail = (width - 1) // 2
    head = width - 1 - tail
    return s[:head] + "…" + s[-tail:]


def fit_start(s: str, width: int) -> str:
    """`s` cut to `width` cells with an ellipsis, keeping its start."""
    if width <= 0:
        return ""
    if len(s) <= width:
        return s
    return s[: width - 1] + "…"


def name_of(status: TransferStatus) -> str:
    """The folder's base name (what users call a share)."""
    path = status.path.rstrip("/\\")
    return safe(os.path.basename(path) or path or status.tid)


def short_link(link: str) -> str:
    """The first 12 characters after dat://: enough to tell links apart."""
    s = link[len(LINK_PREFIX):] if link.startswith(LINK_PREFIX) else link
    return safe(s[:SHORT_LINK_CHARS])


def fraction_of(have: int, total: int, complete: bool = False) -> float:
    if total <= 0:
        return 1.0 if complete else 0.0
    return min(max(have / total, 0.0), 1.0)


def clones_held(status: TransferStatus) -> tuple[int, int, int] | None:
    """Sharing side: (bytes held, bytes of the version, clones) summed over the
    connected clones that report their progress; None when none does."""
    if status.role is not Role.SHARE:
        return None
    reporting = [p for p in status.peers if p.have_bytes >= 0 and p.have_total > 0]
    if not reporting:
        return None
    return (sum(p.have_bytes for p in reporting), sum(p.have_total for p in reporting),
            len(reporting))


def peer_held(p) -> str:
    """What one peer reports holding of the version: '45.1%', 'done' or '-'."""
    if p.have_all:
        return "done"
    if p.have_bytes < 0 or p.have_total <= 0:
        return "-"
    return percent(fraction_of(p.have_bytes, p.have_total, False))


def status_fraction(status: TransferStatus) -> float:
    """A clone: what it holds. A share: what its connected clones hold (when
    they report it), else what it serves."""
    held = clones_held(status)
    if held is not None:
        return fraction_of(held[0], held[1], False)
    complete = status.state in (State.DONE, State.SEEDING)
    if status.role is Role.SHARE and status.state is not State.SCANNING:
        complete = True
    return fraction_of(status.bytes_have, status.bytes_total, complete)


def percent(fraction: float) -> str:
    """'45.1%'; never shows 100% before it really is complete."""
    if not math.isfinite(fraction):
        fraction = 0.0
    return f"{math.floor(fraction * 1000) / 10:.1f}%"


def bar(fraction: float, width: int) -> Text:
    """A progress bar of block characters: readable without colour."""
    width = max(width, 1)
    if not math.isfinite(fraction):
        fraction = 0.0
    done = width if fraction >= 1.0 else min(math.floor(fraction * width), width - 1)
    t = Text()
    t.append("█" * done, style="green" if fraction >= 1.0 else "cyan")
    t.append("░" * (width - done), style="dim")
    return t


def state_text(state: State) -> Text:
    return Text(state.value, style=STATE_STYLE.get(state, ""))


def path_text(path: PathKind | str) -> Text:
    value = getattr(path, "value", path)
    style = PATH_STYLE.get(path, "") if isinstance(path, PathKind) else ""
    return Text(safe(str(value), 20), style=style)


def rtt_text(rtt_ms: float) -> str:
    if not math.isfinite(rtt_ms) or rtt_ms < 0:
        return "-"
    return f"{rtt_ms:.0f} ms"


def stamp_text(wall: float) -> Text:
    return Text(time.strftime("%H:%M:%S", time.localtime(wall)), style="dim")


def _who(tid: str, names: Mapping[str, str]) -> str:
    return names.get(tid) or tid[:8]


def event_text(ev: Event, names: Mapping[str, str]) -> Text:
    """One log line (without time stamp) for any engine event."""
    who = Text(_who(ev.tid, names), style="bold")
    body: Text
    if isinstance(ev, PeerConnected):
        body = Text(
            f"peer {safe(ev.peer_id[:8])} connected at {safe(ev.address, 80)} "
            f"by {safe(str(ev.path.value))} in {ev.connect_seconds * 1000:.0f} ms"
            f" ({'we dialled' if ev.initiator else 'they dialled'})",
            style="green",
        )
    elif isinstance(ev, PeerDisconnected):
        body = Text(
            f"peer {safe(ev.peer_id[:8])} at {safe(ev.address, 80)} disconnected"
            + (f": {safe(ev.reason, 200)}" if ev.reason else ""),
            style="yellow",
        )
    elif isinstance(ev, PeerCompleted):
        body = Text(
            f"collaborator {safe(ev.peer_id[:8])} has the whole version {ev.version} "
            f"({ev.files} files, {format_bytes(ev.bytes)})",
            style="bold green",
        )
    elif isinstance(ev, PeerFound):
        body = Text(f"found peer {safe(ev.address, 80)} via {safe(ev.source, 20)}")
    elif isinstance(ev, BadBlockReceived):
        body = Text(
            f"bad block {ev.block} of {safe(ev.path)} from peer {safe(ev.peer_id[:8])}: discarded",
            style="bold yellow",
        )
    elif isinstance(ev, FileCompleted):
        body = Text(f"✓ {safe(ev.path)} ({format_bytes(ev.size)})")
    elif isinstance(ev, TransferFailed):
        body = Text(f"error: {safe(ev.message, 500)}", style="bold red")
    elif isinstance(ev, Logged):
        style = {"error": "bold red", "warning": "yellow", "debug": "dim"}.get(ev.level.lower(), "")
        body = Text(f"{safe(ev.level, 10)}: {safe(ev.message, 500)}", style=style)
    elif isinstance(ev, ScanProgressed):
        body = Text(f"scanned {ev.files} files, {format_bytes(ev.bytes)}", style="dim")
    elif isinstance(ev, SymlinkSkipped):
        body = Text(f"skipped symlink {safe(ev.path)}", style="dim")
    elif isinstance(ev, VersionPublished):
        body = Text(f"published version {ev.version}: {ev.files} files, {format_bytes(ev.bytes)}")
    elif isinstance(ev, Listening):
        body = Text("listening on " + ", ".join(safe(a, 60) for a in ev.addresses[:6]))
    elif isinstance(ev, ManifestReceived):
        body = Text(
            f"manifest of {safe(ev.name, 80)} v{ev.version}: {ev.files} files, "
            f"{format_bytes(ev.bytes)}"
        )
    elif isinstance(ev, CloneCompleted):
        body = Text(
            f"clone complete: v{ev.version}, {ev.files} files, {format_bytes(ev.bytes)}"
            f" in {ev.seconds:.1f} s",
            style="bold green",
        )
    else:
        body = Text(safe(type(ev).__name__))
    return Text.assemble(who, " ", body)


def attempt_text(ev: Event, names: Mapping[str, str]) -> Text | None:
    """A connection-attempt line for the connectivity screen, or None if `ev`
    is not about connecting to a peer."""
    who = Text(_who(ev.tid, names), style="bold")
    if isinstance(ev, PathAttempted):
        body = Text.assemble(
            (f"{safe(ev.step, 10):<9} ", "cyan"),
            f"{safe(ev.address, 80)}: {safe(ev.detail, 200)}",
        )
    elif isinstance(ev, PeerFound):
        body = Text.assemble(
            ("try   ", "dim"),
            f"{safe(ev.address, 80)} (found via {safe(ev.source, 20)})",
        )
    elif isinstance(ev, PeerConnected):
        body = Text.assemble(
            ("ok    ", "bold green"),
            f"{safe(ev.address, 80)} peer {safe(ev.peer_id[:8])} by ",
            path_text(ev.path),
            f" in {ev.connect_seconds * 1000:.0f} ms"
            f" ({'we dialled' if ev.initiator else 'they dialled'})",
        )
    elif isinstance(ev, PeerDisconnected):
        gone_well = ev.reason.startswith(("left with the whole version", "paused at"))
        body = Text.assemble(
            ("left  ", "green") if gone_well else ("lost  ", "bold yellow"),
            f"{safe(ev.address, 80)} peer {safe(ev.peer_id[:8])}",
            (": " + safe(ev.reason, 200)) if ev.reason else "",
        )
    else:
        return None
    return Text.assemble(who, " ", body)
