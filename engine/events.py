"""What the engine tells its front ends: immutable events with past-tense
names, and an immutable status snapshot that is replaced, never mutated.

Nothing here ever carries a secret key. A transfer is named by `tid`, the
first 16 hex characters of its discovery key (never the link).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from .names import shown


class Role(str, enum.Enum):
    SHARE = "share"
    CLONE = "clone"


class State(str, enum.Enum):
    SCANNING = "scanning"        # share: hashing the folder
    SEARCHING = "searching"      # looking for peers
    CONNECTING = "connecting"
    TRANSFERRING = "transferring"
    SEEDING = "seeding"          # share (or finished --sync clone) serving
    DONE = "done"                # clone: whole version verified on disk
    PAUSED = "paused"
    FAILED = "failed"


class PathKind(str, enum.Enum):
    """How a peer connection travels, best first."""

    LAN = "lan"
    DIRECT = "direct"
    PUNCHED = "punched"
    RELAY_UDP = "relay-udp"
    RELAY_TCP = "relay-tcp"


# ---- events -----------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    tid: str


@dataclass(frozen=True)
class ScanProgressed(Event):
    files: int
    bytes: int


@dataclass(frozen=True)
class SymlinkSkipped(Event):
    path: str


@dataclass(frozen=True)
class VersionPublished(Event):
    version: int
    files: int
    bytes: int


@dataclass(frozen=True)
class Listening(Event):
    """The node's socket is bound; `addresses` are host:port strings."""

    addresses: tuple[str, ...]


@dataclass(frozen=True)
class PeerFound(Event):
    address: str
    source: str  # "lan", "peer-arg", later "rendezvous", "dht", "pex"


@dataclass(frozen=True)
class PathAttempted(Event):
    """A step of connecting to a peer: which path is tried, won, or given up, and why."""

    address: str
    step: str    # "punch", "punched", "relay", "moved", "gave-up"
    detail: str


@dataclass(frozen=True)
class PeerConnected(Event):
    peer_id: str
    address: str
    path: PathKind
    connect_seconds: float   # from the first attempt at this peer (a punch, a dial)
    initiator: bool
    since_start: float = 0.0  # from the start of this share or clone
    # the fast paths through aioquic this connection runs (empty: aioquic's own
    # code throughout; engine/transport/aioquic_compat.py decides)
    fast_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeerDisconnected(Event):
    peer_id: str
    address: str
    reason: str


@dataclass(frozen=True)
class PeerProgressed(Event):
    """Sharing side: how much of the version a connected clone holds, as it
    reports (wire PROGRESS); at most about once a second per peer."""

    peer_id: str
    address: str
    version: int
    bytes_have: int
    bytes_total: int
    files_done: int
    files_total: int
    rate: float  # bytes/s the clone's holding grows by, from whatever peers


@dataclass(frozen=True)
class PeerCompleted(Event):
    """Sharing side: a connected clone has the whole version verified on disk."""

    peer_id: str
    address: str
    version: int
    files: int
    bytes: int


@dataclass(frozen=True)
class ManifestProgressed(Event):
    """Part of a large signed file list arrived (the first, then about every
    MANIFEST_PROGRESS_STEP bytes, then the whole)."""
    version: int
    received: int
    total: int


@dataclass(frozen=True)
class ManifestReceived(Event):
    version: int
    files: int
    bytes: int
    name: str


@dataclass(frozen=True)
class BadBlockReceived(Event):
    peer_id: str
    path: str
    block: int


@dataclass(frozen=True)
class FileCompleted(Event):
    path: str
    size: int


@dataclass(frozen=True)
class CloneCompleted(Event):
    version: int
    files: int
    bytes: int
    bytes_received: int
    seconds: float


@dataclass(frozen=True)
class TransferFailed(Event):
    message: str
    exit_code: int = 1


@dataclass(frozen=True)
class Logged(Event):
    level: str
    message: str


# ---- status snapshot --------------------------------------------------------

@dataclass(frozen=True)
class PeerStatus:
    peer_id: str
    address: str
    path: PathKind
    rtt_ms: float
    rate_down: float
    rate_up: float
    bytes_down: int
    bytes_up: int
    blocks_down: int
    blocks_up: int
    connected_seconds: float
    datagram_size: int = 1452  # bytes per datagram now (path MTU discovery raises it)
    # sharing side: what the peer (a clone) reports holding of the version;
    # have_bytes -1 when it has reported nothing (an older dattui, another version)
    have_bytes: int = -1
    have_total: int = 0
    have_rate: float = 0.0
    have_all: bool = False


@dataclass(frozen=True)
class FileProgress:
    path: str
    size: int
    have: int


@dataclass(frozen=True)
class TransferStatus:
    tid: str
    role: Role
    state: State
    path: str
    link: str  # the dat:// link: front ends show it on the machine that holds it
    version: int = 0
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_have: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    rate_down: float = 0.0
    rate_up: float = 0.0
    peers: tuple[PeerStatus, ...] = ()
    active_files: tuple[FileProgress, ...] = ()
    message: str = ""
    elapsed: float = 0.0
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def describe(ev: Event) -> str:
    """One plain-words line for logs."""
    stamp = __import__("time").strftime("%H:%M:%S")
    if isinstance(ev, PeerConnected):
        text = f"peer {ev.peer_id} connected at {ev.address} ({ev.path.value}, {ev.connect_seconds:.2f} s)"
    elif isinstance(ev, PeerDisconnected):
        text = f"peer {ev.peer_id} at {ev.address} disconnected: {ev.reason}"
    elif isinstance(ev, PeerProgressed):
        pct = 100.0 * ev.bytes_have / ev.bytes_total if ev.bytes_total else 100.0
        text = f"peer {ev.peer_id} holds {pct:.1f} % of version {ev.version}"
    elif isinstance(ev, PeerCompleted):
        text = f"collaborator {ev.peer_id} has the whole version {ev.version}"
    elif isinstance(ev, PeerFound):
        text = f"found {ev.address} through {ev.source}"
    elif isinstance(ev, PathAttempted):
        text = f"{ev.step} {ev.address}: {ev.detail}"
    elif isinstance(ev, BadBlockReceived):
        text = f"peer {ev.peer_id} sent a bad block ({shown(ev.path, 200)} #{ev.block}): disconnected"
    elif isinstance(ev, Logged):
        text = f"{ev.level}: {ev.message}"
    elif isinstance(ev, TransferFailed):
        text = f"failed: {ev.message}"
    else:
        fields = ", ".join(f"{k}={v}" for k, v in vars(ev).items() if k != "tid")
        text = f"{type(ev).__name__} {fields}"
    return f"{stamp} [{ev.tid[:8]}] {text}"
