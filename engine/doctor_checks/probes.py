"""Network probes for `dattui doctor`, each bounded by its own timeout.

Nothing here blocks the event loop or the process exit: sockets are
non-blocking, name lookups run in daemon threads (a resolver that hangs on a
network without DNS is abandoned, not waited for), and every wait has a
deadline. Errors never escape as exceptions: each probe returns what it saw,
with a short reason when it saw nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import stun
from ..rendezvous import protocol as rp
from ..rendezvous.client_core import (Registered, RelayBound, RelayDataReceived,
                                      RelayOffered, RendezvousClient, RequestFailed)

Address = tuple[str, int]

__all__ = [
    "Address",
    "UdpProbe",
    "StunAnswer",
    "stun_binding",
    "hairpin",
    "resolve",
    "RelayFacts",
    "relay_check",
    "DhtFacts",
    "dht_check",
    "describe_oserror",
]


def describe_oserror(exc: BaseException) -> str:
    """A few plain words for a socket error."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "no answer"
    if isinstance(exc, OSError):
        words = {
            errno.ENETUNREACH: "no route to the network",
            errno.EHOSTUNREACH: "no route to the host",
            errno.ECONNREFUSED: "connection refused",
            errno.EPERM: "blocked by a firewall on this machine",
            errno.EACCES: "blocked by a firewall on this machine",
            errno.EADDRNOTAVAIL: "no usable local address",
            errno.ECONNRESET: "connection reset",
        }.get(exc.errno or 0)
        if words:
            return words
        if exc.strerror:
            return exc.strerror.lower()
    return str(exc) or type(exc).__name__


_NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)


# -- a UDP socket of our own ------------------------------------------------------------

class UdpProbe:
    """A non-blocking IPv4 UDP socket whose datagrams go to every handler in
    turn (a handler returns True when the datagram was its own)."""

    def __init__(self, host: str = "0.0.0.0", port: int = 0,
                 loop: asyncio.AbstractEventLoop | None = None,
                 sock: socket.socket | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        self.sock = sock
        self.handlers: list[Callable[[bytes, Address], bool]] = []
        self.sent_to: set[Address] = set()
        self.closed = False
        self.loop.add_reader(sock.fileno(), self._read)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def sendto(self, data: bytes, addr: Address) -> OSError | None:
        """Send; returns the error instead of raising it."""
        if self.closed:
            return OSError(errno.EBADF, "closed")
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError) as exc:
            return exc
        except OSError as exc:
            return exc
        self.sent_to.add((addr[0], addr[1]))
        return None

    def _read(self) -> None:
        for _ in range(64):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error for an earlier send: the waiter times out
            for h in list(self.handlers):
                try:
                    if h(data, addr[:2]):
                        break
                except Exception:  # a probe's bug must not stop the others
                    continue

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


# -- name resolution that never holds the process ---------------------------------------

async def resolve(host: str, port: int, timeout: float = 2.0) -> Address:
    """The first IPv4 address of `host`. Runs getaddrinfo in a daemon thread:
    on a network without DNS the lookup may hang for long, and a thread pool
    worker would hold up the exit. Raises OSError (or TimeoutError)."""
    try:
        socket.inet_aton(host)
        if host.count(".") == 3:
            return host, port
    except OSError:
        pass
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def work() -> None:
        try:
            info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
            res: object = (info[0][4][0], info[0][4][1])
        except Exception as exc:  # noqa: BLE001 - handed to the waiter
            res = exc
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, fut, res)

    threading.Thread(target=work, name=f"resolve {host}", daemon=True).start()
    res = await asyncio.wait_for(fut, timeout)
    return res


def _settle(fut: asyncio.Future, res: object) -> None:
    if fut.done():
        return
    if isinstance(res, BaseException):
        fut.set_exception(res)
    else:
        fut.set_result(res)


# -- STUN ---------------------------------------------------------------------------------

@dataclass
class StunAnswer:
    """What one Binding request got back."""

    server: Address
    mapped: Address | None = None     # our address as the server saw it
    source: Address | None = None     # where the answer came from
    rtt_ms: float | None = None
    other: Address | None = None      # RFC 5780 OTHER-ADDRESS, if the server has one
    code: int | None = None           # a STUN error response's code (420: CHANGE-REQUEST refused)
    error: str = ""                   # why there is no answer
    no_route: bool = False            # sending failed at once: no route out

    @property
    def ok(self) -> bool:
        return self.mapped is not None


async def stun_binding(probe: UdpProbe, server: Address, *, timeout: float = 2.0,
                       retransmit: float = 0.5, tries: int = 3, change_ip: bool = False,
                       change_port: bool = False) -> StunAnswer:
    """One Binding request to `server` from `probe`, sent up to `tries` times
    `retransmit` s apart, answered within `timeout` s or not at all. With a
    CHANGE-REQUEST flag the answer may come from another address: it is
    matched by transaction id only."""
    loop = probe.loop
    tid = stun.new_transaction_id()
    req = stun.binding_request(tid, pad_to=stun.RESPONSE_PAD, change_ip=change_ip,
                               change_port=change_port)
    fut: asyncio.Future = loop.create_future()

    def on_datagram(data: bytes, addr: Address) -> bool:
        if not stun.is_stun(data) or data[8:20] != tid:
            return False
        if not fut.done():
            fut.set_result((data, addr, loop.time()))
        return True

    probe.handlers.append(on_datagram)
    ans = StunAnswer(server)
    start = loop.time()
    try:
        result = None
        for i in range(tries):
            err = probe.sendto(req, server)
            if err is not None and err.errno in _NO_ROUTE + (errno.EPERM, errno.EACCES):
                ans.error = describe_oserror(err)
                ans.no_route = err.errno in _NO_ROUTE
                return ans
            until = start + (i + 1) * retransmit if i < tries - 1 else start + timeout
            wait = min(until, start + timeout) - loop.time()
            try:
                result = await asyncio.wait_for(asyncio.shield(fut), max(0.0, wait))
                break
            except asyncio.TimeoutError:
                continue
        if result is None:
            ans.error = "no answer within %.1f s" % timeout
            return ans
        data, addr, t = result
        ans.source = addr
        try:
            msg = stun.parse(data)
            if msg.msg_type == stun.BINDING_ERROR:
                code = msg.error_code
                ans.code = code[0] if code else 0
            ans.mapped = stun.parse_binding_response(data, tid)
            ans.other = msg.other_address
        except (ValueError, stun.StunError) as exc:
            ans.error = f"bad answer: {exc}"
            return ans
        ans.rtt_ms = (t - start) * 1000.0
        return ans
    finally:
        with contextlib.suppress(ValueError):
            probe.handlers.remove(on_datagram)
        if not fut.done():
            fut.cancel()


# -- hairpinning --------------------------------------------------------------------------

async def hairpin(probe: UdpProbe, mapped: Address, timeout: float = 1.0) -> bool:
    """Does a datagram sent to our own public (mapped) address come back to us?"""
    loop = probe.loop
    token = b"DTHP" + os.urandom(16)
    got = loop.create_future()

    def on_datagram(data: bytes, addr: Address) -> bool:
        if data != token:
            return False
        if not got.done():
            got.set_result(addr)
        return True

    probe.handlers.append(on_datagram)
    try:
        start = loop.time()
        while loop.time() - start < timeout:
            probe.sendto(token, mapped)
            try:
                await asyncio.wait_for(asyncio.shield(got), min(0.3, timeout - (loop.time() - start)))
                return True
            except asyncio.TimeoutError:
                continue
        return got.done()
    finally:
        with contextlib.suppress(ValueError):
            probe.handlers.remove(on_datagram)
        if not got.done():
            got.cancel()


# -- rendezvous: REGISTER over UDP and TCP, and a relayed round trip ----------------------

_FATAL = object()


class _RdvConn:
    """One sans-IO RendezvousClient driven over its own UDP socket or a TCP
    connection; its events land in a queue."""

    def __init__(self, server: Address, transport: str, rng: random.Random) -> None:
        self.server = server
        self.transport = transport
        self.core = RendezvousClient(rng=rng, transport=transport, retry=0.5, retry_max=1.0,
                                     max_tries=5, tcp_timeout=3.0)
        self.events: asyncio.Queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._udp: UdpProbe | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task | None = None
        self.error = ""
        self.connect_ms: float | None = None

    async def open(self, timeout: float) -> bool:
        start = self.loop.time()
        if self.transport == "udp":
            try:
                self._udp = UdpProbe(loop=self.loop)
            except OSError as exc:
                self.error = describe_oserror(exc)
                return False
            self._udp.handlers.append(self._on_udp)
            return True
        try:
            reader, self._writer = await asyncio.wait_for(asyncio.open_connection(*self.server), timeout)
        except asyncio.TimeoutError:
            self.error = f"no TCP connection within {timeout:.1f} s"
            return False
        except OSError as exc:
            self.error = describe_oserror(exc)
            return False
        self.connect_ms = (self.loop.time() - start) * 1000.0
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = asyncio.ensure_future(self._read_tcp(reader))
        return True

    def _on_udp(self, data: bytes, addr: Address) -> bool:
        if not rp.is_rendezvous(data):
            return False
        self.core.receive(data, self.loop.time())
        self.pump()
        return True

    async def _read_tcp(self, reader: asyncio.StreamReader) -> None:
        d = rp.Deframer()
        try:
            while chunk := await reader.read(65536):
                for msg in d.feed(chunk):
                    self.core.receive(msg, self.loop.time())
                self.pump()
        except (OSError, ValueError):
            pass
        if not self.error:
            self.error = "the server closed the connection"

    def send_raw(self, data: bytes) -> None:
        if self._udp is not None:
            err = self._udp.sendto(data, self.server)
            if err is not None and not self.error:
                self.error = describe_oserror(err)
            if err is not None and err.errno in _NO_ROUTE + (errno.EPERM, errno.EACCES):
                self.events.put_nowait(_FATAL)  # retrying cannot help: stop waiting
        elif self._writer is not None and not self._writer.is_closing():
            self._writer.write(rp.frame(data))

    def pump(self) -> None:
        now = self.loop.time()
        while (ev := self.core.next_event()) is not None:
            self.events.put_nowait(ev)
        for data in self.core.datagrams_to_send(now):
            self.send_raw(data)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        t = self.core.get_timer()
        if t is not None:
            self._timer = self.loop.call_at(max(t, now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self.loop.time())
        self.pump()

    async def expect(self, kinds: tuple[type, ...], timeout: float):
        """The next event of one of `kinds` (or a RequestFailed), None on timeout."""
        deadline = self.loop.time() + timeout
        while True:
            left = deadline - self.loop.time()
            if left <= 0:
                return None
            try:
                ev = await asyncio.wait_for(self.events.get(), left)
            except asyncio.TimeoutError:
                return None
            if ev is _FATAL or isinstance(ev, kinds + (RequestFailed,)):
                return None if ev is _FATAL else ev

    async def register(self, key: bytes, timeout: float) -> Registered | None:
        start = self.loop.time()
        self.core.register(key, (), start)
        self.pump()
        ev = await self.expect((Registered,), timeout)
        if isinstance(ev, Registered):
            if self.connect_ms is None:
                self.connect_ms = (self.loop.time() - start) * 1000.0
            return ev
        if isinstance(ev, RequestFailed):
            self.error = f"the server refused (error {ev.code})" if ev.code else "no answer"
        elif not self.error:
            self.error = f"no answer within {timeout:.1f} s"
        return None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._reader is not None:
            self._reader.cancel()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()


@dataclass
class RelayFacts:
    server: Address
    udp: bool | None = None           # REGISTER answered over UDP
    tcp: bool | None = None           # REGISTER answered over TCP
    udp_error: str = ""
    tcp_error: str = ""
    udp_ms: float | None = None
    tcp_ms: float | None = None
    observed_udp: Address | None = None
    observed_tcp: Address | None = None
    data: bool | None = None          # a message went through a relay allocation and back
    data_between: str = ""            # "udp<->tcp" or "tcp<->tcp"
    data_rtt_ms: float | None = None
    data_error: str = ""


async def relay_check(server: Address, *, timeout: float = 3.0,
                      rng: random.Random | None = None) -> RelayFacts:
    """REGISTER a random key with `server` over UDP and over TCP at once, then
    relay one message between the two registrations (the TCP side allocates,
    as the engine does; the other side binds over UDP, or over a second TCP
    connection when UDP failed) and time its round trip."""
    rng = rng or random.SystemRandom()
    facts = RelayFacts(server)
    key = rng.randbytes(rp.KEY_SIZE)
    udp = _RdvConn(server, "udp", rng)
    tcp = _RdvConn(server, "tcp", rng)
    conns = [udp, tcp]

    async def reg(c: _RdvConn) -> Registered | None:
        if not await c.open(timeout):
            return None
        return await c.register(key, timeout)

    try:
        r_udp, r_tcp = await asyncio.gather(reg(udp), reg(tcp))
        facts.udp, facts.tcp = r_udp is not None, r_tcp is not None
        facts.udp_error, facts.tcp_error = ("" if r_udp else udp.error), ("" if r_tcp else tcp.error)
        facts.udp_ms, facts.tcp_ms = udp.connect_ms if r_udp else None, tcp.connect_ms if r_tcp else None
        facts.observed_udp = r_udp.observed if r_udp else None
        facts.observed_tcp = r_tcp.observed if r_tcp else None
        if r_tcp is None:
            return facts
        binder = udp
        facts.data_between = "udp<->tcp"
        if r_udp is None:
            binder = _RdvConn(server, "tcp", rng)
            conns.append(binder)
            facts.data_between = "tcp<->tcp"
            if await reg(binder) is None:
                facts.data, facts.data_error = False, binder.error or "second TCP connection refused"
                return facts
        await _relay_round_trip(tcp, binder, key, facts, timeout)
        return facts
    finally:
        for c in conns:
            c.close()


async def _relay_round_trip(alloc: _RdvConn, binder: _RdvConn, key: bytes, facts: RelayFacts,
                            timeout: float) -> None:
    """Allocate, bind, and send one message each way, all within `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    def left() -> float:
        return max(0.0, deadline - loop.time())

    alloc.core.relay_allocate(key, binder.core.token or rp.NO_TOKEN, loop.time())
    alloc.pump()
    offer = await binder.expect((RelayOffered,), left())
    if not isinstance(offer, RelayOffered):
        facts.data, facts.data_error = False, "the relay offered no channel"
        return
    channel = offer.channel
    binder.core.relay_bind(channel, loop.time())
    binder.pump()
    bound = await alloc.expect((RelayBound,), left())
    if not isinstance(bound, RelayBound):
        facts.data, facts.data_error = False, "the relay channel was not bound"
        return
    ping = b"dattui-doctor" + os.urandom(8)
    start = loop.time()
    for sender, receiver, failure in ((alloc, binder, "nothing came through the relay"),
                                      (binder, alloc, "the relay passed data one way only")):
        while left() > 0:
            sender.send_raw(rp.relay_data(channel, ping))
            ev = await receiver.expect((RelayDataReceived,), min(0.5, left()))
            if isinstance(ev, RelayDataReceived) and ev.payload == ping:
                break
        else:
            facts.data, facts.data_error = False, failure
            return
    facts.data = True
    facts.data_rtt_ms = (loop.time() - start) * 1000.0
    alloc.core.relay_close(channel, loop.time())
    alloc.pump()


# -- the DHT ------------------------------------------------------------------------------

@dataclass
class DhtFacts:
    bootstrap: list[str] = field(default_factory=list)   # what was asked, "host:port"
    resolved: int = 0                                     # addresses the names gave
    resolve_errors: list[str] = field(default_factory=list)
    answered: bool = False                                # any node answered
    nodes: int = 0                                        # routing table size at the end
    external: Address | None = None                       # our address as DHT nodes saw it
    seconds: float = 0.0


async def dht_check(bootstrap: list[tuple[str, int]], *, timeout: float = 6.0,
                    healthy: int = 8) -> DhtFacts:
    """Join the DHT through `bootstrap` from a socket of our own; stop as
    soon as the routing table holds `healthy` nodes, or at `timeout`."""
    from ..dht.service import DhtService

    loop = asyncio.get_running_loop()
    facts = DhtFacts(bootstrap=[f"{h}:{p}" for h, p in bootstrap])
    start = time.monotonic()
    addrs: list[Address] = []
    results = await asyncio.gather(*(resolve(h, p, timeout=min(2.0, timeout / 2)) for h, p in bootstrap),
                                   return_exceptions=True)
    for (h, p), r in zip(bootstrap, results):
        if isinstance(r, BaseException):
            facts.resolve_errors.append(f"{h}: {describe_oserror(r) if isinstance(r, OSError) else 'name lookup timed out'}")
        elif r not in addrs:
            addrs.append(r)
    facts.resolved = len(addrs)
    if not addrs:
        facts.seconds = time.monotonic() - start
        return facts
    probe = UdpProbe(loop=loop)
    svc = DhtService(lambda d, a: probe.sendto(d, a), os.urandom(20), bootstrap=addrs, loop=loop)
    probe.handlers.append(lambda d, a: svc.accepts(d) and (svc.datagram(d, a) or True))
    try:
        svc.start()
        while time.monotonic() - start < timeout:
            await asyncio.sleep(0.2)
            n = svc.core.table_sizes()["routing"]
            if n >= healthy:
                break
        facts.nodes = svc.core.table_sizes()["routing"]
        facts.answered = facts.nodes > 0 or svc.external_address() is not None
        facts.external = svc.external_address()
    finally:
        svc.close()
        probe.close()
    facts.seconds = time.monotonic() - start
    return facts
