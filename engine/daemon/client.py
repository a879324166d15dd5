"""Talking to the engine daemon over its Unix socket (implements EngineApi)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from .. import codec
from ..child import child_env, module_argv
from ..errors import DattuiError
from ..events import Event, TransferStatus
from .interface import CheckResult, FilePage
from .server import socket_path

START_TIMEOUT = 10.0


class _End:
    """The end of a pushed stream (an error dict, or None)."""

    def __init__(self, error) -> None:
        self.error = error if isinstance(error, dict) else None


class DaemonClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._streams: dict[int, asyncio.Queue] = {}   # request id -> its pushed items
        self._events: asyncio.Queue = asyncio.Queue(maxsize=10000)
        self._subscribed = False
        self._task = asyncio.ensure_future(self._read_loop())
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, state: Path) -> "DaemonClient":
        reader, writer = await asyncio.open_unix_connection(str(socket_path(state)), limit=16 << 20)
        return cls(reader, writer)

    async def _read_loop(self) -> None:
        try:
            while line := await self._reader.readline():
                msg = json.loads(line)
                if "event" in msg:
                    if self._events.full():
                        self._events.get_nowait()
                    self._events.put_nowait(codec.decode(msg["event"]))
                    continue
                stream = self._streams.get(msg.get("id"))
                if stream is not None:
                    if "check" in msg:
                        stream.put_nowait(codec.decode(msg["check"]))
                    else:
                        stream.put_nowait(_End(msg.get("error")))
                    continue
                fut = self._pending.pop(msg.get("id"), None)
                if fut is None or fut.done():
                    continue
                if "error" in msg:
                    err = msg["error"]
                    fut.set_exception(DattuiError(err.get("message", "daemon error"),
                                                  exit_code=err.get("exit_code", 1)))
                else:
                    fut.set_result(msg.get("result"))
        except (ConnectionError, ValueError):
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(DattuiError("the dattui daemon went away: run `dattui` again"))
            for stream in self._streams.values():
                stream.put_nowait(_End({"message": "the dattui daemon went away: run `dattui` again"}))
            self.closed.set()

    async def call(self, op: str, **args):
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._writer.write(json.dumps({"id": rid, "op": op, "args": args}).encode() + b"\n")
        await self._writer.drain()
        return codec.decode(await fut)

    # ---- EngineApi -------------------------------------------------------------------
    async def status(self) -> tuple[TransferStatus, ...]:
        return tuple(await self.call("status"))

    async def events(self) -> AsyncIterator[Event]:
        if not self._subscribed:
            self._subscribed = True
            await self.call("subscribe")
        while True:
            yield await self._events.get()

    async def share(self, path: str) -> str:
        return (await self.call("share", path=str(path)))["tid"]

    async def clone(self, link: str, path: str, peers: list[str] = (),
                    include: list[str] | None = None, exclude: list[str] | None = None) -> str:
        sel = {} if include is None and exclude is None else \
            {"include": list(include or ()), "exclude": list(exclude or ())}
        return (await self.call("clone", link=link, path=str(path), peers=list(peers), **sel))["tid"]

    async def pause(self, tid: str) -> None:
        await self.call("pause", tid=tid)

    async def resume(self, tid: str) -> None:
        await self.call("resume", tid=tid)

    async def remove(self, tid: str) -> None:
        await self.call("remove", tid=tid)

    async def files(self, tid: str, *, offset: int = 0, limit: int = 200, pattern: str = "",
                    sort: str = "path") -> FilePage:
        return await self.call("files", tid=tid, offset=offset, limit=limit, pattern=pattern, sort=sort)

    async def doctor(self) -> AsyncIterator[CheckResult]:
        """The daemon's checks, each as soon as it finishes (the verdict last).
        Leaving the loop early stops them in the daemon."""
        rid = next(self._ids)
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[rid] = stream
        ended = False
        try:
            self._writer.write(json.dumps({"id": rid, "op": "doctor", "args": {}}).encode() + b"\n")
            await self._writer.drain()
            while True:
                item = await stream.get()
                if isinstance(item, _End):
                    ended = True
                    if item.error:
                        raise DattuiError(item.error.get("message", "daemon error"),
                                          exit_code=item.error.get("exit_code", 1))
                    return
                yield item
        finally:
            self._streams.pop(rid, None)
            if not ended and not self._writer.is_closing():
                with contextlib.suppress(Exception):
                    self._writer.write(json.dumps({"id": next(self._ids), "op": "cancel",
                                                   "args": {"id": rid}}).encode() + b"\n")

    async def logs(self, limit: int = 200) -> tuple[str, ...]:
        return tuple(await self.call("logs", limit=limit))

    async def limits(self, up: str | None = None, down: str | None = None) -> tuple[float | None, float | None]:
        """The daemon's bandwidth limits (bytes/s, None: none); given `up`
        and/or `down` (rates as text, "" for none), set them first."""
        args = {k: v for k, v in (("up", up), ("down", down)) if v is not None}
        got = await self.call("limits", **args)
        return got["up"], got["down"]

    async def stop_daemon(self) -> None:
        await self.call("stop")

    async def close(self) -> None:
        self._writer.close()
        self._task.cancel()


def daemon_running(state: Path) -> bool:
    pid_file = state / "daemon.pid"
    if not socket_path(state).exists() or not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (ValueError, ProcessLookupError, PermissionError):
        return False


def spawn_daemon(state: Path, extra_args: list[str] = ()) -> None:
    """Start the daemon detached from this terminal: it outlives the SSH session."""
    log = open(state / "daemon.log", "ab")
    env = child_env(dict(os.environ, DATTUI_HOME=str(state)))
    subprocess.Popen([*module_argv("engine.daemon"), *extra_args], stdin=subprocess.DEVNULL,
                     stdout=log, stderr=log, start_new_session=True, env=env, close_fds=True)


async def ensure_daemon(state: Path, extra_args: list[str] = ()) -> DaemonClient:
    """Attach to the user's daemon, starting it first when none runs."""
    if not daemon_running(state):
        spawn_daemon(state, list(extra_args))
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            client = await DaemonClient.connect(state)
            await client.call("ping")
            return client
        except (ConnectionError, FileNotFoundError, OSError, DattuiError):
            if time.monotonic() > deadline:
                raise DattuiError(f"the dattui daemon did not start: see {state / 'daemon.log'}") from None
            await asyncio.sleep(0.1)
