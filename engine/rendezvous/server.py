"""The rendezvous server's asyncio layer: UDP sockets and one TCP listener.

The primary UDP socket answers STUN Binding requests and rendezvous messages;
up to three alternate ones answer STUN only, for RFC 5780 NAT behaviour
discovery (see `server_core`): by default an alternate port (the primary
port + 1, if free) on the same address, and with `alt=(IP2, PORT2)` a second
IP address too (four sockets: IP and IP2 times PORT and PORT2). The TCP
listener carries the same rendezvous messages (and STUN) framed with a u16
length, for networks that block UDP, so a relay can join a TCP client and a
UDP client, or two TCP clients. All decisions are made by
`server_core.RendezvousServerCore`; this module only moves bytes and ticks
the clock (once a second).

A server bound to the wildcard address (0.0.0.0, ::) on a host with several
addresses answers every datagram from the address it came to, as a NAT that
filters by address (or one that maps per destination) requires: its UDP
sockets read the destination address of each datagram (IP_PKTINFO /
IPV6_RECVPKTINFO) and send to that peer from it (`PktinfoUdpSocket`).
Relayed data and punch pushes to a peer leave from the address that peer
last talked to.

TCP is bounded too: connections per IP and in all, an idle timeout (a
client's KEEPALIVE every 25 s keeps it open), and a cap on each connection's
unsent output (relayed data beyond it is dropped, as UDP would).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import collections
import random
import socket
import struct
from collections.abc import Callable

from ..transport.udp import Demux, UdpSocket, bind_udp
from . import protocol as p
from .server_core import PRIMARY, RendezvousServerCore, Send, ServerLimits, SocketKey, ip_key

__all__ = ["Server", "serve", "run_rendezvous", "DEFAULT_PORT", "AUTO"]

log = logging.getLogger("dattui.rendezvous")

Address = tuple[str, int]

DEFAULT_PORT = 3478  # the STUN port: what standard STUN clients try first
TICK = 1.0
MAX_TCP_CONNECTIONS = 1024
MAX_TCP_PER_IP = 8
TCP_IDLE = 120.0
TCP_MAX_UNSENT = 1 << 20
AUTO = "auto"  # serve(alt=AUTO): an alternate port next to the primary one, when free


# Linux values; the socket module names only some of them
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_PKTINFO_CMSG = socket.CMSG_SPACE(20)
MAX_LOCAL_ADDRESSES = 65_536   # peers whose arrival address is remembered (least recent go)


class PktinfoUdpSocket(UdpSocket):
    """A wildcard-bound UDP socket that answers from the address each peer
    talks to: every read learns the datagram's destination address (IP_PKTINFO
    or IPV6_PKTINFO ancillary data), and a send to that peer names it as the
    source (`sendmsg` with the same ancillary data). A peer not heard from yet
    gets the kernel's choice. The table is bounded (least recently heard go);
    the server's wildcard sockets share one, so an answer from the alternate
    port (RFC 5780 CHANGE-REQUEST) leaves from the address the request came to."""

    def __init__(self, sock: socket.socket, demux: Demux, loop: asyncio.AbstractEventLoop,
                 local_of: "collections.OrderedDict[Address, str] | None" = None) -> None:
        self._v6 = sock.family == socket.AF_INET6
        if self._v6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.local_of = local_of if local_of is not None else collections.OrderedDict()
        super().__init__(sock, demux, loop, offload=False)
        self.gso = False

    def _read_ready(self) -> None:
        recvmsg = self.sock.recvmsg
        dispatch = self.demux.dispatch
        local_of = self.local_of
        for _ in range(256):
            try:
                data, ancdata, _flags, addr = recvmsg(65535, _PKTINFO_CMSG)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            self.bytes_in += len(data)
            addr = addr[:2]
            local = self._destination(ancdata)
            if local is not None:
                if local_of.get(addr) != local:
                    local_of[addr] = local
                    if len(local_of) > MAX_LOCAL_ADDRESSES:
                        local_of.popitem(last=False)
                else:
                    local_of.move_to_end(addr)
            try:
                dispatch(data, addr)
            except Exception:  # a handler bug must not kill the socket
                log.exception("datagram handler failed")
        self.demux.batch_end()

    def _destination(self, ancdata) -> str | None:
        for level, kind, cdata in ancdata:
            if not self._v6 and level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(cdata) >= 12:
                return socket.inet_ntop(socket.AF_INET, cdata[8:12])      # ipi_addr: the header's
            if self._v6 and level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(cdata) >= 20:
                return socket.inet_ntop(socket.AF_INET6, cdata[:16])
        return None

    def sendto(self, data: bytes, addr: Address) -> None:
        local = self.local_of.get(addr)
        if local is None or self.closed:
            super().sendto(data, addr)
            return
        if self._v6:
            cmsg = (socket.IPPROTO_IPV6, IPV6_PKTINFO,
                    socket.inet_pton(socket.AF_INET6, local) + struct.pack("@I", 0))
        else:
            cmsg = (socket.IPPROTO_IP, IP_PKTINFO,
                    struct.pack("@i", 0) + socket.inet_aton(local) + bytes(4))
        try:
            self.bytes_out += self.sock.sendmsg([data], [cmsg], 0, addr)
        except (BlockingIOError, InterruptedError):
            self.send_errors += 1
        except OSError:
            self.send_errors += 1


class Server:
    """A running rendezvous server; `close()` stops it."""

    def __init__(self, core: RendezvousServerCore, udp: UdpSocket, loop: asyncio.AbstractEventLoop,
                 *, max_tcp: int, max_tcp_per_ip: int, tcp_idle: float) -> None:
        self.core = core
        self._udp = udp
        self._alt: dict[SocketKey, UdpSocket] = {}
        self._loop = loop
        self._tcp: asyncio.base_events.Server | None = None
        self._conns: dict[Address, asyncio.StreamWriter] = {}
        self._per_ip: dict[str, int] = {}
        self._max_tcp = max_tcp
        self._max_tcp_per_ip = max_tcp_per_ip
        self._tcp_idle = tcp_idle
        self._handlers: set[asyncio.Task] = set()
        self._ticker = loop.create_task(self._tick())
        self._closed = asyncio.Event()

    @property
    def udp_address(self) -> Address:
        return self._udp.local_address

    @property
    def udp_addresses(self) -> dict[SocketKey, Address]:
        """Every UDP socket: the primary (0, 0) and the RFC 5780 alternates."""
        out = {PRIMARY: self._udp.local_address}
        for key, sock in self._alt.items():
            out[key] = sock.local_address
        return out

    @property
    def tcp_address(self) -> Address:
        assert self._tcp is not None
        return self._tcp.sockets[0].getsockname()[:2]

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def tcp_connections(self) -> int:
        return len(self._conns)

    def close(self) -> None:
        """Stop serving: relay sides are told, sockets and connections closed."""
        if self._closed.is_set():
            return
        with contextlib.suppress(Exception):
            self._send(self.core.close(self._loop.time()))
        self._closed.set()
        self._ticker.cancel()
        self._udp.close()
        for sock in self._alt.values():
            sock.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._conns.values()):
            writer.close()
        for task in list(self._handlers):
            task.cancel()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        if self._tcp is not None:
            await self._tcp.wait_closed()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def serve_forever(self) -> None:
        await self._closed.wait()

    # -- moving bytes -----------------------------------------------------------------

    def _send(self, sends: list[Send]) -> None:
        for data, addr, transport, via in sends:
            if transport == "udp":
                sock = self._udp if via is None else self._alt.get(via)
                if sock is not None:
                    sock.sendto(data, addr)
                continue
            writer = self._conns.get(addr)
            if writer is None or writer.is_closing():
                continue
            if writer.transport.get_write_buffer_size() > TCP_MAX_UNSENT:
                continue  # a slow TCP reader loses relayed data, like a full UDP path
            writer.write(p.frame(data))

    def _on_datagram(self, data: bytes, addr: Address, via: SocketKey | None = None) -> None:
        self._send(self.core.receive(data, addr, self._loop.time(), "udp", via))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self._send(self.core.handle_timer(self._loop.time()))
            except Exception:  # a bug must not stop expiry for good
                log.exception("rendezvous timer failed")

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        if peer is None or self._closed.is_set():
            writer.close()
            return
        addr: Address = (peer[0], peer[1])
        ip = ip_key(addr[0])
        if len(self._conns) >= self._max_tcp or self._per_ip.get(ip, 0) >= self._max_tcp_per_ip:
            writer.close()
            return
        self._conns[addr] = writer
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        if task is not None:
            self._handlers.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deframer = p.Deframer()
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), self._tcp_idle)
                if not data:
                    break
                for message in deframer.feed(data):
                    self._send(self.core.receive(message, addr, self._loop.time(), "tcp"))
                await writer.drain()
        except (asyncio.TimeoutError, p.RendezvousError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.pop(addr, None)
            n = self._per_ip.get(ip, 0) - 1
            if n > 0:
                self._per_ip[ip] = n
            else:
                self._per_ip.pop(ip, None)
            if not self._closed.is_set():
                self._send(self.core.connection_lost(addr, self._loop.time()))
            writer.close()
            if task is not None:
                self._handlers.discard(task)


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def _alternates(bind_host: str, udp_port: int, alt) -> list[tuple[SocketKey, str, int]]:
    """The alternate sockets to open, in order: (key, host, port); the ports
    of (1, 0) and (1, 1) are those the primary and (0, 1) sockets got."""
    if alt is None or alt is False:
        return []
    if alt == AUTO:
        if udp_port == 0:
            return [((0, 1), bind_host, 0)]
        return [((0, 1), bind_host, udp_port + 1)] if udp_port < 65535 else []
    host2, port2 = alt
    if port2 != 0 and port2 == udp_port:
        raise ValueError("the alternate port must differ from the primary one")
    if host2 in ("", bind_host):
        return [((0, 1), bind_host, port2)]
    if _wildcard(bind_host) or _wildcard(host2):
        raise ValueError("a second IP address needs both addresses given as IPs, "
                         "not 0.0.0.0 (e.g. --bind 192.0.2.1:3478 --alt-bind 192.0.2.2:3479)")
    return [((0, 1), bind_host, port2), ((1, 0), host2, udp_port), ((1, 1), host2, port2)]


async def serve(
    bind_host: str,
    udp_port: int,
    tcp_port: int | None = None,
    *,
    alt: "tuple[str, int] | str | None" = AUTO,
    limits: ServerLimits | None = None,
    rng: random.Random | None = None,
    max_tcp_connections: int = MAX_TCP_CONNECTIONS,
    max_tcp_per_ip: int = MAX_TCP_PER_IP,
    tcp_idle: float = TCP_IDLE,
) -> Server:
    """Start a rendezvous server on `bind_host`: UDP `udp_port` (0: any free
    port) and TCP `tcp_port` (None: the same number as the UDP port).

    `alt`: the RFC 5780 alternate sockets. AUTO (default): an alternate port,
    `udp_port` + 1 (any free one for port 0), on `bind_host`, if it is free
    (else none); None: none; `(host2, port2)`: port `port2` (0: any free),
    and with another `host2` a second IP address (both given as IPs). An
    explicit alternate that cannot be bound raises OSError."""
    loop = asyncio.get_running_loop()
    plan = _alternates(bind_host, udp_port, alt)  # ValueError before anything is bound
    sock = bind_udp(bind_host, udp_port, tries=1)
    udp_addr = sock.getsockname()[:2]
    alt_socks: dict[SocketKey, "socket.socket"] = {}
    try:
        for key, host, port in plan:
            if key == (1, 0):
                port = udp_addr[1]                            # IP2 with the primary port
            elif key == (1, 1):
                port = alt_socks[(0, 1)].getsockname()[1]     # IP2 with the alternate port
            try:
                alt_socks[key] = bind_udp(host, port, tries=1, buffer=1 << 18)
            except OSError as exc:
                if alt != AUTO:
                    raise OSError(exc.errno, f"alternate address {host}:{port}: {exc.strerror}") from None
                log.warning("no alternate STUN port %s:%d (%s): NAT filtering cannot be tested "
                            "against this server", host, port, exc.strerror)
    except BaseException:
        sock.close()
        for s in alt_socks.values():
            s.close()
        raise
    known = lambda s: None if _wildcard(s.getsockname()[0]) else s.getsockname()[:2]  # noqa: E731
    core = RendezvousServerCore(rng=rng or random.SystemRandom(), limits=limits or ServerLimits(),
                                local_address=known(sock),
                                alternates={k: known(s) for k, s in alt_socks.items()})
    server_ref: list[Server] = []

    def route(via: SocketKey | None) -> Demux:
        demux = Demux()
        demux.add(lambda data: True, lambda data, addr: server_ref[0]._on_datagram(data, addr, via))
        return demux

    local_of: collections.OrderedDict[Address, str] = collections.OrderedDict()

    def wrap(s: socket.socket, via: SocketKey | None) -> UdpSocket:
        if _wildcard(s.getsockname()[0]):
            try:
                return PktinfoUdpSocket(s, route(via), loop, local_of)
            except OSError:  # no IP_PKTINFO here: the kernel picks the source
                pass
        return UdpSocket(s, route(via), loop)

    udp = wrap(sock, None)
    server = Server(core, udp, loop, max_tcp=max_tcp_connections, max_tcp_per_ip=max_tcp_per_ip,
                    tcp_idle=tcp_idle)
    server_ref.append(server)
    for key, s in alt_socks.items():
        server._alt[key] = wrap(s, key)
    try:
        server._tcp = await asyncio.start_server(
            server._on_connection, bind_host, udp_addr[1] if tcp_port is None else tcp_port,
            reuse_address=True)
    except BaseException:
        server.close()
        raise
    log.info("rendezvous listening on udp %s:%d, tcp %s:%d", *server.udp_address, *server.tcp_address)
    return server


async def run_rendezvous(host: str, port: int = DEFAULT_PORT, *,
                         tcp_port: int | None = None,
                         alt: "tuple[str, int] | str | None" = AUTO,
                         ready: Callable[[Server], None] | None = None,
                         limits: ServerLimits | None = None) -> None:
    """Run `dattui rendezvous --bind HOST:PORT` until cancelled: UDP on `port`,
    TCP on `tcp_port` (None: the same number, e.g. 443 for both), the RFC 5780
    alternates as `serve` says. `ready` is called once all are listening (to
    print the addresses)."""
    server = await serve(host, port, tcp_port, alt=alt, limits=limits)
    try:
        if ready is not None:
            ready(server)
        await server.serve_forever()
    finally:
        server.close()
        await server.wait_closed()
