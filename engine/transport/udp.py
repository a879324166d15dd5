"""The node's one UDP socket: the only code that touches it.

Reads are batched (up to BATCH datagrams per wake-up) so the layers above can
answer a burst with one round of sends; what arrives is handed to a
`Demux`, which sorts datagrams by their first bytes (RFC 7983 style) to the
protocol that owns them (QUIC now; STUN, DHT and punch probes plug in later).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Callable

Address = tuple[str, int]
Handler = Callable[[bytes, Address], None]
ManyHandler = Callable[[list[bytes], Address], None]

BATCH = 128
# Linux values; the socket module names only some of them
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
_PMTUDISC_PROBE = getattr(socket, "IP_PMTUDISC_PROBE", 3)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # GSO: one send, many datagrams
UDP_GRO = getattr(socket, "UDP_GRO", 104)  # GRO: one receive, many datagrams
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000  # one UDP datagram's worth (65,507) with room to spare
_GRO_CMSG = socket.CMSG_SPACE(4)
DEFAULT_BUFFER = 4 * 1024 * 1024
MAX_BUFFER = 64 * 1024 * 1024
BUFFER_SECONDS = 0.02  # a socket buffer holds what the path brings in this long ...
MAX_DATAGRAM = 65535


def buffer_for(rate: float) -> int:
    """Socket buffer bytes for a path moving `rate` bytes/s: what arrives (or
    leaves) while the process is busy elsewhere for BUFFER_SECONDS (a block
    written, a state commit, a collection), at least DEFAULT_BUFFER (4 MiB
    carries 200 MiB/s), at most MAX_BUFFER (a 10 Gbit/s path needs ~25 MiB)."""
    return int(min(MAX_BUFFER, max(DEFAULT_BUFFER, rate * BUFFER_SECONDS)))


# Linux's SO_*BUFFORCE (beyond net.core.rmem_max / wmem_max, for root); Python's
# socket module does not name them
_FORCE = {socket.SO_RCVBUF: getattr(socket, "SO_RCVBUFFORCE", 33),
          socket.SO_SNDBUF: getattr(socket, "SO_SNDBUFFORCE", 32)}


def set_buffers(sock: socket.socket, size: int) -> int:
    """Both socket buffers to `size` bytes (beyond the system's limit where
    allowed: as root); the receive buffer's size in effect."""
    for opt, force in _FORCE.items():
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
            if sock.getsockopt(socket.SOL_SOCKET, opt) // 2 < size and sys.platform == "linux":
                sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            pass
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports double


class Demux:
    """Routes each datagram to the first handler whose classifier accepts it.
    A route may also take runs: `many(datagrams, addr)` gets consecutive
    datagrams of one read (a GRO train, all from one address) that its
    classifier accepted, in order, instead of one call each."""

    def __init__(self) -> None:
        self._routes: list[tuple[Callable[[bytes], bool], Handler, ManyHandler | None]] = []
        self._after_batch: list[Callable[[], None]] = []
        self.dropped = 0

    def add(self, accepts: Callable[[bytes], bool], handler: Handler, *, first: bool = False,
            many: ManyHandler | None = None) -> None:
        route = (accepts, handler, many)
        if first:
            self._routes.insert(0, route)
        else:
            self._routes.append(route)

    def on_batch_end(self, fn: Callable[[], None]) -> None:
        self._after_batch.append(fn)

    def dispatch(self, data: bytes, addr: Address) -> None:
        for accepts, handler, _ in self._routes:
            if accepts(data):
                handler(data, addr)
                return
        self.dropped += 1

    def dispatch_run(self, datagrams: list[bytes], addr: Address) -> None:
        run: list[bytes] = []
        run_many = None
        for data in datagrams:
            for accepts, handler, many in self._routes:
                if accepts(data):
                    break
            else:
                self.dropped += 1
                continue
            if many is not None and many is run_many:
                run.append(data)
                continue
            if run:
                run_many(run, addr)
                run = []
            if many is None:
                run_many = None
                handler(data, addr)
            else:
                run_many, run = many, [data]
        if run:
            run_many(run, addr)

    def batch_end(self) -> None:
        for fn in self._after_batch:
            fn()


def bind_udp(host: str, port: int, *, tries: int = 64, buffer: int = DEFAULT_BUFFER) -> socket.socket:
    """Bind `port`, or the next free one (up to `tries` ports on); port 0 picks any."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last: OSError | None = None
    for p in ([0] if port == 0 else range(port, min(port + tries, 65536))):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, p))
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        set_buffers(sock, buffer)
        sock.setblocking(False)
        return sock
    raise OSError(errno.EADDRINUSE, f"UDP ports {port}-{port + tries - 1} are all in use") from last


class UdpSocket:
    """The socket, its reads batched, and - where the kernel offers them - UDP
    generic segmentation (GSO: a train of equal-size datagrams handed over in one
    `sendmsg`) and generic receive offload (GRO: several datagrams of one flow
    returned by one `recvmsg`). Both fall back to one syscall per datagram."""

    def __init__(self, sock: socket.socket, demux: Demux, loop: asyncio.AbstractEventLoop | None = None,
                 *, offload: bool = True) -> None:
        self.sock = sock
        self.demux = demux
        self._loop = loop or asyncio.get_running_loop()
        self.bytes_in = self.bytes_out = 0
        self.send_errors = 0
        self.closed = False
        self.gso = offload and sock.family in (socket.AF_INET, socket.AF_INET6)
        self.gro = False
        if offload:
            try:
                sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        self.gso_sends = self.gro_reads = 0
        self.buffer = DEFAULT_BUFFER  # asked for; grown to the fastest path by size_buffers
        self._loop.add_reader(sock.fileno(), self._read_gro if self.gro else self._read_ready)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def size_buffers(self, rate: float) -> int:
        """Grow both buffers for a path of `rate` bytes/s (never shrink: the
        kernel spends the memory only while datagrams wait); the size asked for."""
        want = buffer_for(rate)
        if want > self.buffer * 1.25 and not self.closed:
            self.buffer = want
            set_buffers(self.sock, want)
        return self.buffer

    @property
    def local_address(self) -> Address:
        return self.sock.getsockname()[:2]

    def sendto(self, data: bytes, addr: Address) -> None:
        if self.closed:
            return
        try:
            self.bytes_out += self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.send_errors += 1  # a full send buffer drops; QUIC retransmits
        except OSError:
            self.send_errors += 1  # unreachable/no route: reported by whoever waits on it

    def sendto_many(self, datagrams: list[bytes], addr: Address) -> None:
        """Send datagrams in order; runs of equal size (a shorter one may end a
        run) go out as one GSO send."""
        if not self.gso or len(datagrams) < 2:
            for d in datagrams:
                self.sendto(d, addr)
            return
        n = len(datagrams)
        i = 0
        while i < n:
            seg = len(datagrams[i])
            total = seg
            j = i + 1
            while j < n and j - i < GSO_MAX_SEGMENTS:
                size = len(datagrams[j])
                if size > seg or total + size > GSO_MAX_BYTES:
                    break
                total += size
                j += 1
                if size < seg:
                    break  # only the last segment may be shorter
            if j - i == 1:
                self.sendto(datagrams[i], addr)
            else:
                self._send_segments(datagrams[i:j], seg, addr)
            i = j

    def _send_segments(self, run: list[bytes], seg: int, addr: Address) -> None:
        if self.closed:
            return
        try:
            self.bytes_out += self.sock.sendmsg(
                [b"".join(run)], [(socket.SOL_UDP, UDP_SEGMENT, seg.to_bytes(2, sys.byteorder))], 0, addr)
            self.gso_sends += 1
        except (BlockingIOError, InterruptedError):
            self.send_errors += 1
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                self.gso = False  # this kernel or device cannot segment: one by one from now on
                for d in run:
                    self.sendto(d, addr)
            else:
                self.send_errors += 1

    def send_df(self, data: bytes, addr: Address) -> bool:
        """Send with the don't-fragment bit and without the kernel's path MTU
        cache (IP_PMTUDISC_PROBE), as path MTU probes must be. False when the
        local stack refuses the size (EMSGSIZE)."""
        if self.closed:
            return False
        v6 = self.sock.family == socket.AF_INET6
        level = socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP
        opt = _IPV6_MTU_DISCOVER if v6 else _IP_MTU_DISCOVER
        try:
            before = self.sock.getsockopt(level, opt)
            self.sock.setsockopt(level, opt, _PMTUDISC_PROBE)
        except OSError:
            return False  # no way to set DF here: do not probe
        try:
            self.bytes_out += self.sock.sendto(data, addr)
            return True
        except OSError as exc:
            return exc.errno not in (errno.EMSGSIZE,)  # other errors: the timer decides
        finally:
            self.sock.setsockopt(level, opt, before)

    def _read_ready(self) -> None:
        recv = self.sock.recvfrom
        dispatch = self.demux.dispatch
        for _ in range(BATCH):
            try:
                data, addr = recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # ICMP errors surface here on Linux; nothing to do
            self.bytes_in += len(data)
            try:
                dispatch(data, addr[:2])
            except Exception:  # a handler bug must not kill the socket
                import logging
                logging.getLogger("dattui.udp").exception("datagram handler failed")
        self.demux.batch_end()

    def _read_gro(self) -> None:
        recvmsg = self.sock.recvmsg
        dispatch = self.demux.dispatch
        dispatch_run = self.demux.dispatch_run
        for _ in range(BATCH):
            try:
                data, ancdata, _flags, addr = recvmsg(MAX_DATAGRAM, _GRO_CMSG)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            self.bytes_in += len(data)
            addr = addr[:2]
            seg = 0
            for level, kind, cdata in ancdata:
                if level == socket.SOL_UDP and kind == UDP_GRO and len(cdata) >= 2:
                    seg = int.from_bytes(cdata[:4] if len(cdata) >= 4 else cdata[:2], sys.byteorder)
            try:
                if 0 < seg < len(data):
                    self.gro_reads += 1
                    dispatch_run([data[off:off + seg] for off in range(0, len(data), seg)], addr)
                else:
                    dispatch(data, addr)
            except Exception:  # a handler bug must not kill the socket
                import logging
                logging.getLogger("dattui.udp").exception("datagram handler failed")
        self.demux.batch_end()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
