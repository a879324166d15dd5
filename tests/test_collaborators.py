"""The sharing side's view of its clones, from their PROGRESS frames: a clock
is passed in, nothing runs."""

from __future__ import annotations

from types import SimpleNamespace

from dattui.engine import wire
from dattui.engine.collaborators import EVENT_EVERY, Collaborators
from dattui.engine.events import PeerCompleted, PeerProgressed

MANIFEST = SimpleNamespace(version=2, total_bytes=1000, files=["a", "b", "c"])


def setup():
    events = []
    c = Collaborators("tid", lambda: MANIFEST, events.append)
    peer = SimpleNamespace(app={}, peer_id="0123abcd", address="192.0.2.7:3282")
    return c, peer, events


def test_progress_events_are_bounded_and_completion_is_said_once():
    c, peer, events = setup()
    c.progress(peer, wire.Progress(2, 100, 0), now=10.0)
    c.progress(peer, wire.Progress(2, 300, 1), now=10.0 + EVENT_EVERY / 2)  # too soon: no event
    c.progress(peer, wire.Progress(2, 500, 1), now=10.0 + EVENT_EVERY)
    assert [(type(e), e.bytes_have) for e in events] == [(PeerProgressed, 100), (PeerProgressed, 500)]
    assert events[-1].bytes_total == 1000 and events[-1].files_total == 3
    assert c.status_of(peer, 11.0)["have_bytes"] == 500 and not c.status_of(peer, 11.0)["have_all"]
    c.progress(peer, wire.Progress(2, 1000, 3), now=10.0 + EVENT_EVERY + 0.1)  # done: said at once
    c.progress(peer, wire.Progress(2, 1000, 3), now=10.0 + EVENT_EVERY + 0.2)
    assert [type(e) for e in events[2:]] == [PeerProgressed, PeerCompleted, PeerProgressed]
    assert c.status_of(peer, 12.0)["have_all"]
    assert c.leave_reason(peer, "clone stopped") == "left with the whole version"


def test_why_a_clone_left_in_words_about_the_transfer():
    c, peer, events = setup()
    assert c.leave_reason(peer, "idle timeout") == "idle timeout"  # it never reported
    c.progress(peer, wire.Progress(2, 420, 1), now=1.0)
    assert c.leave_reason(peer, "clone paused") == "paused at 42.0 %"
    assert c.leave_reason(peer, "clone stopped") == "left at 42.0 % (clone stopped)"


def test_progress_of_another_version_is_not_ours():
    c, peer, events = setup()
    c.progress(peer, wire.Progress(1, 1000, 3), now=1.0)  # all of the version before
    assert events == [] and c.status_of(peer, 1.0) == {}
    assert c.leave_reason(peer, "clone stopped") == "clone stopped"
