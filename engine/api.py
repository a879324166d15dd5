"""The one door between front ends (CLI, dashboard, daemon) and the engine.

    engine = Engine(EngineOptions(...))
    await engine.start()
    tid = await engine.share(Path("data"))        # or engine.clone(link, folder)
    engine.status()      -> tuple[TransferStatus, ...]   (immutable snapshots)
    engine.subscribe()   -> asyncio.Queue of events.Event
    await engine.wait(tid)                        # a clone's completion or failure
    await engine.close()
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from . import keys, keystore
from .bandwidth import Limits, Plan, Throttle
from .selection import Selection
from .clone import CloneSwarm
from .liveness import Rules
from .discovery.static import StaticPeers, parse_hostport, resolve
from .errors import DattuiError, DiskError, NotFound, UsageError
from .folderlock import FolderLock
from .versionlog import VersionRecorder
from .node import RECONNECTING
from .daemon.interface import FilePage
from .events import (CloneCompleted, Event, Logged, ManifestReceived, State, TransferFailed,
                     TransferStatus, VersionPublished, describe)
from .manifest import DEFAULT_BLOCK_SIZE
from .node import Node
from .share import ShareSwarm
from .lanes import lanes_for
from .statedir import state_dir
from . import adopt
from .durable import sync_enabled
from .store import CloneDB, ShareDB, StateDamaged, db_path
from .transport.identity import NodeIdentity

BANDWIDTH_RECHECK = 30.0  # seconds between readings of the bandwidth schedule


@dataclass(frozen=True)
class EngineOptions:
    state: Path | None = None
    host: str = "0.0.0.0"
    port: int = 3282
    lan: bool = True
    lan_group: str = "239.255.32.82"
    lan_port: int = 3283
    block_size: int = DEFAULT_BLOCK_SIZE
    max_inflight_bytes: int = 16 * 1024 * 1024
    max_inflight_requests: int = 256
    upload: bool = True  # clones serve the files they have verified to other clones
    lanes: int = -1  # worker processes per large transfer (engine/lanes/); -1: by the cores
    max_datagram_size: int = 1452
    path_mtu_discovery: bool = True
    udp_offload: bool = True
    rescan_interval: float = 10.0
    include_hidden: bool = False
    dht: bool = False
    dht_bootstrap: tuple[str, ...] = ()
    rendezvous: tuple[str, ...] = ()
    pex: bool = True  # peers introduce each other; punches coordinated through a common peer
    limit_up: str = ""    # bandwidth limits (engine/bandwidth.py): "" none, "20MB", ...
    limit_down: str = ""
    bandwidth_schedule: tuple[str, ...] = ()
    stall_timeout: float = 60.0      # a clone with no progress this long says why (and gives up)
    peer_idle_timeout: float = 15.0  # a peer that stopped sending is dropped after this long

    @classmethod
    def from_config(cls, cfg, **overrides) -> "EngineOptions":
        """Options from a loaded `config.Config`; keyword arguments override."""
        base = dict(
            host=cfg.node.bind, port=cfg.node.port, lan=cfg.discovery.lan,
            path_mtu_discovery=cfg.node.path_mtu_discovery, udp_offload=cfg.node.udp_offload,
            block_size=cfg.transfer.block_size,
            max_inflight_bytes=cfg.transfer.max_inflight_bytes,
            max_inflight_requests=cfg.transfer.max_inflight_requests,
            upload=cfg.transfer.upload, lanes=cfg.transfer.lanes, include_hidden=cfg.share.include_hidden,
            dht=cfg.discovery.dht, dht_bootstrap=tuple(cfg.discovery.dht_bootstrap),
            rendezvous=tuple(cfg.discovery.rendezvous),
            limit_up=cfg.bandwidth.limit_up, limit_down=cfg.bandwidth.limit_down,
            bandwidth_schedule=tuple(cfg.bandwidth.schedule),
            stall_timeout=cfg.clone.stall_timeout, peer_idle_timeout=cfg.clone.peer_idle_timeout)
        base.update(overrides)
        return cls(**base)


class Engine:
    def __init__(self, options: EngineOptions = EngineOptions()) -> None:
        self.options = options
        self.state_dir = options.state or state_dir()
        self.node: Node | None = None
        self.swarms: dict[str, ShareSwarm | CloneSwarm] = {}
        self._queues: list[asyncio.Queue] = []
        self._static: StaticPeers | None = None
        self._lan = None
        self._locks: dict[str, FolderLock] = {}  # tid -> the folder it owns
        self._versions = VersionRecorder()  # every signed version, for `dattui log`
        self.dht = None
        self.rendezvous = None
        self.pex = None
        self._done: dict[str, asyncio.Future] = {}
        self._log: collections.deque[str] = collections.deque(maxlen=2000)
        # bandwidth: one upload and one download limit for every transfer of the engine
        self.bandwidth = Plan.parse(options.limit_up, options.limit_down, options.bandwidth_schedule)
        self.up = Throttle(None, time.monotonic())
        self.down = Throttle(None, time.monotonic())
        self._bandwidth_timer: asyncio.TimerHandle | None = None
        self._startup_warnings: list[Logged] = []

    @property
    def lane_count(self) -> int:
        if self.bandwidth != Plan():  # a limited transfer needs no more cores
            return 0
        return lanes_for(self.options.lanes)

    @property
    def lane_options(self) -> dict:
        """What a lane process needs to know of this node's settings."""
        o = self.options
        return {"host": o.host, "max_datagram_size": o.max_datagram_size,
                "path_mtu_discovery": o.path_mtu_discovery, "udp_offload": o.udp_offload}

    # ---- lifecycle -----------------------------------------------------------------
    # ---- bandwidth -----------------------------------------------------------------
    def limits(self) -> Limits:
        """The limits in force now (the schedule read at the local time)."""
        t = time.localtime()
        return self.bandwidth.limits_at(t.tm_wday, t.tm_hour * 60 + t.tm_min)

    def _apply_bandwidth(self) -> None:
        now, lim = time.monotonic(), self.limits()
        self.up.set_rate(lim.up, now)
        self.down.set_rate(lim.down, now)
        if self.bandwidth.rules and self.node is not None:  # the schedule moves on
            self._bandwidth_timer = self.node.loop.call_later(BANDWIDTH_RECHECK, self._apply_bandwidth)

    def set_limits(self, up: str, down: str) -> Limits:
        """New base limits for the running engine (its schedule stays);
        UsageError on a malformed rate."""
        self.bandwidth = Plan(Plan.parse(up, down).base, self.bandwidth.rules)
        if self._bandwidth_timer is not None:
            self._bandwidth_timer.cancel()
        self._apply_bandwidth()
        return self.limits()

    async def start(self) -> None:
        identity = NodeIdentity.load_or_create(self.state_dir)
        self.node = Node(identity, host=self.options.host, port=self.options.port,
                         emit=self._emit, max_datagram_size=self.options.max_datagram_size,
                         path_mtu_discovery=self.options.path_mtu_discovery,
                         udp_offload=self.options.udp_offload)
        try:
            await self.node.start()
        except OSError as exc:
            raise DattuiError(f"cannot open a UDP port near {self.options.port}: {exc.strerror}; "
                              "pick another with --port") from None
        self._static = StaticPeers(self.node.peer_found)
        self.node.add_source(self._static)
        if self.options.lan:
            from .discovery.lan import LanAnnouncer
            self._lan = LanAnnouncer(port=self.node.port, group=self.options.lan_group,
                                     group_port=self.options.lan_port,
                                     on_found=lambda f: self.node.peer_found(f.dkey, (f.host, f.port), "lan"))
            try:
                await self._lan.start()
            except OSError as exc:  # another program holds the port without sharing it
                self._lan = None
                self._warn_at_start(Logged("", "warning", f"no LAN discovery: UDP port {self.options.lan_port} "
                                  f"cannot be opened ({exc.strerror}); peers on this network are "
                                  "found through other means, or give one with --peer HOST:PORT"))
            else:
                self.node.add_source(_LanSource(self._lan))
        if self.options.dht:
            self._start_dht()
        if self.options.rendezvous:
            from .traversal.rendezvous import RendezvousSource
            servers = [resolve(*parse_hostport(r, 3478)) for r in self.options.rendezvous]
            self.rendezvous = RendezvousSource(self.node, servers, emit=self._emit)
            await self.rendezvous.start()
            self.node.add_source(self.rendezvous)
        if self.options.pex:  # after the rendezvous source: it wraps the path labels
            from .traversal.pex import PexService
            self.pex = PexService(self.node, emit=self._emit)
            self.pex.start()
        self._apply_bandwidth()

    def _start_dht(self) -> None:
        import sqlite3
        from .dht import persist
        from .dht.service import DhtService
        id_file = self.state_dir / "dht.id"
        node_id = bytes.fromhex(id_file.read_text().strip()) if id_file.exists() else b""
        if len(node_id) != 20:
            node_id = os.urandom(20)
            id_file.write_text(node_id.hex())
        boot = [parse_hostport(b, 6881) for b in self.options.dht_bootstrap]
        node = self.node
        self.dht = DhtService(node.socket.sendto, node_id, bootstrap=boot, loop=node.loop,
                              on_peers=lambda dkey, peers: [node.peer_found(dkey, tuple(a), "dht")
                                                            for a in peers])
        node.demux.add(self.dht.accepts, self.dht.datagram, first=True)
        self._dht_db = sqlite3.connect(self.state_dir / "dht.db", isolation_level=None)
        self.dht.start()
        try:
            self.dht.import_(persist.load_nodes(self._dht_db))
        except sqlite3.Error:
            pass
        node.add_source(_DhtSource(self.dht, node))

    async def close(self) -> None:
        if self._bandwidth_timer is not None:
            self._bandwidth_timer.cancel()
        for swarm in list(self.swarms.values()):
            await self._close_swarm(swarm)
        if self.dht is not None:
            import sqlite3
            from .dht import persist
            try:
                persist.save_nodes(self._dht_db, self.dht.export())
                self._dht_db.close()
            except sqlite3.Error:
                pass
        if self.pex is not None:
            self.pex.close()
        if self.node:
            await self.node.close()

    @property
    def port(self) -> int:
        return self.node.port if self.node else 0

    # ---- events and status -----------------------------------------------------------
    def subscribe(self) -> asyncio.Queue:
        """A queue of every event from now on, after the warnings the engine
        gave while it started (before anyone could listen)."""
        q: asyncio.Queue = asyncio.Queue(maxsize=10000)
        for ev in self._startup_warnings:
            q.put_nowait(ev)
        self._queues.append(q)
        return q

    def _warn_at_start(self, ev: Logged) -> None:
        self._startup_warnings.append(ev)
        self._emit(ev)

    def _emit(self, ev: Event) -> None:
        if isinstance(ev, (VersionPublished, ManifestReceived)) and ev.tid in self.swarms:
            self._versions.seen(self.swarms[ev.tid])
        self._log.append(describe(ev))
        for q in self._queues:
            if q.full():
                try:
                    q.get_nowait()  # a stalled front end loses the oldest events, not memory
                except asyncio.QueueEmpty:
                    pass
            q.put_nowait(ev)
        fut = self._done.get(ev.tid)
        if fut is not None and not fut.done():
            if isinstance(ev, CloneCompleted):
                fut.set_result(ev)
            elif isinstance(ev, TransferFailed):
                swarm = self.swarms.get(ev.tid)
                exc = getattr(swarm, "failed", None)
                fut.set_exception(exc or DattuiError(ev.message, exit_code=ev.exit_code))

    def status(self) -> tuple[TransferStatus, ...]:
        return tuple(s.status() for s in self.swarms.values())

    def transfer(self, tid: str) -> ShareSwarm | CloneSwarm:
        return self.swarms[tid]

    # ---- shares ----------------------------------------------------------------------
    def share_key(self, folder: Path) -> keys.ShareKey:
        """The key a folder is shared with: the recorded one, or a new one."""
        folder = folder.resolve()
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder: give the folder to share")
        db = ShareDB(folder)
        try:
            if db.get("role") == "clone":
                raise UsageError(f"{folder} is a clone; keep it serving with "
                                 "`dattui clone LINK DIR --sync`")
            public = db.get("public_key")
            if public is None:
                key = keys.ShareKey.generate()
                keystore.save(key, self.state_dir)
                keystore.remember_folder(key, folder, self.state_dir)
                db.set("public_key", key.public)
                db.set("role", "share")
                return key
            key = keystore.load(public, self.state_dir)
            if key is None:
                raise UsageError(
                    f"{folder} is shared as {keys.format_link(public)} but its secret key is not "
                    "on this machine: import it with `dattui keys import FILE`")
            keystore.remember_folder(key, folder, self.state_dir)
            return key
        finally:
            db.close()

    async def share(self, folder: Path, *, include_hidden: bool | None = None) -> str:
        folder = folder.resolve()
        key = self.share_key(folder)
        tid = key.discovery_key.hex()[:16]
        if tid in self.swarms:
            return tid
        lock = FolderLock.acquire(folder)
        try:
            db = ShareDB(folder)
        except BaseException:
            lock.release()
            raise
        self._locks[tid] = lock
        swarm = ShareSwarm(folder, key, db, self._emit,
                           block_size=self.options.block_size,
                           include_hidden=self.options.include_hidden if include_hidden is None else include_hidden,
                           rescan_interval=self.options.rescan_interval,
                           lanes=self.lane_count, lane_options=self.lane_options)
        swarm.pex = self.pex
        swarm.server.throttle = self.up
        self.swarms[tid] = swarm
        try:
            await swarm.publish()
        except BaseException:
            self.swarms.pop(tid, None)
            await swarm.close()
            self._release(tid)
            raise
        self.node.add_swarm(swarm)
        swarm.start_rescans()
        return tid

    # ---- clones ----------------------------------------------------------------------
    async def clone(self, link: str, folder: Path, *, sync: bool = False,
                    peers: list[str] = (), include: tuple[str, ...] | None = None,
                    exclude: tuple[str, ...] | None = None) -> str:
        """Start a clone; `include`/`exclude` (gitignore-style globs) select the
        files to fetch; both None: the selection this clone was made with."""
        selection = None if include is None and exclude is None \
            else Selection(tuple(include or ()), tuple(exclude or ()))
        public = keys.parse_link(link)
        addrs = [resolve(*parse_hostport(p)) for p in peers]
        folder = folder.absolute()
        self._prepare_clone_folder(folder, public)
        lock = FolderLock.acquire(folder)
        try:
            db, adopt_reason = adopt.open_state(folder)
        except BaseException:
            lock.release()
            raise
        db.set("public_key", public)
        db.set("role", "clone")
        swarm = CloneSwarm(public, folder, db, self._emit, sync=sync,
                           max_inflight_bytes=self.options.max_inflight_bytes,
                           max_inflight_requests=self.options.max_inflight_requests,
                           upload=self.options.upload,
                           lanes=self.lane_count, lane_options=self.lane_options,
                           selection=selection, durable=sync_enabled(), adopt=adopt_reason,
                           rules=Rules(self.options.stall_timeout, self.options.peer_idle_timeout))
        swarm.pex = self.pex
        swarm.server.throttle = self.up
        swarm.down = self.down
        swarm.given_peers = list(zip(peers, addrs))
        self.swarms[swarm.tid] = swarm
        self._locks[swarm.tid] = lock
        self._versions.known(swarm.tid, swarm.manifest)
        self._done[swarm.tid] = self.node.loop.create_future()
        self.node.add_swarm(swarm)
        for addr in addrs:
            self._static.add(swarm.dkey, addr)
        return swarm.tid

    async def list_files(self, link: str, *, peers: list[str] = (), timeout: float = 60.0):
        """The newest signed manifest a peer of `link` gives within `timeout`
        seconds, without fetching data or writing anything. NotFound when no
        peer answers; UnsafeManifest when the signed manifest is unsafe."""
        from .manifest_probe import ManifestProbe
        public = keys.parse_link(link)
        addrs = [resolve(*parse_hostport(p)) for p in peers]
        probe = ManifestProbe(public, self._emit)
        self.node.add_swarm(probe)
        for addr in addrs:
            self._static.add(probe.dkey, addr)
        try:
            return await asyncio.wait_for(asyncio.shield(probe.result), timeout)
        except asyncio.TimeoutError:
            raise NotFound(f"no peer sharing {link[:14]}…{link[-8:]} answered within {timeout:g} s: "
                           "check the link, or give the share's address with --peer HOST:PORT") from None
        finally:
            self.node.remove_swarm(probe)
            await probe.close()

    def _prepare_clone_folder(self, folder: Path, public: bytes) -> None:
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder} exists and is not a folder: choose another target")
        if folder.exists():
            recorded = None
            role = None
            if db_path(folder).exists():
                try:  # a damaged database is set aside by adopt.open_state
                    db = CloneDB(folder, create=False)
                    try:
                        recorded = db.get("public_key")
                        role = db.get("role")
                    finally:
                        db.close()
                except (StateDamaged, sqlite3.DatabaseError):
                    pass
                if role == "share":
                    raise UsageError(f"{folder} is a shared folder, not a clone: choose another target")
                if recorded is not None and recorded != public:
                    raise UsageError(f"{folder} is a clone of another link, "
                                     f"{keys.format_link(recorded)}: choose another target")
            # a folder with files but no state: checked against the manifest (engine/adopt.py)
        else:
            try:
                folder.mkdir(parents=True)
                fd = os.open(folder.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:  # the new folder's entry is durable before anything in it is
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise DiskError(f"cannot create {folder}: {exc.strerror}; choose a folder you can "
                                "write to") from None
        if not os.access(folder, os.W_OK):
            raise DiskError(f"{folder} is not writable: choose a folder you can write to")

    async def wait(self, tid: str, *, find_timeout: float | None = None) -> CloneCompleted:
        """Until a clone has the whole version on disk. NotFound when no peer
        answers within `find_timeout` seconds of the start."""
        swarm = self.swarms[tid]
        fut = self._done[tid]
        if swarm.completed and not fut.done():
            m = swarm.manifest
            fut.set_result(CloneCompleted(tid, m.version, len(m.files), m.total_bytes, 0, 0.0))
        if find_timeout is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._first_contact(swarm)), find_timeout)
            except asyncio.TimeoutError:
                if not fut.done():
                    raise NotFound(self._not_found(swarm, find_timeout)) from None
        return await fut

    def _not_found(self, swarm, timeout: float) -> str:
        """Why no peer authenticated: what was given with --peer, first."""
        given = getattr(swarm, "given_peers", ())
        silent = [text for text, addr in given if addr not in self.node.answered]
        if given and len(silent) == len(given):
            return (f"nothing answered at {', '.join(silent)} within {timeout:g} s: check the "
                    "address, that `dattui share` runs there and that its UDP port is open "
                    "(`dattui doctor` tells what blocks it)")
        if given:
            answered = [text for text, addr in given if addr in self.node.answered]
            return (f"{', '.join(answered)} answered but does not share "
                    f"{keys.link_label(swarm.public_key)} (nothing else did within {timeout:g} s): "
                    "check the link and the address")
        return (f"no peer sharing {keys.link_label(swarm.public_key)} answered within {timeout:g} s: "
                "check the link, that `dattui share` is running on the other side, and run "
                "`dattui doctor`")

    async def _first_contact(self, swarm) -> None:
        while not swarm.contacted and not self._done[swarm.tid].done():
            await asyncio.sleep(0.1)

    # ---- pause, files, logs -------------------------------------------------------
    def pause(self, tid: str) -> None:
        """Disconnect every peer and stop announcing; state and files stay."""
        swarm = self.swarms[tid]
        if swarm.state == State.PAUSED:
            return
        swarm.resume_state = swarm.state
        self._static.pause(swarm.dkey)  # before remove_swarm, which forgets static peers
        reason = f"{swarm.role.value} paused"
        self.node.remove_swarm(swarm, reason)
        for p in list(swarm.peers):
            p.close(0, reason)
        swarm.state = State.PAUSED
        swarm.paused()
        self.node.endpoint.flush()
        self._emit(Logged(tid, "info", "paused"))

    def resume(self, tid: str) -> None:
        swarm = self.swarms[tid]
        if swarm.state != State.PAUSED:
            return
        swarm.state = getattr(swarm, "resume_state", State.SEARCHING)
        self.node.add_swarm(swarm)
        self._static.unpause(swarm.dkey)
        self._emit(Logged(tid, "info", "resumed"))

    def files(self, tid: str, *, offset: int = 0, limit: int = 200, pattern: str = "",
              sort: str = "path") -> FilePage:
        """One page of a transfer's files, filtered and sorted (for 100,000-file folders)."""
        rows = self.swarms[tid].file_progress()
        if pattern:
            if any(c in pattern for c in "*?["):
                rows = [r for r in rows if fnmatch.fnmatch(r.path, pattern)]
            else:
                low = pattern.lower()
                rows = [r for r in rows if low in r.path.lower()]
        if sort == "size":
            rows.sort(key=lambda r: (-r.size, r.path))
        elif sort == "progress":
            rows.sort(key=lambda r: (r.have / r.size if r.size else 1.0, r.path))
        offset = max(0, offset)
        return FilePage(len(rows), tuple(rows[offset:offset + max(0, min(limit, 5000))]))

    def logs(self, limit: int = 200) -> tuple[str, ...]:
        return tuple(self._log)[-limit:]

    def add_peer(self, tid: str, hostport: str) -> None:
        swarm = self.swarms[tid]
        self._static.add(swarm.dkey, resolve(*parse_hostport(hostport)))

    async def stop(self, tid: str, *, reconnecting: bool = False) -> None:
        """Stop a share or clone. `reconnecting`: it starts again at once (a
        clone moving to its folder), which its peers are told, so that they
        say nothing of the connection that ends."""
        swarm = self.swarms.get(tid)
        if swarm is not None:
            if reconnecting:
                for p in list(swarm.peers):
                    p.close(0, RECONNECTING)
            await self._close_swarm(swarm)

    async def _close_swarm(self, swarm) -> None:
        self.swarms.pop(swarm.tid, None)
        if self.node:
            self.node.remove_swarm(swarm)
        if self._static:
            self._static.remove(swarm.dkey)
            self._static.forget_paused(swarm.dkey)
        await swarm.close()
        self._release(swarm.tid)
        self._versions.forget(swarm.tid)
        if self.node and self.node.endpoint:
            self.node.endpoint.flush()

    def _release(self, tid: str) -> None:
        lock = self._locks.pop(tid, None)
        if lock is not None:
            lock.release()


class _LanSource:
    """Adapts the LAN announcer to the node's discovery-source interface."""

    def __init__(self, lan) -> None:
        self.lan = lan

    def announce(self, dkey: bytes) -> None:
        self.lan.add(dkey)

    def remove(self, dkey: bytes) -> None:
        self.lan.remove(dkey)

    def close(self) -> None:
        self.lan.close()


class _DhtSource:
    """Announces every active key on the DHT and looks it up: shares and clones
    alike, so both sides find each other and both can punch."""

    name = "dht"

    def __init__(self, dht, node) -> None:
        self.dht = dht
        self.node = node

    def announce(self, dkey: bytes) -> None:
        self.dht.announce(dkey, self.node.port)
        self.dht.lookup(dkey)

    def remove(self, dkey: bytes) -> None:
        self.dht.remove(dkey)

    def close(self) -> None:
        self.dht.close()
