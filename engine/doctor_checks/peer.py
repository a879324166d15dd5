"""The two-machine peer test: `dattui doctor --peer` and `dattui doctor --peer ID`.

Built on the engine itself, so it measures exactly what a clone between the
two machines gets. The hosting side shares a small folder of random data
(`size` bytes, 8 MiB by default) under a fresh key, in a temporary state
directory (the user's keys and identity are not touched); the test id is
that share's dat:// link, used once. The joining side clones it into a
temporary folder. Discovery, hole punching and relaying are the engine's
own (LAN, rendezvous servers, DHT as configured): the first path that works
carries the connection, upgraded from a relay to a punched path when a
punch succeeds later.

Each side reports: the path (lan, direct, punched, relay-udp, relay-tcp) and
why, the time to connect, the round-trip time (QUIC's estimate, sampled
during the transfer), and the throughput of the sample over that path.

Not done: trying every path one after the other (LAN, direct, punched,
relayed UDP, relayed TCP) in one run; the engine picks the best one that
works, and the report says which and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import events as ev
from ..api import Engine, EngineOptions
from ..errors import DattuiError
from ..keys import parse_link

__all__ = ["PeerTestResult", "host_peer_test", "join_peer_test", "path_reason", "DEFAULT_SIZE"]

DEFAULT_SIZE = 8 * 1024 * 1024
SAMPLE_NAME = "dattui-doctor-sample.bin"

_WHY = {
    ev.PathKind.LAN: "the other machine was found on this local network and answered directly",
    ev.PathKind.DIRECT: "the other machine's address answered directly (no NAT in the way)",
    ev.PathKind.PUNCHED: "both sides punched through their NATs at the same moment, as the "
                         "rendezvous server arranged: a direct path",
    ev.PathKind.RELAY_UDP: "no direct path answered in time (NATs that change ports per "
                           "destination on both sides, or a failed punch), so the rendezvous "
                           "server relays the end-to-end encrypted data over UDP",
    ev.PathKind.RELAY_TCP: "UDP does not get through on at least one side, so the data goes "
                           "through the rendezvous server over TCP",
}


def path_reason(path: ev.PathKind | str) -> str:
    try:
        return _WHY[ev.PathKind(path)]
    except ValueError:
        return ""


@dataclass
class PeerTestResult:
    role: str                            # "host" or "join"
    ok: bool = False
    test_id: str = ""
    path: str | None = None              # the path the connection was made over
    final_path: str | None = None        # the path at the end (a relay may become punched)
    why: str = ""
    peer_address: str | None = None
    connect_seconds: float | None = None
    rtt_ms: float | None = None          # median of the samples during the transfer
    rtt_min_ms: float | None = None
    bytes: int = 0
    seconds: float | None = None         # from connection to the end of the sample
    throughput: float | None = None      # bytes per second
    this_side: dict = field(default_factory=dict)
    error: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("connect_seconds", "rtt_ms", "rtt_min_ms", "seconds"):
            if d[k] is not None:
                d[k] = round(d[k], 3)
        if d["throughput"] is not None:
            d["throughput"] = round(d["throughput"])
        return d


def _write_sample(folder: Path, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / SAMPLE_NAME, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            fh.write(os.urandom(n))
            left -= n


def _this_side(engine: Engine) -> dict:
    """What this side's engine learned about its own network."""
    out: dict = {"port": engine.port}
    rdv = getattr(engine, "rendezvous", None)
    if rdv is not None:
        out["nat_maps_per_destination"] = bool(getattr(rdv, "hard", False))
        mapped = getattr(rdv, "mapped", {}) or {}
        out["public_addresses"] = sorted({f"{m[0]}:{m[1]}" for m in mapped.values()})
        clients = getattr(rdv, "clients", [])
        over_udp = any(not c.tcp and c.registered for c in clients)
        over_tcp = any(c.tcp and c.registered for c in clients)
        out["rendezvous_over"] = "udp" if over_udp else "tcp" if over_tcp else None
    return out


class _Watcher:
    """Follows one transfer's events and status: path, RTT samples, bytes."""

    def __init__(self, engine: Engine, tid: str, result: PeerTestResult) -> None:
        self.engine, self.tid, self.r = engine, tid, result
        self.queue = engine.subscribe()
        self.connected_at: float | None = None
        self.disconnected = False
        self.rtts: list[float] = []

    def poll(self) -> None:
        while not self.queue.empty():
            e = self.queue.get_nowait()
            if e.tid != self.tid:
                continue
            if isinstance(e, ev.PeerConnected) and self.r.path is None:
                self.connected_at = time.monotonic()
                self.r.path = e.path.value
                self.r.why = path_reason(e.path)
                self.r.peer_address = e.address
                self.r.connect_seconds = e.connect_seconds
            elif isinstance(e, ev.PeerDisconnected) and self.r.path is not None:
                self.disconnected = True
        for st in self.engine.status():
            if st.tid != self.tid:
                continue
            for p in st.peers:
                if p.rtt_ms > 0:
                    self.rtts.append(p.rtt_ms)
                self.r.final_path = p.path.value
            return st
        return None

    def finish(self, nbytes: int) -> None:
        r = self.r
        if self.rtts:
            r.rtt_ms = statistics.median(self.rtts)
            r.rtt_min_ms = min(self.rtts)
        r.bytes = nbytes
        if self.connected_at is not None:
            r.seconds = max(1e-6, time.monotonic() - self.connected_at)
            r.throughput = nbytes / r.seconds if nbytes else None


def _engine_options(state: Path, base: EngineOptions) -> EngineOptions:
    return EngineOptions(state=state, host=base.host, port=base.port, lan=base.lan,
                         dht=base.dht, dht_bootstrap=base.dht_bootstrap, rendezvous=base.rendezvous,
                         block_size=base.block_size)


async def host_peer_test(options: EngineOptions, *, size: int = DEFAULT_SIZE, wait: float = 600.0,
                         on_ready: Callable[[str], None] | None = None,
                         transfer_timeout: float = 300.0) -> PeerTestResult:
    """Share a sample under a fresh one-time link; `on_ready(link)` is called
    once it is served; returns when the other side has the whole sample (or
    went away, or nobody came within `wait` s)."""
    r = PeerTestResult("host")
    tmp = Path(tempfile.mkdtemp(prefix="dattui-doctor-"))
    engine = Engine(_engine_options(tmp / "state", options))
    try:
        (tmp / "state").mkdir(mode=0o700)
        _write_sample(tmp / "sample", size)
        key = engine.share_key(tmp / "sample")
        r.test_id = key.link
        await engine.start()
        tid = await engine.share(tmp / "sample")
        w = _Watcher(engine, tid, r)
        if on_ready is not None:
            on_ready(key.link)
        start = time.monotonic()
        sent = 0
        done_at: float | None = None
        while True:
            st = w.poll()
            sent = st.bytes_sent if st is not None else sent
            now = time.monotonic()
            if r.path is None and now - start > wait:
                r.error = f"nobody joined within {wait:g} s"
                break
            if r.path is not None:
                if sent >= size and done_at is None:
                    done_at = now
                    w.finish(sent)
                if done_at is not None and (w.disconnected or now - done_at > 2.0):
                    r.ok = True
                    break
                if w.disconnected and sent < size:
                    w.finish(sent)
                    r.error = "the other side went away before the sample was through"
                    break
                if w.connected_at and now - w.connected_at > transfer_timeout:
                    w.finish(sent)
                    r.error = f"the sample was not through after {transfer_timeout:g} s"
                    break
            await asyncio.sleep(0.1)
        r.this_side = _this_side(engine)
        return r
    finally:
        await engine.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def join_peer_test(options: EngineOptions, test_id: str, *, find_timeout: float = 60.0,
                         transfer_timeout: float = 300.0) -> PeerTestResult:
    """Clone the other side's sample; returns what the connection was like."""
    parse_link(test_id)  # BadLink (a one-line usage error) before anything else
    r = PeerTestResult("join", test_id=test_id)
    tmp = Path(tempfile.mkdtemp(prefix="dattui-doctor-"))
    engine = Engine(_engine_options(tmp / "state", options))
    try:
        (tmp / "state").mkdir(mode=0o700)
        await engine.start()
        tid = await engine.clone(test_id, tmp / "clone")
        w = _Watcher(engine, tid, r)
        waiter = asyncio.ensure_future(engine.wait(tid, find_timeout=find_timeout))
        start = time.monotonic()
        try:
            while not waiter.done():
                w.poll()
                if w.connected_at and time.monotonic() - w.connected_at > transfer_timeout:
                    r.error = f"the sample was not through after {transfer_timeout:g} s"
                    break
                if time.monotonic() - start > find_timeout + transfer_timeout:
                    r.error = "timed out"
                    break
                await asyncio.sleep(0.1)
            if waiter.done():
                done = waiter.result()
                w.poll()
                w.finish(done.bytes)
                r.ok = True
        except DattuiError as exc:
            w.poll()
            r.error = str(exc)
        finally:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(BaseException):
                    await waiter
        r.this_side = _this_side(engine)
        await asyncio.sleep(0.3)  # the last acknowledgements reach the host
        return r
    finally:
        await engine.close()
        shutil.rmtree(tmp, ignore_errors=True)
