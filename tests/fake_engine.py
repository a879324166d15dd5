"""A fake engine daemon for the dashboard's tests: it implements `EngineApi`
by replaying a recording, and remembers what it was asked to do.

A recording is a list of frames `(t, item)`: `item` is an event, or a status
snapshot (a tuple of `TransferStatus`, every transfer at time `t`). Time is
virtual: each `status()` call advances it by `step` seconds (the app polls, so
the replay moves at the poll rate and every snapshot is seen, in order), and
`advance()` / `advance_to_end()` move it by hand. Events whose time has come are
delivered by `events()`; `inject()` adds more (a flood, say).

Recordings are stored as JSON (tests/recordings/*.json):

    {"format": "dattui-recording", "version": 1,
     "frames": [{"t": 0.0, "status": [{...TransferStatus...}, ...]},
                {"t": 0.5, "event": {"type": "PeerConnected", ...}}]}

Every dataclass is an object with its fields plus "type" (the class name);
enums are their values; tuples are lists.

    python tests/fake_engine.py --write   # regenerate tests/recordings/demo.json
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import fnmatch
import hashlib
import json
import math
import sys
import types
import typing
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, Union

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dattui.engine import events as ev  # noqa: E402
from dattui.engine.daemon.interface import CheckResult, FilePage  # noqa: E402
from dattui.engine.events import (  # noqa: E402
    Event,
    FileProgress,
    PathKind,
    PeerStatus,
    Role,
    State,
    TransferStatus,
)

RECORDINGS = Path(__file__).resolve().parent / "recordings"
FORMAT = "dattui-recording"

Snapshot = tuple[TransferStatus, ...]
Frame = tuple[float, Union[Event, Snapshot]]

# ---- JSON ---------------------------------------------------------------------------

_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in vars(ev).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == ev.__name__
}
_TYPES["CheckResult"] = CheckResult
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        module = sys.modules[cls.__module__]
        _HINTS[cls] = typing.get_type_hints(cls, vars(module))
    return _HINTS[cls]


def to_json(obj: Any) -> Any:
    """A dataclass / enum / tuple tree -> JSON-ready values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"type": type(obj).__name__}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == "extra" and not value:
                continue
            out[f.name] = to_json(value)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (tuple, list)):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_convert(inner, x) for x in value)
    if origin is Union or origin is types.UnionType:
        if value is None:
            return None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                return _convert(arg, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if isinstance(value, dict) and "type" in value:
        return from_json(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_json(data: dict[str, Any]) -> Any:
    """The inverse of `to_json` for one dataclass object."""
    cls = _TYPES[data["type"]]
    hints = _hints(cls)
    kwargs = {k: _convert(hints[k], v) for k, v in data.items() if k != "type"}
    return cls(**kwargs)


def dump_recording(frames: Iterable[Frame]) -> str:
    out = []
    for t, item in frames:
        if isinstance(item, tuple):
            out.append({"t": t, "status": [to_json(s) for s in item]})
        else:
            out.append({"t": t, "event": to_json(item)})
    lines = ",\n".join(json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in out)
    return f'{{"format": "{FORMAT}", "version": 1, "frames": [\n{lines}\n]}}\n'



def load_recording(source: str | Path) -> list[Frame]:
    """A recording from a JSON file (a name in tests/recordings/ or a path)."""
    path = Path(source)
    if not path.suffix:
        path = RECORDINGS / f"{source}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT or data.get("version") != 1:
        raise ValueError(f"{path}: not a {FORMAT} version 1 file")
    frames: list[Frame] = []
    for frame in data["frames"]:
        if "status" in frame:
            frames.append((float(frame["t"]), tuple(from_json(s) for s in frame["status"])))
        else:
            frames.append((float(frame["t"]), from_json(frame["event"])))
    return frames


# ---- the fake ------------------------------------------------------------------------

DOCTOR_RESULTS: tuple[CheckResult, ...] = (
    CheckResult("udp", True, "UDP socket bound on 0.0.0.0:3282."),
    CheckResult("public_address", True, "Public address 203.0.113.7:3282, seen by 2 STUN servers."),
    CheckResult(
        "nat_mapping", False,
        "Your NAT gives each destination a different port (symmetric NAT).",
        detail="STUN server 1 saw port 3282, server 2 saw port 61022.",
        advice="Direct connections to most peers will fail and go through a relay. "
               "Forward UDP port 3282 on your router to this machine to allow them.",
    ),
    CheckResult("dht", True, "Joined the DHT: 118 nodes answered."),
    CheckResult(
        "rendezvous", None, "No rendezvous server is configured.",
        advice="Peers outside your network are found through the DHT only, which is "
               "slower. Add a server under [discovery] rendezvous in config.toml.",
    ),
    CheckResult("relay_tcp", True, "Relay relay.example.org reachable over TCP port 443."),
    CheckResult(
        "verdict", False,
        "others can reach you only through a relay: your NAT gives every destination a new public port",
        advice="transfers still work: they go through the relay at relay.example.org:443\n"
               "for direct connections: forward a UDP port to this machine on the router",
    ),
)

DAEMON_LOGS: tuple[str, ...] = (
    "daemon started, pid 4242, state directory ~/.local/state/dattui",
    "control socket ~/.local/state/dattui/daemon.sock (mode 0600)",
    "resumed 4 transfers",
    "node listening on 0.0.0.0:3282",
)


class FakeEngine:
    """`EngineApi` over a recording; see the module docstring."""

    def __init__(
        self,
        frames: Sequence[Frame] = (),
        *,
        step: float = 1.0,
        files: dict[str, int] | None = None,
        doctor: Sequence[CheckResult] = DOCTOR_RESULTS,
        doctor_delay: float = 0.0,
        doctor_manual: bool = False,
        logs: Sequence[str] = DAEMON_LOGS,
    ) -> None:
        self.frames = sorted(frames, key=lambda f: f[0])
        self.step = step
        self.now = 0.0
        self._next = 0                      # index of the next frame not yet released
        self._started = False
        self._snapshot: Snapshot = ()
        self._queue: asyncio.Queue[Event] | None = None
        self._pending_events: list[Event] = []
        self._files_count = dict(files or {})
        self._doctor = tuple(doctor)
        self._doctor_delay = doctor_delay
        self._doctor_manual = doctor_manual  # each check waits for release_checks()
        self._doctor_tokens: asyncio.Queue | None = None
        self._logs = tuple(logs)
        self._paused: set[str] = set()
        self._resumed: set[str] = set()
        self._removed: set[str] = set()
        self._added: list[TransferStatus] = []
        self._file_cache: dict[tuple, list[FileProgress]] = {}
        self.closed = False
        # what the dashboard asked for
        self.calls: list[tuple[Any, ...]] = []       # ("pause", tid), ("share", path), ...
        self.files_calls: list[dict[str, Any]] = []
        self.status_calls = 0
        self.doctor_calls = 0
        self._release()

    # ---- time ---------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every frame of the recording has been released."""
        return self._next >= len(self.frames)

    @property
    def end(self) -> float:
        return self.frames[-1][0] if self.frames else 0.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._release()

    def advance_to_end(self) -> None:
        self.now = max(self.now, self.end)
        self._release()

    def _release(self) -> None:
        while self._next < len(self.frames) and self.frames[self._next][0] <= self.now:
            _, item = self.frames[self._next]
            self._next += 1
            if isinstance(item, tuple):
                self._snapshot = item
            else:
                self._deliver(item)

    def _deliver(self, event: Event) -> None:
        if self._queue is None:
            self._pending_events.append(event)
        else:
            self._queue.put_nowait(event)

    def inject(self, events: Iterable[Event]) -> None:
        """Deliver these events now (e.g. a flood)."""
        for e in events:
            self._deliver(e)

    # ---- EngineApi -----------------------------------------------------------------

    async def status(self) -> tuple[TransferStatus, ...]:
        self.status_calls += 1
        if self._started and not self.finished:
            self.advance(self.step)  # time stops at the end: a stable picture
        self._started = True
        return self.current()

    def current(self) -> tuple[TransferStatus, ...]:
        """The snapshot now, with the effect of the calls made so far."""
        out = []
        for s in (*self._snapshot, *self._added):
            if s.tid in self._removed:
                continue
            if s.tid in self._paused:
                s = dataclasses.replace(s, state=State.PAUSED, rate_down=0.0, rate_up=0.0,
                                        peers=())
            elif s.tid in self._resumed and s.state is State.PAUSED:
                s = dataclasses.replace(s, state=State.SEARCHING)
            out.append(s)
        return tuple(out)

    async def events(self) -> AsyncIterator[Event]:
        if self._queue is None:
            self._queue = asyncio.Queue()
            for e in self._pending_events:
                self._queue.put_nowait(e)
            self._pending_events.clear()
        while not self.closed:
            yield await self._queue.get()

    async def share(self, path: str) -> str:
        self.calls.append(("share", path))
        tid = _tid("share:" + path)
        self._added.append(TransferStatus(
            tid=tid, role=Role.SHARE, state=State.SCANNING, path=path, link=_link(path),
        ))
        return tid

    async def clone(self, link: str, path: str) -> str:
        self.calls.append(("clone", link, path))
        tid = _tid("clone:" + link)
        self._added.append(TransferStatus(
            tid=tid, role=Role.CLONE, state=State.SEARCHING, path=path, link=link,
        ))
        return tid

    async def pause(self, tid: str) -> None:
        self.calls.append(("pause", tid))
        self._resumed.discard(tid)
        self._paused.add(tid)

    async def resume(self, tid: str) -> None:
        self.calls.append(("resume", tid))
        self._paused.discard(tid)
        self._resumed.add(tid)

    async def remove(self, tid: str) -> None:
        self.calls.append(("remove", tid))
        self._removed.add(tid)

    async def files(self, tid: str, *, offset: int = 0, limit: int = 200,
                    pattern: str = "", sort: str = "path") -> FilePage:
        self.files_calls.append(
            {"tid": tid, "offset": offset, "limit": limit, "pattern": pattern, "sort": sort}
        )
        if sort not in ("path", "size", "progress"):
            raise ValueError(f"unknown sort {sort!r}")
        matching = self._matching(tid, pattern, sort)
        return FilePage(total=len(matching), files=tuple(matching[offset:offset + limit]))

    def release_checks(self, n: int = 1) -> None:
        """With `doctor_manual`: let the next `n` checks finish."""
        if self._doctor_tokens is None:
            self._doctor_tokens = asyncio.Queue()
        for _ in range(n):
            self._doctor_tokens.put_nowait(None)

    async def doctor(self) -> AsyncIterator[CheckResult]:
        self.doctor_calls += 1
        for result in self._doctor:
            if self._doctor_manual:
                if self._doctor_tokens is None:
                    self._doctor_tokens = asyncio.Queue()
                await self._doctor_tokens.get()
            else:
                await asyncio.sleep(self._doctor_delay)
            yield result

    async def logs(self, limit: int = 200) -> tuple[str, ...]:
        return self._logs[-limit:]

    async def limits(self, up: str | None = None, down: str | None = None):
        from dattui.engine.bandwidth import parse_rate
        if up is not None:
            self._limits = (parse_rate(up), getattr(self, "_limits", (None, None))[1])
        if down is not None:
            self._limits = (getattr(self, "_limits", (None, None))[0], parse_rate(down))
        return getattr(self, "_limits", (None, None))

    async def close(self) -> None:
        self.closed = True

    # ---- files ---------------------------------------------------------------------

    def _status_of(self, tid: str) -> TransferStatus | None:
        for s in self.current():
            if s.tid == tid:
                return s
        return None

    def _matching(self, tid: str, pattern: str, sort: str) -> list[FileProgress]:
        status = self._status_of(tid)
        count = self._files_count.get(tid, status.files_total if status else 0)
        done = status.files_done if status else 0
        base_key = (tid, count, done)
        key = (tid, count, done, pattern, sort)
        cached = self._file_cache.get(key)
        if cached is not None:
            return cached
        if base_key not in self._file_cache:
            self._file_cache[base_key] = make_files(count, done)
        files = self._file_cache[base_key]
        if pattern:
            p = pattern.lower()
            if any(c in p for c in "*?["):
                files = [f for f in files if fnmatch.fnmatchcase(f.path.lower(), p)
                         or fnmatch.fnmatchcase(f.path.lower(), "*" + p)]
            else:
                files = [f for f in files if p in f.path.lower()]
        if sort == "size":
            files = sorted(files, key=lambda f: (-f.size, f.path))
        elif sort == "progress":
            files = sorted(files, key=lambda f: (f.have / f.size if f.size else 1.0, f.path))
        self._file_cache[key] = files
        return files


# ---- data ---------------------------------------------------------------------------

_DIRS = ("raw", "processed", "figures", "docs", "scripts")
_EXTS = ("csv", "h5", "png", "md", "py")


def make_files(count: int, done: int) -> list[FileProgress]:
    """`count` files in path order, the first `done` complete, three partial."""
    out = []
    for i in range(count):
        d = i % len(_DIRS)
        size = 1000 + (i * 7919 * 7919) % 40_000_000
        if i < done:
            have = size
        elif i < done + 3:
            have = size * (i - done + 1) // 4
        else:
            have = 0
        out.append(FileProgress(
            path=f"{_DIRS[d]}/batch{(i // 100) % 50:02d}/sample_{i:06d}.{_EXTS[d]}",
            size=size, have=have,
        ))
    out.sort(key=lambda f: f.path)
    return out


def _tid(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def _link(seed: str) -> str:
    return "dat://" + hashlib.sha256(("link:" + seed).encode()).hexdigest()


def _wave(t: float, base: float, amplitude: float, period: float = 7.0) -> float:
    """A deterministic, rounded rate that moves with time."""
    return float(round(base + amplitude * math.sin(2 * math.pi * t / period)))


SURVEY = _tid("survey-2024")
GENOMES = _tid("genomes")
CLIMATE = _tid("climate-model-output")
NOTES = _tid("lab-notes")


def _peer(pid: str, address: str, path: PathKind, rtt: float, down: float, up: float,
          blocks_down: int, blocks_up: int, t: float) -> PeerStatus:
    return PeerStatus(
        peer_id=hashlib.sha256(pid.encode()).hexdigest()[:16], address=address, path=path,
        rtt_ms=rtt, rate_down=down, rate_up=up,
        bytes_down=blocks_down * 262144, bytes_up=blocks_up * 262144,
        blocks_down=blocks_down, blocks_up=blocks_up, connected_seconds=t,
    )


def demo_snapshot(t: float) -> Snapshot:
    """The four demo transfers at time `t` (0..20 s)."""
    lan_up = _wave(t, 48_000_000, 9_000_000)
    punched_up = _wave(t, 6_100_000, 2_000_000, 5.0)
    survey_peers = []
    if t >= 1:
        survey_peers.append(_peer("lan-peer", "192.168.1.23:3282", PathKind.LAN, 0.4, 0.0,
                                  lan_up, 0, int(180 * t), t - 1))
    if t >= 2:
        survey_peers.append(_peer("punched-peer", "198.51.100.20:40112", PathKind.PUNCHED,
                                  38.0, 0.0, punched_up, 0, int(23 * t), t - 2))
    survey = TransferStatus(
        tid=SURVEY, role=Role.SHARE, state=State.SEEDING, path="/srv/data/survey-2024",
        link=_link("survey-2024"), version=3, files_total=2481, files_done=2481,
        bytes_total=18_200_000_000, bytes_have=18_200_000_000,
        bytes_sent=int(1_000_000_000 + 54_000_000 * t),
        rate_up=sum(p.rate_up for p in survey_peers), peers=tuple(survey_peers), elapsed=t,
    )

    direct = _wave(t, 21_000_000, 6_000_000)
    relay_udp = _wave(t, 3_400_000, 900_000, 4.0)
    relay_tcp = _wave(t, 1_200_000, 400_000, 3.0)
    genome_peers = [
        _peer("direct-peer", "203.0.113.5:3282", PathKind.DIRECT, 21.0, direct, 0.0,
              int(2000 + 80 * t), 0, 30 + t),
    ]
    if t >= 3:
        genome_peers.append(_peer("relay-udp-peer", "192.0.2.10:3478", PathKind.RELAY_UDP,
                                  95.0, relay_udp, 0.0, int(13 * t), 0, t - 3))
    if t >= 5:
        genome_peers.append(_peer("relay-tcp-peer", "192.0.2.10:443", PathKind.RELAY_TCP,
                                  140.0, relay_tcp, 0.0, int(5 * t), 0, t - 5))
    total = 96_000_000_000
    have = int(total * (0.30 + 0.0075 * t))
    done = int(1234 * (0.28 + 0.0075 * t))
    genomes = TransferStatus(
        tid=GENOMES, role=Role.CLONE, state=State.TRANSFERRING, path="/home/ana/genomes",
        link=_link("genomes"), version=7, files_total=1234, files_done=done,
        bytes_total=total, bytes_have=have, bytes_received=have,
        rate_down=sum(p.rate_down for p in genome_peers), peers=tuple(genome_peers),
        active_files=(
            FileProgress("raw/batch00/sample_000123.h5", 40_000_000, 10_000_000),
        ),
        elapsed=600 + t,
    )

    climate = TransferStatus(
        tid=CLIMATE, role=Role.CLONE, state=State.PAUSED, path="/data/climate-model-output",
        link=_link("climate-model-output"), version=1, files_total=310, files_done=38,
        bytes_total=2_400_000_000_000, bytes_have=300_000_000_000,
        bytes_received=300_000_000_000, elapsed=86_400,
    )
    notes = TransferStatus(
        tid=NOTES, role=Role.SHARE, state=State.SEARCHING, path="/home/ana/lab-notes",
        link=_link("lab-notes"), version=1, files_total=42, files_done=42,
        bytes_total=3_100_000, bytes_have=3_100_000, elapsed=t,
    )
    return (survey, genomes, climate, notes)


def share_with_clones_snapshot(t: float) -> Snapshot:
    """The demo's seeding share at `t` (0..5 s) whose two clones report what
    they hold: one halfway and moving, one with the whole version."""
    survey = demo_snapshot(20.0)[0]
    half, done = survey.peers
    total = survey.bytes_total
    peers = (dataclasses.replace(half, have_bytes=int(total * min(0.45 + 0.01 * t, 0.5)),
                                 have_total=total, have_rate=25_000_000.0),
             dataclasses.replace(done, have_bytes=total, have_total=total, have_all=True))
    return (dataclasses.replace(survey, peers=peers),)


def share_with_clones_recording() -> list[Frame]:
    return [(float(t), share_with_clones_snapshot(float(t))) for t in range(6)]


def demo_recording() -> list[Frame]:
    """Twenty seconds of a seeding share, a clone in progress, a paused clone
    and a share still looking for peers."""
    frames: list[Frame] = [(float(t), demo_snapshot(float(t))) for t in range(0, 21)]
    survey_lan = _peer("lan-peer", "", PathKind.LAN, 0, 0, 0, 0, 0, 0).peer_id
    survey_punched = _peer("punched-peer", "", PathKind.LAN, 0, 0, 0, 0, 0, 0).peer_id
    relay_udp = _peer("relay-udp-peer", "", PathKind.LAN, 0, 0, 0, 0, 0, 0).peer_id
    relay_tcp = _peer("relay-tcp-peer", "", PathKind.LAN, 0, 0, 0, 0, 0, 0).peer_id
    gone = hashlib.sha256(b"gone-peer").hexdigest()[:16]
    events: list[Frame] = [
        (0.0, ev.Listening(SURVEY, ("0.0.0.0:3282", "[::]:3282"))),
        (0.1, ev.ManifestReceived(GENOMES, 7, 1234, 96_000_000_000, "genomes")),
        (0.5, ev.PeerFound(SURVEY, "192.168.1.23:3282", "lan")),
        (1.0, ev.PeerConnected(SURVEY, survey_lan, "192.168.1.23:3282", PathKind.LAN,
                               0.012, False)),
        (1.2, ev.PeerFound(SURVEY, "198.51.100.20:40112", "rendezvous")),
        (1.5, ev.Logged(SURVEY, "info",
                        "hole punch to 198.51.100.20:40112: round 1 of 6, 3 candidates")),
        (2.0, ev.PeerConnected(SURVEY, survey_punched, "198.51.100.20:40112",
                               PathKind.PUNCHED, 1.42, True)),
        (2.5, ev.PeerFound(GENOMES, "198.51.100.77:51000", "dht")),
        (2.6, ev.Logged(GENOMES, "warning",
                        "hole punch to 198.51.100.77:51000 failed after 6 rounds: no reply "
                        "(symmetric NAT on their side); trying the relay")),
        (3.0, ev.PeerConnected(GENOMES, relay_udp, "192.0.2.10:3478", PathKind.RELAY_UDP,
                               2.81, True)),
        (4.0, ev.FileCompleted(GENOMES, "raw/batch00/sample_000120.h5", 38_120_000)),
        (4.5, ev.PeerFound(GENOMES, "192.0.2.10:443", "dht")),
        (5.0, ev.PeerConnected(GENOMES, relay_tcp, "192.0.2.10:443", PathKind.RELAY_TCP,
                               3.95, True)),
        (6.0, ev.PeerFound(NOTES, "203.0.113.99:3282", "dht")),
        (9.0, ev.PeerDisconnected(NOTES, gone, "203.0.113.99:3282",
                                  "no reply to the handshake within 10 s")),
        (12.0, ev.FileCompleted(GENOMES, "raw/batch00/sample_000121.h5", 12_004_311)),
        (16.0, ev.BadBlockReceived(GENOMES, relay_tcp, "processed/batch01/sample_000131.csv", 4)),
        (18.0, ev.FileCompleted(GENOMES, "raw/batch00/sample_000122.h5", 27_893_001)),
    ]
    return sorted(frames + events, key=lambda f: f[0])


def load_snapshot(peers: int = 50, files: int = 100_000) -> Snapshot:
    """One busy clone with `peers` peers and `files` files, and the demo's others."""
    paths = list(PathKind)
    peer_list = tuple(
        _peer(f"load-peer-{i}", f"198.51.100.{i % 250 + 1}:{40000 + i}", paths[i % len(paths)],
              5.0 + i, 400_000.0 + 1000 * i, 0.0, 100 + i, i, 60.0)
        for i in range(peers)
    )
    busy = TransferStatus(
        tid=_tid("big-dataset"), role=Role.CLONE, state=State.TRANSFERRING,
        path="/scratch/big-dataset", link=_link("big-dataset"), version=2,
        files_total=files, files_done=files // 3, bytes_total=files * 20_000_000,
        bytes_have=files * 20_000_000 // 3, rate_down=sum(p.rate_down for p in peer_list),
        peers=peer_list, elapsed=60.0,
    )
    return (busy,) + demo_snapshot(20.0)


def flood(tid: str, n: int) -> list[Event]:
    """`n` events of the kinds a busy transfer sends most."""
    out: list[Event] = []
    for i in range(n):
        if i % 10 == 0:
            out.append(ev.PeerFound(tid, f"198.51.100.{i % 250 + 1}:{30000 + i % 1000}", "dht"))
        else:
            out.append(ev.FileCompleted(tid, f"raw/batch{i % 50:02d}/sample_{i:06d}.csv", 1000 + i))
    return out


def write_demo() -> Path:
    RECORDINGS.mkdir(parents=True, exist_ok=True)
    path = RECORDINGS / "demo.json"
    path.write_text(dump_recording(demo_recording()), encoding="utf-8")
    return path


# ---- the app under test ------------------------------------------------------------

FIXED_WALL = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: log stamps in tests


def dashboard(engine: FakeEngine, *, refresh_hz: float = 50.0, config: Any = None) -> Any:
    """A DattuiApp on `engine` with clocks that make its output repeatable:
    the rate graph follows the engine's virtual time, log stamps are fixed."""
    from dattui import config as config_mod
    from dattui.tui.app import DattuiApp

    cfg = config if config is not None else config_mod.defaults()
    cfg = dataclasses.replace(cfg, tui=dataclasses.replace(cfg.tui, refresh_hz=refresh_hz))
    return DattuiApp(engine, cfg, clock=lambda: engine.now, wallclock=lambda: FIXED_WALL)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        print(write_demo())
    else:
        print(__doc__)
