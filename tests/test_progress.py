import io
import time

from rich.console import Console

import dattui.tui.progress as progress
from dattui.engine.events import (
    BadBlockReceived,
    FileCompleted,
    FileProgress,
    Logged,
    PathKind,
    PeerConnected,
    PeerDisconnected,
    PeerStatus,
    Role,
    State,
    SymlinkSkipped,
    TransferFailed,
    TransferStatus,
)


def _console():
    return Console(record=True, width=100, file=io.StringIO(), color_system=None)


def _peer(i=1, path=PathKind.PUNCHED):
    return PeerStatus(
        peer_id=f"{i:02d}ab34cd56ef7890",
        address=f"203.0.113.{i}:3282",
        path=path,
        rtt_ms=42.4,
        rate_down=1_500_000.0,
        rate_up=12_000.0,
        bytes_down=10,
        bytes_up=1,
        blocks_down=1,
        blocks_up=0,
        connected_seconds=3.0,
    )


def _status(**kw):
    base = dict(
        tid="0123456789abcdef",
        role=Role.CLONE,
        state=State.TRANSFERRING,
        path="./data",
        link="dat://" + "ab" * 32,
        version=3,
        files_total=5,
        files_done=2,
        bytes_total=4_000_000,
        bytes_have=1_000_000,
        rate_down=2_000_000.0,
        peers=(_peer(1), _peer(2, PathKind.LAN)),
        active_files=(
            FileProgress("genome/chr1.fa", 2_000_000, 500_000),
            FileProgress("reads/sample_A.fastq", 1_000_000, 250_000),
        ),
    )
    base.update(kw)
    return TransferStatus(**base)


def _text(renderable):
    c = _console()
    c.print(renderable)
    return c.export_text()


def test_render_clone():
    out = _text(progress.render(_status()))
    assert "genome/chr1.fa" in out
    assert "reads/sample_A.fastq" in out
    assert "25.0%" in out  # total 1/4
    assert "203.0.113.1:3282" in out and "203.0.113.2:3282" in out
    assert "punched" in out and "lan" in out
    assert "2.0 MB/s" in out  # total rate down
    assert "1.5 MB/s" in out  # per-peer down
    assert "42 ms" in out
    assert "ETA 2s" in out  # 3 MB left at 2 MB/s
    assert "01ab34cd" in out and "01ab34cd56ef" not in out  # short peer id
    assert "transferring" in out and "2/5 files" in out


def test_render_share_shows_link_and_upload():
    st = _status(
        role=Role.SHARE, state=State.SEEDING, bytes_have=4_000_000, rate_up=3_500_000.0,
        bytes_sent=12_000_000, active_files=(),
    )
    out = _text(progress.render(st))
    assert "dat://" + "ab" * 32 in out
    assert "100.0%" in out
    assert "3.5 MB/s" in out
    assert "sent 12.0 MB" in out


def test_render_many_files_and_no_peers():
    files = tuple(FileProgress(f"f{i:02d}.bin", 100, i) for i in range(12))
    out = _text(progress.render(_status(active_files=files, peers=(), state=State.SEARCHING)))
    assert "f07.bin" in out and "f08.bin" not in out
    assert "+4 more" in out
    assert "no peers connected" in out


def test_render_edge_cases():
    out = _text(progress.render(_status(bytes_total=0, bytes_have=0, rate_down=0.0)))
    assert "0.0%" in out and "ETA -" in out
    out = _text(progress.render(_status(state=State.DONE, bytes_have=4_000_000)))
    assert "100.0%" in out and "done" in out
    # 99.99% is not shown as 100%
    out = _text(progress.render(_status(bytes_total=10_000, bytes_have=9_999)))
    assert "99.9%" in out


def test_network_strings_cannot_inject_markup_or_escapes():
    evil = "[bold red]x[/]\x1b[2J\x07name"
    st = _status(active_files=(FileProgress(evil, 10, 1),))
    c = Console(width=200, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    c.print(progress.render(st))
    raw = c.file.getvalue()
    assert "\x1b[2J" not in raw and "\x07" not in raw
    assert "[bold red]x[/]" in raw
    assert "\\x1b[2J" in raw


def test_formatting():
    assert progress.format_rate(0) == "0 B/s"
    assert progress.format_rate(999) == "999 B/s"
    assert progress.format_rate(1500) == "1.5 KB/s"
    assert progress.format_rate(12_345_678) == "12.3 MB/s"
    assert progress.format_bytes(250_000_000_000) == "250 GB"
    assert progress.format_eta(None) == "-"
    assert progress.format_eta(5) == "5s"
    assert progress.format_eta(185) == "3m05s"
    assert progress.format_eta(7260) == "2h01m"


def test_updates_are_cheap_and_redraws_bounded(monkeypatch):
    calls = 0
    real = progress.render

    def counting(status, *rest):
        nonlocal calls
        calls += 1
        return real(status, *rest)

    monkeypatch.setattr(progress, "render", counting)
    console = _console()
    statuses = [_status(bytes_have=i * 400) for i in range(10_000)]
    with progress.ProgressView(console, Role.CLONE, refresh_hz=8) as view:
        t0 = time.perf_counter()
        for st in statuses:
            view.update(st)
        elapsed = time.perf_counter() - t0
        assert view.status is statuses[-1]
    assert elapsed < 1.0
    # start + stop + at most a few timer ticks, never one per update
    assert calls < 20
    # the final frame left on screen is the newest snapshot
    assert "genome/chr1.fa" in console.export_text()


def test_events_print_lines():
    console = _console()
    with progress.ProgressView(console, Role.CLONE) as view:
        view.update(_status())
        view.event(PeerConnected("t", "01ab34cd56", "198.51.100.7:3282", PathKind.DIRECT, 0.12, True))
        view.event(PeerDisconnected("t", "01ab34cd56", "198.51.100.7:3282", "idle timeout"))
        view.event(BadBlockReceived("t", "01ab34cd56", "genome/chr1.fa", 7))
        view.event(SymlinkSkipped("t", "link-to-etc"))
        view.event(FileCompleted("t", "reads/sample_A.fastq", 1_000_000))
        view.event(TransferFailed("t", "disk full: free some space"))
        view.event(Logged("t", "debug", "not shown"))
    out = console.export_text()
    assert "198.51.100.7:3282" in out and "direct" in out and "120 ms" in out
    assert "idle timeout" in out
    assert "bad block 7 of genome/chr1.fa" in out
    assert "skipped symlink link-to-etc" in out
    assert "reads/sample_A.fastq (1.0 MB)" in out
    assert "error: disk full" in out
    assert "not shown" not in out


def test_file_completed_quiet_for_big_transfers():
    console = _console()
    view = progress.ProgressView(console, Role.CLONE)
    view.update(_status(files_total=5000))
    view.event(FileCompleted("t", "many/one.bin", 10))
    assert "many/one.bin" not in console.export_text()


def test_placeholder_before_first_update():
    console = _console()
    with progress.ProgressView(console, Role.SHARE):
        pass
    assert "share" in console.export_text()


def test_long_file_names_keep_their_end():
    name = "a/very/long/path/" * 6 + "the_file_name.bin"
    out = _text(progress.render(_status(active_files=(FileProgress(name, 10, 3),))))
    assert "the_file_name.bin" in out
