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
from dattui.engine.keys import parse_link

from . import jsonout
from .progress import ProgressView

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
        rendezvous=tuple(args.rendezvous or ()) + tuple(cfg.discovery.rendezvous))


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
            if self.json:
                if not isinstance(e, self.QUIET_IN_JSON):
                    jsonout.emit(jsonout.event_object(e))
            elif self.view:
                self.view.event(e)
        statuses = [s for s in self.engine.status() if tid is None or s.tid == tid]
        if not statuses:
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
    finally:
        await engine.close()
    return 0


def default_clone_dir(link: str) -> Path:
    return Path(parse_link(link).hex())


async def run_clone(args, cfg) -> int:
    parse_link(args.link)  # a malformed link fails before anything is created
    folder = Path(args.dir) if args.dir else default_clone_dir(args.link)
    engine = Engine(engine_options(args, cfg))
    await engine.start()
    stop = asyncio.Event()
    _stop_on_signals(stop)
    timeout = args.timeout if args.timeout is not None else cfg.clone.find_timeout
    try:
        with Frontend(engine, args.json, ev.Role.CLONE, cfg.tui.refresh_hz) as fe:
            tid = await engine.clone(args.link, folder, sync=args.sync, peers=args.peer or [])
            fe.print_line({"event": "cloning", "path": str(folder.absolute())},
                          f"cloning into {folder.absolute()}")
            waiter = asyncio.ensure_future(engine.wait(tid, find_timeout=timeout))
            result = None
            while not stop.is_set():
                fe.pump(tid)
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
                return 130
            swarm = engine.transfer(tid)
            fe.pump(tid)
            fe.print_line({"event": "done", "link": args.link, "path": str(folder.absolute()),
                           "version": result.version, "files": result.files,
                           "bytes": result.bytes, "bytes_received": swarm.bytes_received,
                           "seconds": round(result.seconds, 3)},
                          f"done: {result.files} files, {result.bytes} bytes in {folder}")
    finally:
        await engine.close()
    return 0
