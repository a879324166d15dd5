"""The engine daemon: one per user, holding every share and clone.

It listens on a Unix socket in the state directory (the directory is 0700 and
the socket 0600: only this user can reach it). The protocol is one JSON object
per line. A request is {"id": N, "op": NAME, "args": {...}}; the answer is
{"id": N, "result": ...} or {"id": N, "error": {"message": ..., "exit_code": ...}}.
The op "subscribe" makes the daemon push {"event": {...}} lines from then on.
The op "doctor" is a stream: each check is pushed as {"id": N, "check": {...}}
the moment it finishes, then {"id": N, "result": {"checks": COUNT}} ends it;
it runs beside the connection's other requests, and {"op": "cancel",
"args": {"id": N}}, a new "doctor" request or the connection closing stops it.
Transfers are recorded in SQLite (daemon.db) and resume when the daemon starts
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
from pathlib import Path

from .. import codec
from ..api import Engine, EngineOptions
from ..errors import DattuiError, UsageError
from ..events import Role

SOCKET_NAME = "daemon.sock"
MAX_REQUEST = 64 * 1024


def socket_path(state: Path) -> Path:
    return state / SOCKET_NAME


class Registry:
    """Which transfers the daemon holds, so a restart brings them back."""

    def __init__(self, state: Path) -> None:
        self.conn = sqlite3.connect(state / "daemon.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("""CREATE TABLE IF NOT EXISTS transfers (
            tid TEXT PRIMARY KEY, role TEXT, path TEXT, link TEXT, paused INTEGER DEFAULT 0,
            peers TEXT DEFAULT '')""")

    def all(self) -> list[tuple[str, str, str, str, int, str]]:
        return self.conn.execute("SELECT tid, role, path, link, paused, peers FROM transfers").fetchall()

    def put(self, tid: str, role: str, path: str, link: str, peers: list[str]) -> None:
        self.conn.execute("INSERT OR REPLACE INTO transfers VALUES (?, ?, ?, ?, 0, ?)",
                          (tid, role, path, link, ",".join(peers)))

    def paused(self, tid: str, paused: bool) -> None:
        self.conn.execute("UPDATE transfers SET paused=? WHERE tid=?", (int(paused), tid))

    def remove(self, tid: str) -> None:
        self.conn.execute("DELETE FROM transfers WHERE tid=?", (tid,))


class Daemon:
    def __init__(self, options: EngineOptions) -> None:
        self.engine = Engine(options)
        self.state = self.engine.state_dir
        self.registry = Registry(self.state)
        self.stopped = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        await self.engine.start()
        path = socket_path(self.state)
        if path.exists():
            path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(path),
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        (self.state / "daemon.pid").write_text(str(os.getpid()))
        for tid, role, folder, link, paused, peers in self.registry.all():
            try:
                if role == Role.SHARE.value:
                    tid = await self.engine.share(Path(folder))
                else:
                    tid = await self.engine.clone(link, Path(folder), sync=True,
                                                  peers=[p for p in peers.split(",") if p])
                if paused:
                    self.engine.pause(tid)
            except DattuiError as exc:
                self.engine._log.append(f"could not restore {folder}: {exc}")

    async def run(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopped.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # survive the SSH session
        await self.stopped.wait()
        await self.close()

    async def close(self) -> None:
        if self._server:
            self._server.close()
        for w in list(self._clients):
            w.close()
        await self.engine.close()
        for name in (SOCKET_NAME, "daemon.pid"):
            try:
                (self.state / name).unlink()
            except FileNotFoundError:
                pass

    # ---- one control connection ------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        pusher: asyncio.Task | None = None
        streams: dict[object, asyncio.Task] = {}
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    break  # a request over 64 KiB: hang up
                if not line:
                    break
                try:
                    req = json.loads(line)
                    rid, op, args = req.get("id"), req["op"], req.get("args") or {}
                    if not isinstance(args, dict) or not isinstance(op, str):
                        raise ValueError
                except (ValueError, KeyError, TypeError, AttributeError):
                    await self._send(writer, {"id": None, "error": {"message": "malformed request",
                                                                    "exit_code": 2}})
                    continue
                if op == "subscribe":
                    if pusher is None:
                        pusher = asyncio.ensure_future(self._push(writer))
                    await self._send(writer, {"id": rid, "result": True})
                    continue
                if op == "doctor":
                    for task in streams.values():  # a new run replaces one still going
                        task.cancel()
                    streams.clear()
                    streams[rid] = asyncio.ensure_future(self._doctor_stream(writer, rid))
                    continue
                if op == "cancel":
                    task = streams.get(args.get("id"))
                    if task is not None and not task.done():
                        task.cancel()
                    await self._send(writer, {"id": rid, "result": task is not None})
                    continue
                try:
                    result = await self._dispatch(op, args)
                    await self._send(writer, {"id": rid, "result": codec.encode(result)})
                except DattuiError as exc:
                    await self._send(writer, {"id": rid, "error": {"message": str(exc),
                                                                  "exit_code": exc.exit_code}})
                except (KeyError, TypeError, ValueError) as exc:
                    await self._send(writer, {"id": rid, "error": {"message": f"bad request: {exc}",
                                                                  "exit_code": 2}})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if pusher:
                pusher.cancel()
            for task in streams.values():
                task.cancel()
            self._clients.discard(writer)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, obj: dict) -> None:
        writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        await writer.drain()

    async def _doctor_stream(self, writer: asyncio.StreamWriter, rid) -> None:
        """Each check to the client as it finishes, then the end of the stream."""
        from ..doctor import DoctorOptions, run_checks
        e = self.engine
        count = 0
        try:
            opts = DoctorOptions.from_engine_options(e.options, node_port=e.port)
            async for result in run_checks(opts):
                count += 1
                await self._send(writer, {"id": rid, "check": codec.encode(result)})
            await self._send(writer, {"id": rid, "result": {"checks": count}})
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._send(writer, {"id": rid, "error": {"message": "the checks were stopped",
                                                               "exit_code": 1}})
            raise
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        except Exception as exc:  # a bug in a check must not take the connection down
            with contextlib.suppress(Exception):
                await self._send(writer, {"id": rid, "error": {"message": f"the checks failed: {exc!r}",
                                                               "exit_code": 1}})

    async def _push(self, writer: asyncio.StreamWriter) -> None:
        q = self.engine.subscribe()
        try:
            while True:
                ev = await q.get()
                await self._send(writer, {"event": codec.encode(ev)})
        finally:
            self.engine._queues.remove(q)

    async def _dispatch(self, op: str, a: dict):
        e = self.engine
        if op == "status":
            return list(e.status())
        if op == "share":
            tid = await e.share(Path(a["path"]))
            self.registry.put(tid, Role.SHARE.value, str(Path(a["path"]).resolve()),
                              e.transfer(tid).link, [])
            return {"tid": tid, "link": e.transfer(tid).link}
        if op == "clone":
            peers = list(a.get("peers") or [])
            sel = {k: tuple(map(str, a[k])) for k in ("include", "exclude") if k in a}
            tid = await e.clone(a["link"], Path(a["path"]), sync=True, peers=peers, **sel)
            self.registry.put(tid, Role.CLONE.value, str(Path(a["path"]).absolute()), a["link"], peers)
            return {"tid": tid}
        if op in ("pause", "resume", "remove"):
            tid = a["tid"]
            if tid not in e.swarms:
                raise UsageError(f"no transfer {tid!r} in the daemon: see `dattui list`")
            if op == "pause":
                e.pause(tid)
                self.registry.paused(tid, True)
            elif op == "resume":
                e.resume(tid)
                self.registry.paused(tid, False)
            else:
                await e.stop(tid)
                self.registry.remove(tid)
            return True
        if op == "files":
            return e.files(a["tid"], offset=int(a.get("offset", 0)), limit=int(a.get("limit", 200)),
                           pattern=str(a.get("pattern", "")), sort=str(a.get("sort", "path")))
        if op == "logs":
            return list(e.logs(int(a.get("limit", 200))))
        if op == "limits":  # get, or set with "up" and "down" (rates as text)
            if "up" in a or "down" in a:
                now = e.limits()
                e.set_limits(str(a.get("up", _text(now.up))), str(a.get("down", _text(now.down))))
            lim = e.limits()
            return {"up": lim.up, "down": lim.down}
        if op == "ping":
            return {"pid": os.getpid(), "port": e.port}
        if op == "stop":
            asyncio.get_running_loop().call_later(0.05, self.stopped.set)
            return True
        raise UsageError(f"unknown operation {op!r}")


def _text(rate: float | None) -> str:
    return "" if rate is None else str(int(rate))


def main(argv: list[str] | None = None) -> None:
    """`python -m dattui.engine.daemon`: run in the foreground (dattui starts it detached)."""
    import argparse
    import logging

    from dattui import config as config_mod
    parser = argparse.ArgumentParser(prog="dattui-daemon")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--no-lan", action="store_true")
    parser.add_argument("--no-dht", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("quic").setLevel(logging.CRITICAL)
    cfg = config_mod.load()
    overrides = {"port": args.port} if args.port is not None else {}
    if args.no_lan:
        overrides["lan"] = False
    if args.no_dht:
        overrides["dht"] = False
    opts = EngineOptions.from_config(cfg, **overrides)
    asyncio.run(Daemon(opts).run())
