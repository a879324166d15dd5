"""The two-machine peer test: `dattui doctor --peer` and `dattui doctor --peer ID`.

Built on the engine itself, so it measures exactly what a clone between the
two machines gets: discovery, hole punching and relaying are the engine's
own (LAN, rendezvous servers, DHT as configured); the first path that works
carries the connection (and a relayed one moves to a punched path when a
punch succeeds later).

Both sides run in a temporary state directory (the user's keys, identity and
folders are not touched) and transfer a sample of random data, `size` bytes
(8 MiB by default), in each direction, one after the other:

1. the host shares its sample under a fresh key; the test id is that
   share's dat:// link, used once; the joiner clones it;
2. the joiner then shares a sample of the same size under a key derived from
   the test id (`reverse_key`: BLAKE2b of the public key, so the host knows
   its link without another message), and the host, which has been looking
   for that link since the start, clones it.

So each side times what it received: the time to connect, the path (lan,
direct, punched, relay-udp, relay-tcp) and why, the round-trip time (QUIC's
estimate, sampled during the transfers) and the throughput of its download.

Not done: trying every path one after the other (LAN, direct, punched,
relayed UDP, relayed TCP) in one run; the engine takes the best one that
works, and the report says which one and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import events as ev
from .. import keystore
from ..api import Engine, EngineOptions
from ..errors import DattuiError
from ..keys import ShareKey, parse_link
from ..store import ShareDB

__all__ = ["PeerTestResult", "host_peer_test", "join_peer_test", "path_reason", "reverse_key",
           "DEFAULT_SIZE"]

DEFAULT_SIZE = 8 * 1024 * 1024
SAMPLE_NAME = "dattui-doctor-sample.bin"
POLL = 0.05
GRACE = 0.5   # after our download: the last acknowledgements reach the other side

_WHY = {
    ev.PathKind.LAN: "the other machine was found on this local network and answered directly",
    ev.PathKind.DIRECT: "the other machine's address answered directly (no NAT in the way)",
    ev.PathKind.PUNCHED: "both sides punched through their NATs at the same moment, as the "
                         "rendezvous server arranged: a direct path",
    ev.PathKind.RELAY_UDP: "no direct path answered in time (NATs that change ports per "
                           "destination on both sides, or a failed punch), so the rendezvous "
                           "server relays the end-to-end encrypted data over UDP",
    ev.PathKind.RELAY_TCP: "UDP does not get through on at least one side, so the rendezvous "
                           "server relays the end-to-end encrypted data over TCP",
}


def path_reason(path: ev.PathKind | str) -> str:
    try:
        return _WHY[ev.PathKind(path)]
    except ValueError:
        return ""


def reverse_key(test_id: str) -> ShareKey:
    """The key the joiner shares its sample under, derived from the test id."""
    public = parse_link(test_id)
    seed = hashlib.blake2b(b"dattui doctor: the joiner's sample", key=public, digest_size=32).digest()
    return ShareKey.from_seed(seed)


@dataclass
class PeerTestResult:
    role: str                            # "host" or "join"
    ok: bool = False
    test_id: str = ""
    path: str | None = None              # the first connection's path
    why: str = ""
    peer_address: str | None = None
    connect_seconds: float | None = None
    final_path: str | None = None        # the path at the end (a relay may become punched)
    paths: list[str] = field(default_factory=list)   # every connection's path, in order
    rtt_ms: float | None = None          # median of the samples during the transfers
    rtt_min_ms: float | None = None
    bytes: int = 0                       # received by this side
    seconds: float | None = None         # from its connection to the end of its download
    throughput: float | None = None      # bytes per second received
    bytes_sent: int = 0
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


def _prepare_share(state: Path, folder: Path, key: ShareKey, size: int) -> None:
    """A sample folder recorded as shared under `key` (so Engine.share uses it)."""
    _write_sample(folder, size)
    keystore.save(key, state)
    db = ShareDB(folder)
    try:
        db.set("public_key", key.public)
        db.set("role", "share")
    finally:
        db.close()


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


class _Watch:
    """Events and status of the test's two transfers."""

    def __init__(self, engine: Engine, result: PeerTestResult) -> None:
        self.engine, self.r = engine, result
        self.queue = engine.subscribe()
        self.connected: dict[str, float] = {}      # tid -> when its first peer connected
        self.disconnected: set[str] = set()
        self.rtts: list[float] = []

    def poll(self) -> dict[str, ev.TransferStatus]:
        r = self.r
        while not self.queue.empty():
            e = self.queue.get_nowait()
            if isinstance(e, ev.PeerConnected) and e.tid not in self.connected:
                self.connected[e.tid] = time.monotonic()
                r.paths.append(e.path.value)
                if r.path is None:
                    r.path, r.why = e.path.value, path_reason(e.path)
                    r.peer_address, r.connect_seconds = e.address, e.connect_seconds
                    since = getattr(e, "since_start", 0.0)
                    if r.role == "join" and since:
                        r.connect_seconds = since  # from the start: discovery included
            elif isinstance(e, ev.PeerDisconnected):
                self.disconnected.add(e.tid)
        out = {}
        for st in self.engine.status():
            out[st.tid] = st
            for p in st.peers:
                if p.rtt_ms > 0:
                    self.rtts.append(p.rtt_ms)
                r.final_path = p.path.value
        return out

    def download_done(self, tid: str, nbytes: int) -> None:
        r = self.r
        r.bytes = nbytes
        start = self.connected.get(tid)
        if start is not None:
            r.seconds = max(1e-6, time.monotonic() - start)
            r.throughput = nbytes / r.seconds if nbytes else None

    def close(self) -> None:
        if self.rtts:
            self.r.rtt_ms = statistics.median(self.rtts)
            self.r.rtt_min_ms = min(self.rtts)


def _engine_options(state: Path, base: EngineOptions) -> EngineOptions:
    return EngineOptions(state=state, host=base.host, port=base.port, lan=base.lan,
                         dht=base.dht, dht_bootstrap=base.dht_bootstrap, rendezvous=base.rendezvous,
                         block_size=base.block_size)


def _outcome(task: asyncio.Task) -> ev.CloneCompleted | BaseException | None:
    """A clone's wait() task: its result, its error, or None while it runs."""
    if not task.done():
        return None
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception() or task.result()


async def _cancel(task: asyncio.Task | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def host_peer_test(options: EngineOptions, *, size: int = DEFAULT_SIZE, wait: float = 600.0,
                         on_ready: Callable[[str], None] | None = None,
                         transfer_timeout: float = 300.0) -> PeerTestResult:
    """Share a sample under a fresh one-time link (`on_ready(link)` once it
    is served) and clone the joiner's; returns when both went through, or
    nobody came within `wait` s, or a transfer took over `transfer_timeout` s."""
    r = PeerTestResult("host")
    tmp = Path(tempfile.mkdtemp(prefix="dattui-doctor-"))
    state = tmp / "state"
    engine = Engine(_engine_options(state, options))
    try:
        state.mkdir(mode=0o700)
        key = ShareKey.generate()
        r.test_id = key.link
        _prepare_share(state, tmp / "out", key, size)
        await engine.start()
        w = _Watch(engine, r)
        out = await engine.share(tmp / "out")
        back = await engine.clone(reverse_key(key.link).link, tmp / "in")
        back_wait = asyncio.ensure_future(engine.wait(back))
        if on_ready is not None:
            on_ready(key.link)
        start = time.monotonic()
        try:
            while True:
                sts = w.poll()
                if out in sts:
                    r.bytes_sent = sts[out].bytes_sent
                now = time.monotonic()
                done = _outcome(back_wait)
                if isinstance(done, ev.CloneCompleted):
                    w.download_done(back, done.bytes)
                    r.ok = True
                    break
                if isinstance(done, BaseException):
                    r.error = str(done)
                    break
                if out not in w.connected:
                    if now - start > wait:
                        r.error = f"nobody joined within {wait:g} s"
                        break
                elif now - w.connected[out] > transfer_timeout:
                    r.error = f"the samples were not through after {transfer_timeout:g} s"
                    break
                elif out in w.disconnected and back not in w.connected:
                    r.error = "the other side went away before sending its sample"
                    break
                await asyncio.sleep(POLL)
            if r.ok:
                await asyncio.sleep(GRACE)
                w.poll()
        finally:
            w.close()
            await _cancel(back_wait)
        r.this_side = _this_side(engine)
        return r
    finally:
        await engine.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def join_peer_test(options: EngineOptions, test_id: str, *, find_timeout: float = 60.0,
                         transfer_timeout: float = 300.0) -> PeerTestResult:
    """Clone the host's sample, then share one back until the host has it."""
    rkey = reverse_key(test_id)  # BadLink (a one-line usage error) before anything else
    r = PeerTestResult("join", test_id=test_id)
    tmp = Path(tempfile.mkdtemp(prefix="dattui-doctor-"))
    state = tmp / "state"
    engine = Engine(_engine_options(state, options))
    try:
        state.mkdir(mode=0o700)
        await engine.start()
        w = _Watch(engine, r)
        down = await engine.clone(test_id, tmp / "in")
        down_wait = asyncio.ensure_future(engine.wait(down))
        start = time.monotonic()
        try:
            # 1. the host's sample
            while True:
                w.poll()
                now = time.monotonic()
                done = _outcome(down_wait)
                if isinstance(done, ev.CloneCompleted):
                    w.download_done(down, done.bytes)
                    break
                if isinstance(done, BaseException):
                    r.error = str(done)
                    return r
                if down not in w.connected and now - start > find_timeout:
                    r.error = (f"the host was not found within {find_timeout:g} s: check the id, that "
                               "`dattui doctor --peer` still waits on the other machine, and that both "
                               "use the same --rendezvous server")
                    return r
                if down in w.connected and now - w.connected[down] > transfer_timeout:
                    r.error = f"the sample was not through after {transfer_timeout:g} s"
                    return r
                await asyncio.sleep(POLL)
            # 2. ours, until the host has it: it then closes, and we see it go
            _prepare_share(state, tmp / "out", rkey, max(1, r.bytes))
            up = await engine.share(tmp / "out")
            t_up = time.monotonic()
            while True:
                sts = w.poll()
                if up in sts:
                    r.bytes_sent = sts[up].bytes_sent
                now = time.monotonic()
                if up in w.disconnected:
                    break
                if up not in w.connected and now - t_up > find_timeout:
                    r.error = "the host did not fetch this side's sample"
                    break
                if up in w.connected and now - w.connected[up] > transfer_timeout:
                    r.error = f"this side's sample was not through after {transfer_timeout:g} s"
                    break
                await asyncio.sleep(POLL)
            r.ok = not r.error
        except DattuiError as exc:
            r.error = str(exc)
        finally:
            w.close()
            await _cancel(down_wait)
        r.this_side = _this_side(engine)
        return r
    finally:
        await engine.close()
        shutil.rmtree(tmp, ignore_errors=True)
