"""`dattui share` and `dattui clone`: the engine in this process, with rich
progress on a terminal or JSON lines for scripts."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from rich.console import Console

from dattui.engine import events as ev
from dattui.engine.api import Engine, EngineOptions
from dattui.engine.errors import DattuiError
from dattui.engine.keys import link_label, parse_link

from dattui.engine.store import db_path

from . import clone_target as ct
from . import jsonout
from .progress import ProgressView, format_bytes

PROGRESS_EVERY = 1.0


def engine_options(args, cfg) -> EngineOptions:
    """The config's options with this command's flags on top."""
    return EngineOptions.from_config(
        cfg,
        port=args.port if args.port is not None else cfg.node.port,
        lan=cfg.discovery.lan and not args.no_lan,
        upload=cfg.transfer.upload and not getattr(args, "no_upload", False),
        lanes=args.lanes if getattr(args, "lanes", None) is not None else cfg.transfer.lanes,
        include_hidden=getattr(args, "include_hidden", False) or cfg.share.include_hidden,
        dht=cfg.discovery.dht and not args.no_dht,
        dht_bootstrap=tuple(args.dht_bootstrap.split(",")) if args.dht_bootstrap
        else tuple(cfg.discovery.dht_bootstrap),
        rendezvous=tuple(args.rendezvous or ()) + tuple(cfg.discovery.rendezvous),
        limit_up=args.limit_up if getattr(args, "limit_up", None) is not None else cfg.bandwidth.limit_up,
        limit_down=args.limit_down if getattr(args, "limit_down", None) is not None
        else cfg.bandwidth.limit_down)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass


def _progress_object(st: ev.TransferStatus) -> dict:
    return {"event": "progress", "state": st.state.value, "version": st.version,
            "bytes_have": st.bytes_have, "bytes_total": st.bytes_total,
            "files_done": st.files_done, "files_total": st.files_total,
            "bytes_received": st.bytes_received, "bytes_sent": st.bytes_sent,
            "rate_down": round(st.rate_down), "rate_up": round(st.rate_up),
            "peers": [_peer_object(p) for p in st.peers]}


def _peer_object(p: ev.PeerStatus) -> dict:
    d = {"peer": p.peer_id, "address": p.address, "path": p.path.value,
         "rtt_ms": round(p.rtt_ms, 2), "datagram_size": p.datagram_size}
    if p.have_bytes >= 0:  # sharing side: what the clone holds of the version
        d.update(have_bytes=p.have_bytes, have_total=p.have_total,
                 have_rate=round(p.have_rate), have_all=p.have_all)
    return d


class Frontend:
    """Shows a transfer's events and status, as JSON lines or rich progress."""

    QUIET_IN_JSON = (ev.ScanProgressed, ev.FileCompleted, ev.Listening, ev.PeerFound)

    def __init__(self, engine: Engine, json_mode: bool, role: ev.Role, refresh_hz: float) -> None:
        self.engine = engine
        self.json = json_mode
        self.queue = engine.subscribe()
        self.console = Console(stderr=False)
        self.view = None if json_mode else ProgressView(self.console, role, refresh_hz)
        self._last_progress = 0.0
        self._last_object: dict | None = None
        self.mute = False  # events are dropped, the live view stays as it is

    def __enter__(self):
        if self.view:
            self.view.__enter__()
        return self

    def __exit__(self, *exc):
        self.pump()
        if self.view:
            self.view.__exit__(*exc)

    def print_line(self, obj: dict, text: str) -> None:
        if self.json:
            jsonout.emit(obj)
        elif self.view:
            self.view.print(text)

    def pump(self, tid: str | None = None) -> None:
        while not self.queue.empty():
            e = self.queue.get_nowait()
            if self.mute:
                continue
            if self.json:
                if not isinstance(e, self.QUIET_IN_JSON):
                    jsonout.emit(jsonout.event_object(e))
            elif self.view:
                self.view.event(e)
        statuses = [s for s in self.engine.status() if tid is None or s.tid == tid]
        if not statuses or self.mute:
            return
        st = statuses[0]
        if self.view:
            self.view.update(st)
        elif time.monotonic() - self._last_progress >= PROGRESS_EVERY:
            obj = _progress_object(st)
            if obj != self._last_object:  # an idle share prints nothing
                self._last_progress = time.monotonic()
                self._last_object = obj
                jsonout.emit(obj)


async def run_share(args, cfg) -> int:
    folder = Path(args.dir or ".")
    engine = Engine(engine_options(args, cfg))
    key = engine.share_key(folder)  # fails fast on a bad folder, before any socket
    await engine.start()
    stop = asyncio.Event()
    _stop_on_signals(stop)
    try:
        with Frontend(engine, args.json, ev.Role.SHARE, cfg.tui.refresh_hz) as fe:
            fe.print_line({"event": "link", "link": key.link, "port": engine.port,
                           "path": str(folder.resolve())},
                          f"[bold]{key.link}[/bold]\nsharing {folder.resolve()} on UDP port "
                          f"{engine.port}; send the link to your collaborator. Ctrl-C stops.")
            share_task = asyncio.ensure_future(engine.share(folder))
            while not stop.is_set():
                if share_task.done() and share_task.exception():
                    raise share_task.exception()
                fe.pump()
                try:
                    await asyncio.wait_for(stop.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass
            share_task.cancel()
            fe.print_line({"event": "stopped", "path": str(folder.resolve())},
                          f"stopped sharing {folder.resolve()}; `dattui share` here serves the "
                          "same link again")
    finally:
        await engine.close()
    return 0


def _verify_first(folder: Path, json_mode: bool) -> None:
    """`clone --verify`: re-hash what is there; what is damaged is fetched again."""
    from dattui.engine.store import db_path
    from dattui.engine.verify import verify_folder
    if not db_path(folder).exists():
        return
    res = verify_folder(folder, mark=True)
    bad = [f for f in res.files if f.status not in ("ok", "incomplete")]
    if json_mode:
        jsonout.emit({"event": "verified", "ok": res.ok, "version": res.version,
                      "files": len(res.files), "mismatched": [f.path for f in bad]})
    else:
        print(f"verified {len(res.files)} files of version {res.version}: "
              + (f"{len(bad)} damaged or missing, fetching them again" if bad else "no damage found"))


def default_clone_dir(link: str) -> Path:
    """Where a clone starts without a folder: a clone of this link already in
    the current folder, else the hidden staging folder (renamed after the
    share once its manifest arrives; tui/clone_target.py)."""
    public = parse_link(link)
    return ct.existing_clone(Path("."), public) or ct.staging_dir(Path("."), public)


def _amount(have: int, total: int) -> str:
    return f"{format_bytes(have)} of {format_bytes(total)}"


async def run_clone(args, cfg) -> int:
    public = parse_link(args.link)  # a malformed link fails before anything is created
    folder = Path(args.dir) if args.dir else default_clone_dir(args.link)
    if getattr(args, "verify", False):
        _verify_first(folder, args.json)
    staging = folder if folder.name.startswith(ct.STAGING_PREFIX) else None
    folder_existed, state_existed = folder.exists(), db_path(folder).exists()
    include, exclude = getattr(args, "include", None), getattr(args, "exclude", None)
    if include is not None or exclude is not None:
        include, exclude = include or (), exclude or ()
    engine = Engine(engine_options(args, cfg))
    await engine.start()
    stop = asyncio.Event()
    _stop_on_signals(stop)
    timeout = args.timeout if args.timeout is not None else cfg.clone.find_timeout
    swarm = None
    received_before = 0  # bytes received in the staging folder, before it got its name
    try:
        with Frontend(engine, args.json, ev.Role.CLONE, cfg.tui.refresh_hz) as fe:
            tid = await engine.clone(args.link, folder, sync=args.sync, peers=args.peer or [],
                                     include=include, exclude=exclude)
            swarm = engine.transfer(tid)
            if staging is not None:
                fe.mute = True  # its connection ends when the folder gets its name
                fe.print_line({"event": "looking", "link": args.link},
                              f"looking for the share of {link_label(public)}")
            else:
                fe.print_line({"event": "cloning", "path": str(folder.absolute())},
                              f"cloning into {folder.absolute()}")
            if swarm.adopt:
                from dattui.engine.adopt import describe
                fe.print_line({"event": "adopting", "reason": swarm.adopt, "path": str(folder.absolute())},
                              describe(swarm.adopt, folder.absolute()))
            start_version = swarm.version if swarm.manifest is not None else 0
            st = swarm.status()
            if start_version and 0 < st.bytes_have < st.bytes_total:
                fe.print_line({"event": "resuming", "version": start_version,
                               "bytes_have": st.bytes_have, "bytes_total": st.bytes_total},
                              f"resuming: {_amount(st.bytes_have, st.bytes_total)} already verified")
            waiter = asyncio.ensure_future(engine.wait(tid, find_timeout=timeout))
            result = None
            while not stop.is_set():
                fe.pump(tid)
                if staging is not None and swarm.manifest is not None:
                    # the share's name is known: the folder takes it, the clone goes on there
                    waiter.cancel()
                    name = ct.safe_name(swarm.manifest.name, public)
                    received_before += swarm.bytes_received
                    await engine.stop(tid, reconnecting=True)
                    fe.pump(tid)
                    folder = ct.free_target(Path("."), name)
                    ct.move_staging(staging, folder)
                    staging, folder_existed, state_existed = None, True, True
                    tid = await engine.clone(args.link, folder, sync=args.sync,
                                             peers=args.peer or [], include=include, exclude=exclude)
                    swarm = engine.transfer(tid)
                    fe.mute = False
                    fe.print_line({"event": "cloning", "path": str(folder.absolute())},
                                  f"cloning into {folder.absolute()}")
                    waiter = asyncio.ensure_future(engine.wait(tid))
                    continue
                if waiter.done():
                    result = waiter.result()  # raises DattuiError on failure/timeout
                    if not args.sync:
                        break
                try:
                    await asyncio.wait_for(asyncio.shield(waiter) if not waiter.done() else stop.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass
                except DattuiError:
                    pass
            if result is None:
                waiter.cancel()
                fe.pump(tid)
                m = swarm.manifest
                st = swarm.status()
                have, total = (st.bytes_have, st.bytes_total) if m else (0, 0)
                fe.print_line({"event": "stopped", "path": str(folder.absolute()),
                               "bytes_have": have, "bytes_total": total},
                              f"stopped: {_amount(have, total)} verified in {folder}; "
                              "the same command continues" if m and not swarm.completed
                              else f"stopped{'' if m else ': nothing received'}")
                return 130
            fe.pump(tid)
            bytes_received = received_before + swarm.bytes_received
            up_to_date = bytes_received == 0 and result.version == start_version
            fe.print_line({"event": "done", "link": args.link, "path": str(folder.absolute()),
                           "version": result.version, "files": result.files,
                           "bytes": result.bytes, "bytes_received": bytes_received,
                           "seconds": round(result.seconds, 3), "up_to_date": up_to_date},
                          f"already up to date: version {result.version}, {result.files} files, "
                          f"{format_bytes(result.bytes)} in {folder}" if up_to_date else
                          f"done: {result.files} files, {result.bytes} bytes in {folder}")
    finally:
        await engine.close()
        if swarm is not None and swarm.manifest is None:  # it received nothing: it leaves nothing
            ct.remove_if_nothing_received(folder, folder_existed, state_existed)
    return 0
