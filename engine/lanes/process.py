"""The two ends of a lane's pipe: `PipeEnd` (either side) and `LaneProcess`
(the main process's handle on a lane worker it started).

Messages go out with `send`/`send_raw` (never waiting: what a side sends is
bounded by the requests the main process has out) and come in through
`on_message`, in order, from the event loop; `on_eof` once the other side is
gone. Pipes are enlarged to PIPE_BYTES so a verified block crosses in a few
system calls.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .. import wire
from ..child import child_env, module_argv
from ..errors import ProtocolError
from . import pipe

log = logging.getLogger("dattui.lanes")

PIPE_BYTES = 1 << 20
F_SETPIPE_SZ = 1031
STOP_GRACE = 2.0  # seconds a lane has to exit after its stdin closes


def enlarge(fd: int) -> None:
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # the default 64 KiB still works, in more calls


class _Reader(asyncio.Protocol):
    def __init__(self, end: "PipeEnd") -> None:
        self.end = end

    def data_received(self, data: bytes) -> None:
        self.end._received(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc) -> None:
        self.end._eof()


class PipeEnd:
    def __init__(self, on_message: Callable[[object], None],
                 on_eof: Callable[[], None] = lambda: None) -> None:
        self.on_message = on_message
        self.on_eof = on_eof
        self._decoder = pipe.decoder()
        self._out: asyncio.WriteTransport | None = None
        self._in: asyncio.ReadTransport | None = None
        self.closed = False
        self._told_eof = False

    async def connect(self, read_fd: int, write_fd: int) -> None:
        """Owns both descriptors from now on, even when this fails."""
        loop = asyncio.get_running_loop()
        rfile, wfile = os.fdopen(read_fd, "rb", 0), os.fdopen(write_fd, "wb", 0)
        try:
            self._in, _ = await loop.connect_read_pipe(lambda: _Reader(self), rfile)
            self._out, _ = await loop.connect_write_pipe(asyncio.Protocol, wfile)
        except BaseException:
            rfile.close()
            wfile.close()
            raise

    def send(self, frame) -> None:
        self.send_raw(wire.encode(frame))

    def send_raw(self, data: bytes) -> None:
        if self._out is not None and not self._out.is_closing():
            self._out.write(data)

    def send_many(self, *parts) -> None:
        if self._out is not None and not self._out.is_closing():
            self._out.writelines(parts)

    @property
    def buffered(self) -> int:
        return self._out.get_write_buffer_size() if self._out is not None else 0

    def _received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            log.warning("lane pipe: %s", exc)
            self._eof()
            return
        for frame in frames:
            if self.closed:
                return
            self.on_message(frame)

    def _eof(self) -> None:
        """Once, whichever side closed the pipe."""
        self.closed = True
        if not self._told_eof:
            self._told_eof = True
            self.on_eof()

    def close(self) -> None:
        """Nothing more is delivered; on_eof follows once the pipe is closed."""
        self.closed = True
        if self._in is None:
            self._eof()
        for t in (self._out, self._in):
            if t is not None:
                t.close()


class LaneProcess:
    """A lane worker (`python -m dattui.engine.lanes.worker`) and its pipe."""

    def __init__(self, on_message: Callable[[object], None] = lambda m: None,
                 on_exit: Callable[[], None] = lambda: None) -> None:
        self.on_message = on_message
        self.on_exit = on_exit
        self.pipe = PipeEnd(lambda m: self.on_message(m), self._pipe_gone)
        self.proc: asyncio.subprocess.Process | None = None
        self._exited = False

    async def start(self, config: dict) -> None:
        to_lane_r, to_lane_w = os.pipe()
        from_lane_r, from_lane_w = os.pipe()
        for fd in (to_lane_w, from_lane_w):
            enlarge(fd)
        env = child_env(os.environ)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *module_argv("engine.lanes.worker"), stdin=to_lane_r, stdout=from_lane_w,
                stderr=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)
        except BaseException:
            os.close(from_lane_r)
            os.close(to_lane_w)
            raise
        finally:
            os.close(to_lane_r)
            os.close(from_lane_w)
        if self.pipe.closed:  # stopped while it started
            os.close(from_lane_r)
            os.close(to_lane_w)
            self.kill()
            return
        try:
            await self.pipe.connect(from_lane_r, to_lane_w)
        except BaseException:
            self.kill()  # no lane runs on without its pipe
            raise
        self.pipe.send(pipe.LaneConfig(config))

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def send(self, frame) -> None:
        self.pipe.send(frame)

    def send_raw(self, data: bytes) -> None:
        self.pipe.send_raw(data)

    def _pipe_gone(self) -> None:
        self.kill()
        if not self._exited:
            self._exited = True
            self.on_exit()

    def kill(self) -> None:
        """At once (a clone's lane of an old version must not deliver more)."""
        self.pipe.close()
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def stop(self) -> None:
        """Close its pipe, give it STOP_GRACE seconds to say goodbye to its peer, then kill it."""
        self.pipe.close()
        if self.proc is None:
            return
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_GRACE)
        except asyncio.TimeoutError:
            self.kill()
            await self.proc.wait()
        if not self._exited:
            self._exited = True
            self.on_exit()
