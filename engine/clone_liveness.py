"""The clone's side of engine/liveness.py: it feeds the rules what happens to
its peers and carries out what they decide (reassign a slow peer's requests,
PING, drop, give up or show why it waits). Kept apart from engine/clone.py,
which stays about picking and storing blocks."""

from __future__ import annotations

import time

from . import liveness as lv
from . import wire
from .errors import NotFound
from .events import Logged
from .peer import ERR_GONE, PeerConnection

WATCH = 0.5  # how often the rules look at the peers


class LivenessGlue:
    """Mixed into CloneSwarm (engine/clone.py), whose request bookkeeping
    (`_release`, `retry`, `_remember_cancel`, `_kick`, `_fail`) it uses."""

    def _start_watch(self, rules: lv.Rules) -> None:
        self.live = lv.Liveness(rules, started=time.monotonic())
        self._watch_handle = self.loop.call_later(WATCH, self._watch)
        self._ping_token = 1 << 32

    def _stop_watch(self) -> None:
        if self._watch_handle is not None:
            self._watch_handle.cancel()
            self._watch_handle = None

    def may_dial(self, addr) -> bool:
        """Not a peer banned for bad data, nor one backing off after a close."""
        return self.live.may_dial(addr, time.monotonic())

    # ---- liveness: engine/liveness.py decides, this carries it out ----------------
    def _watch(self) -> None:
        self._watch_handle = None
        if self._closed or self.failed or (self.completed and not self.sync):
            return
        now = time.monotonic()
        loads = tuple(
            lv.PeerLoad(p, p.app.get("inflight_bytes", 0), p.down.rate(now), p.link.rtt,
                        p.last_heard, p.app.get("version") == self.version and self.version > 0)
            for p in self.peers if isinstance(p, PeerConnection))
        tick = lv.Tick(loads, self.version, not self.completed and self._remaining > 0)
        for act in self.live.handle(tick, now):
            self._carry_out(act)
        self._watch_handle = self.loop.call_later(WATCH, self._watch)

    def _feed(self, event) -> None:
        for act in self.live.handle(event, time.monotonic()):
            self._carry_out(act)

    def _carry_out(self, act) -> None:
        if isinstance(act, lv.Reassign):
            peer = act.peer
            mine = list(peer.app.get("inflight", {}))
            if mine and not peer.link.closed:
                peer.send_raw(b"".join(wire.encode(wire.Cancel(self.version, *k)) for k in mine))
            for key in mine:
                self._remember_cancel(peer, key)
                if self._release(peer, key):
                    self.retry[key] = None
            self._kick()
        elif isinstance(act, lv.Ping):
            self._ping_token += 1
            if not act.peer.link.closed:
                act.peer.send(wire.Ping(self._ping_token))
        elif isinstance(act, lv.Drop):
            self.emit(Logged(self.tid, "warning", f"peer {act.peer.peer_id} at {act.peer.address} "
                                                  f"dropped: {act.reason}"))
            act.peer.close(ERR_GONE, act.reason)
            self.detach(act.peer, act.reason)  # now: a dead connection takes a while to close
        elif isinstance(act, lv.Stuck):
            if self.completed:
                return  # a finished --sync clone waits for new versions: nothing is stuck
            if self.sync:
                self.message = f"waiting: {act.cause}"
                self.emit(Logged(self.tid, "warning", self.message))
            else:
                self._fail(NotFound(f"{act.cause}; giving up (run the same command again "
                                    "to continue: what was verified is kept)"))
        elif isinstance(act, lv.Unstuck):
            self.message = ""
