"""The two-machine peer test: `dattui doctor --peer` and `dattui doctor --peer ID`.

The host prints a one-time test id and waits; the joiner, given the id,
finds it through the first rendezvous server (both register a key derived
from the id; the server never sees the id itself). The joiner opens a
control channel to the host through the server's relay (over TCP when both
reach the server over TCP, else over UDP); every control message carries a
tag keyed by the id (`peer_proto`). Then, led by the host, both sides try
every path, one by one, each under its own timeout, from the node's own UDP
port as the engine would:

1. ``lan``: pings to the other side's local-network addresses;
2. ``direct``: pings to the other side's own public address, if it has one
   (no NAT on its side), from a fresh socket, so nothing the other side
   sent before can have opened the way: only unsolicited packets that get in
   count;
3. ``punched``: both sides probe each other at the moment the server says
   (CONNECT/PUNCH), with the engine's own strategy (`traversal.punch`: a low
   TTL first; the birthday strategy, 256 sockets on one side, random ports
   from the other, when one NAT maps per destination);
4. ``relay-udp``: a relay channel that both sides bind over UDP;
5. ``relay-tcp``: a relay channel at least one side binds over TCP.

Each path is reported as it finishes: worked (with the round-trip time of
echo pings over it, and the address that answered) or failed, or not tried,
with the reason. Both sides then send a throughput sample over QUIC along
the joiner's best path (the first that worked in the order above, the path
a clone on the joiner's machine takes), first host to joiner, then joiner to
host, each `size` bytes or `seconds` long, whichever ends first; each side
measures what it received. Both print which paths worked on each side.

Nothing is kept: the sockets, relay channels and the QUIC connection close
at the end, and no state directory is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .. import events as ev
from .. import netinfo
from ..discovery.static import parse_hostport
from ..errors import DattuiError, UsageError
from ..rendezvous import protocol as rp
from ..rendezvous.client_core import (PeersListed, PunchRequested, Registered, RelayAllocated,
                                      RelayBound, RelayClosed, RelayDataReceived, RelayOffered,
                                      RendezvousClient, RequestFailed)
from ..transport.identity import NodeIdentity
from ..transport.paths import DirectPath, RelayPath
from ..transport.quic import QuicEndpoint, QuicLink, is_quic
from ..transport.udp import bind_udp
from ..traversal.punch import Punched, Puncher, PunchState, Send, is_probe
from ..traversal.sockets import HelperSockets, sendto_ttl
from . import peer_proto as pp
from .probes import UdpProbe, describe_oserror, resolve, stun_binding

__all__ = ["PathResult", "PeerTestResult", "host_peer_test", "join_peer_test", "path_reason",
           "STEPS", "DEFAULT_SIZE", "DEFAULT_SECONDS", "best_path"]

STEPS = ("lan", "direct", "punched", "relay-udp", "relay-tcp")
DEFAULT_SIZE = 8 * 1024 * 1024
DEFAULT_SECONDS = 3.0
LAN_TIMEOUT = 1.5
DIRECT_TIMEOUT = 1.5
PUNCH_TIMEOUT = 3.0
BIRTHDAY_TIMEOUT = 5.0
RELAY_TIMEOUT = 3.0
REGISTER_TIMEOUT = 3.0
CONTROL_TIMEOUT = 10.0        # the other side answers a control message within this
HARD_MARK = ("0.0.0.0", 1)    # as the engine: "my NAT maps per destination"
BIRTHDAY_SOCKETS = 256
SPRAY_PROBES = 2048
HIGH_WATER = 1 << 20
CHUNK = bytes(60000)

_WHY = {
    "lan": "the other machine is on this local network and answered at its local address",
    "direct": "the other machine has a public address of its own, and it answers unsolicited packets",
    "punched": "both sides punched through their NATs at the same moment, as the rendezvous server "
               "arranged: a direct path",
    "relay-udp": "no direct path works (NATs that change ports per destination on both sides, or a "
                 "failed punch), so the rendezvous server relays the end-to-end encrypted data over UDP",
    "relay-tcp": "UDP does not get through on at least one side, so the rendezvous server relays the "
                 "end-to-end encrypted data over TCP",
}


def path_reason(path: str) -> str:
    return _WHY.get(str(getattr(path, "value", path)), "")


class PeerTestError(DattuiError):
    pass


@dataclass
class PathResult:
    path: str
    ok: bool | None                 # None: not tried (the reason says why)
    reason: str = ""
    address: str | None = None      # what answered
    rtt_ms: float | None = None     # lowest of the echo round trips
    seconds: float | None = None    # from the start of the step to the first answer (or the end)

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("rtt_ms", "seconds"):
            if d[k] is not None:
                d[k] = round(d[k], 3)
        return d

    @classmethod
    def from_message(cls, obj: dict) -> "PathResult | None":
        """The other side's result, from a control message (checked)."""
        path = obj.get("path")
        ok = obj.get("ok")
        if path not in STEPS or ok not in (True, False, None):
            return None

        def num(v):
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e6 else None

        def text(v, n):
            return v[:n] if isinstance(v, str) else ""

        return cls(path, ok, text(obj.get("reason"), 400), text(obj.get("address"), 80) or None,
                   num(obj.get("rtt_ms")), num(obj.get("seconds")))


def best_path(paths: list[PathResult]) -> PathResult | None:
    """The first path that worked, in the order of STEPS (the engine's preference)."""
    for name in STEPS:
        for p in paths:
            if p.path == name and p.ok:
                return p
    return None


@dataclass
class PeerTestResult:
    role: str                                # "host" or "join"
    ok: bool = False
    test_id: str = ""
    paths: list[PathResult] = field(default_factory=list)       # this side's, in order
    peer_paths: list[PathResult] = field(default_factory=list)  # the other side's, as it reported
    best: str | None = None                  # this side's best path
    why: str = ""
    rtt_ms: float | None = None              # over the best path
    peer_best: str | None = None
    sample_path: str | None = None           # the throughput sample went over this path
    bytes: int = 0                           # sample bytes received by this side
    seconds: float | None = None             # ... in this time (first byte to the end)
    throughput: float | None = None          # bytes per second received
    bytes_sent: int = 0
    sample_rtt_ms: float | None = None       # QUIC's smoothed RTT during the sample
    peer_received: dict = field(default_factory=dict)  # what the other side measured of ours
    this_side: dict = field(default_factory=dict)
    error: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["paths"] = [p.as_dict() for p in self.paths]
        d["peer_paths"] = [p.as_dict() for p in self.peer_paths]
        for k in ("rtt_ms", "seconds", "sample_rtt_ms"):
            if d[k] is not None:
                d[k] = round(d[k], 3)
        if d["throughput"] is not None:
            d["throughput"] = round(d["throughput"])
        return d


# -- one rendezvous client: over the node's UDP socket or a TCP connection of its own -------

class _Rdv:
    def __init__(self, side: "_Side", server: tuple[str, int], tcp: bool) -> None:
        self.side, self.server, self.tcp = side, server, tcp
        self.core = RendezvousClient(rng=side.rng, transport="tcp" if tcp else "udp", retry=0.5,
                                     retry_max=1.0, max_tries=5, tcp_timeout=4.0)
        self.loop = side.loop
        self.registered: Registered | None = None
        self.reg_done: asyncio.Future = self.loop.create_future()
        self.allocs: list[asyncio.Future] = []
        self.error = ""
        self.writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    @property
    def transport(self) -> str:
        return "tcp" if self.tcp else "udp"

    async def open(self, timeout: float) -> bool:
        if not self.tcp:
            return True
        try:
            reader, self.writer = await asyncio.wait_for(asyncio.open_connection(*self.server), timeout)
        except asyncio.TimeoutError:
            self.error = f"no TCP connection within {timeout:g} s"
            return False
        except OSError as exc:
            self.error = describe_oserror(exc)
            return False
        self._reader = asyncio.ensure_future(self._read(reader))
        return True

    async def _read(self, reader: asyncio.StreamReader) -> None:
        d = rp.Deframer()
        try:
            while chunk := await reader.read(65536):
                for msg in d.feed(chunk):
                    self.receive(msg)
        except (OSError, ValueError):
            pass
        self.error = self.error or "the server closed the TCP connection"

    def receive(self, data: bytes) -> None:
        if data[4:5] == b"\x09":
            parsed = rp.parse_relay_data(data)
            if parsed is not None:
                self.side.relay_in(self, *parsed)
            return
        self.core.receive(data, self.loop.time())
        self.pump()

    def send_raw(self, data: bytes) -> None:
        if self.closed:
            return
        if self.tcp:
            if self.writer is not None and not self.writer.is_closing():
                self.writer.write(rp.frame(data))
        else:
            self.side.main.sendto(data, self.server)

    def pump(self) -> None:
        if self.closed:
            return
        now = self.loop.time()
        while (e := self.core.next_event()) is not None:
            self.side.on_event(self, e)
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

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._reader is not None:
            self._reader.cancel()
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()


class _Channel:
    """A bound relay channel (through `rdv`)."""

    def __init__(self, rdv: _Rdv, channel: bytes) -> None:
        self.rdv, self.channel = rdv, channel
        self.bound: asyncio.Future = rdv.loop.create_future()
        self.control: _Control | None = None
        self.kind = ev.PathKind.RELAY_UDP

    def send(self, payload: bytes) -> None:
        self.rdv.send_raw(rp.relay_data(self.channel, payload))

    def path(self) -> RelayPath:
        return RelayPath(self.send, self.rdv.server, self.kind)


# -- the control channel ---------------------------------------------------------------------

class _Control:
    """Reliable, tagged messages through a relay channel: each is sent again
    every 0.3 s until the other side acknowledges it."""

    def __init__(self, channel: _Channel, key: bytes, me: int) -> None:
        self.channel, self.key, self.me = channel, key, me
        self.loop = channel.rdv.loop
        self._seq = 0
        self._acks: dict[int, asyncio.Future] = {}
        self._seen: set[int] = set()
        self._inbox: list[dict] = []
        self._arrived = asyncio.Event()
        channel.control = self

    def incoming(self, payload: bytes) -> None:
        got = pp.decode_control(self.key, self.me, payload)
        if got is None:
            return
        seq, obj = got
        if obj["t"] == "ack":
            ack = obj.get("seq")
            fut = self._acks.get(ack) if isinstance(ack, int) else None
            if fut is not None and not fut.done():
                fut.set_result(True)
            return
        self.channel.send(pp.encode_control(self.key, self.me, 0, {"t": "ack", "seq": seq}))
        if seq in self._seen or len(self._seen) > 10000:
            return
        self._seen.add(seq)
        if len(self._inbox) < 64:
            self._inbox.append(obj)
            self._arrived.set()

    async def send(self, obj: dict, timeout: float = CONTROL_TIMEOUT) -> None:
        self._seq += 1
        seq = self._seq
        data = pp.encode_control(self.key, self.me, seq, obj)
        fut = self._acks[seq] = self.loop.create_future()
        deadline = self.loop.time() + timeout
        try:
            while True:
                self.channel.send(data)
                left = deadline - self.loop.time()
                if left <= 0:
                    raise PeerTestError("the other machine stopped answering (through the relay)")
                try:
                    await asyncio.wait_for(asyncio.shield(fut), min(0.3, left))
                    return
                except asyncio.TimeoutError:
                    continue
        finally:
            self._acks.pop(seq, None)

    async def recv(self, kind: str, timeout: float = CONTROL_TIMEOUT) -> dict:
        deadline = self.loop.time() + timeout
        while True:
            for i, obj in enumerate(self._inbox):
                if obj["t"] == kind:
                    return self._inbox.pop(i)
                if obj["t"] == "abort":
                    raise PeerTestError(f"the other machine stopped the test: "
                                        f"{str(obj.get('why', ''))[:200]}")
            self._arrived.clear()
            left = deadline - self.loop.time()
            if left <= 0:
                raise PeerTestError(f"the other machine did not send its {kind} within {timeout:g} s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)


# -- the throughput sample -------------------------------------------------------------------

class _Sample:
    """One QUIC connection's sample exchange (a LinkHandler)."""

    def __init__(self, role: str, size: int, seconds: float, loop) -> None:
        self.role, self.size, self.seconds, self.loop = role, size, seconds, loop
        self.reader = pp.SampleReader()
        self.link: QuicLink | None = None
        self.established = loop.create_future()
        self.received = loop.create_future()   # (bytes, seconds) when END arrives
        self.sent = loop.create_future()       # bytes, when END is queued
        self.first: float | None = None
        self.sent_bytes = 0
        self._sending = False
        self._started = 0.0

    def _fail(self, why: str) -> None:
        for fut in (self.established, self.received, self.sent):
            if not fut.done():
                fut.set_exception(PeerTestError(why))

    def link_established(self, link: QuicLink) -> None:
        self.link = link
        if not self.established.done():
            self.established.set_result(link)
        if self.role == "join":
            link.send(pp.frame(pp.GO))

    def link_data(self, link: QuicLink, data: bytes) -> None:
        try:
            kinds = self.reader.feed(data)
        except ValueError:
            link.close(0, "bad sample stream")
            self._fail("the other machine sent a malformed sample")
            return
        now = self.loop.time()
        if self.first is None and self.reader.data_bytes:
            self.first = now
        for kind in kinds:
            if kind == pp.GO and self.role == "host":
                self.start(link)
            elif kind == pp.END and not self.received.done():
                took = max(1e-3, now - (self.first if self.first is not None else now))
                self.received.set_result((self.reader.data_bytes, took))
                if self.role == "join":
                    self.start(link)

    def link_writable(self, link: QuicLink) -> None:
        self._pump(link)

    def link_closed(self, link: QuicLink, reason: str) -> None:
        self._fail(f"the sample connection closed: {reason}")

    def start(self, link: QuicLink) -> None:
        if self._sending or self.sent.done():
            return
        self._sending = True
        self._started = self.loop.time()
        self._pump(link)

    def _pump(self, link: QuicLink) -> None:
        while self._sending and link.backlog < HIGH_WATER:
            if self.sent_bytes >= self.size or self.loop.time() - self._started > self.seconds:
                link.send(pp.frame(pp.END))
                self._sending = False
                if not self.sent.done():
                    self.sent.set_result(self.sent_bytes)
                return
            n = min(len(CHUNK), self.size - self.sent_bytes)
            link.send(pp.frame(pp.DATA, CHUNK[:n]))
            self.sent_bytes += n


# -- one side of the test --------------------------------------------------------------------

def _private(ip: str) -> bool:
    return netinfo.is_private(ip)


def _hp(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class _PeerInfo:
    """The other side, as its hello described it."""

    udp_token: bytes | None
    tcp_token: bytes | None
    observed: tuple[str, int] | None
    candidates: list[tuple[str, int]]
    hard: bool
    public: list[str]

    @classmethod
    def from_hello(cls, obj: dict) -> "_PeerInfo":
        def token(v):
            if isinstance(v, str) and len(v) == 2 * rp.TOKEN_SIZE:
                try:
                    t = bytes.fromhex(v)
                except ValueError:
                    return None
                return t if any(t) else None
            return None

        pub = obj.get("public")
        return cls(token(obj.get("udp_token")), token(obj.get("tcp_token")), pp.address(obj.get("observed")),
                   pp.addresses(obj.get("candidates")), obj.get("hard") is True,
                   [p[:64] for p in pub[:4] if isinstance(p, str)] if isinstance(pub, list) else [])

    @property
    def own_public(self) -> list[tuple[str, int]]:
        return [c for c in self.candidates if not _private(c[0]) and c != HARD_MARK]

    @property
    def lan(self) -> list[tuple[str, int]]:
        return [c for c in self.candidates if _private(c[0])]


class _Side:
    def __init__(self, options, role: str, test_id: str, on_path: Callable[[PathResult], None] | None,
                 size: int, seconds: float) -> None:
        self.options = options
        self.role = role
        self.me = pp.HOST if role == "host" else pp.JOIN
        self.test_id = test_id
        self.keys = pp.derive(test_id)
        self.on_path = on_path
        self.size, self.seconds = size, seconds
        self.loop = asyncio.get_running_loop()
        self.rng = random.SystemRandom()
        self.main: UdpProbe | None = None
        self.udp: _Rdv | None = None
        self.tcp: _Rdv | None = None
        self.server: tuple[str, int] | None = None
        self.mapped: dict[tuple[str, int], tuple[str, int]] = {}
        self.hard = False
        self.channels: dict[bytes, _Channel] = {}
        self.control: _Control | None = None
        self.peer: _PeerInfo | None = None
        self._offers: list[_Channel] = []          # bound on offer, taken by the step that wants one
        self._offered = asyncio.Event()
        self._punch: asyncio.Future | None = None
        self._punch_early: tuple | None = None     # a PUNCH that came before its step began
        self._peers: asyncio.Future | None = None
        self._pings: dict[bytes, tuple[int, float]] = {}
        self._pongs: asyncio.Queue | None = None
        self.puncher: Puncher | None = None
        self.helpers: HelperSockets | None = None
        self._punched: asyncio.Future | None = None
        self._punch_timer: asyncio.TimerHandle | None = None
        self.routes: dict[str, object] = {}   # step -> how to reach the other side over it
        self.endpoint: QuicEndpoint | None = None
        self.sample: _Sample | None = None
        self._fresh: list[UdpProbe] = []

    # ---- setting up ------------------------------------------------------------------------
    async def start(self) -> None:
        o = self.options
        if not o.rendezvous:
            raise UsageError("the peer test meets through a rendezvous server: give the same one on "
                             "both machines with --rendezvous HOST:PORT")
        servers = []
        for text in o.rendezvous:
            host, port = parse_hostport(text, 3478)
            try:
                servers.append(await resolve(host, port, timeout=2.0))
            except (OSError, asyncio.TimeoutError):
                if not servers:
                    raise PeerTestError(f"the rendezvous server name {host} does not resolve") from None
        self.server = servers[0]
        host = o.host if ":" not in o.host else "0.0.0.0"
        try:
            sock = bind_udp(host, o.port)
        except OSError:
            sock = bind_udp(host, 0)
        self.main = UdpProbe(loop=self.loop, sock=sock)
        self.main.handlers.insert(0, self._on_main)
        self.udp = _Rdv(self, self.server, tcp=False)
        self.tcp = _Rdv(self, self.server, tcp=True)
        # our public address as every server address sees it: two that see different
        # ports mean our NAT maps per destination (as the engine's rendezvous source)
        answers = await asyncio.gather(*(stun_binding(self.main, s, timeout=1.5) for s in servers))
        for s, a in zip(servers, answers):
            if a.ok:
                self.mapped[s] = a.mapped
        ips: dict[str, set] = {}
        for s, m in self.mapped.items():
            ips.setdefault(s[0], set()).add(m)
        self.hard = len(ips) >= 2 and len({m[1] for ms in ips.values() for m in ms}) > 1
        await asyncio.gather(self._register(self.udp), self._register(self.tcp))
        if self.udp.registered is None and self.tcp.registered is None:
            raise PeerTestError(f"the rendezvous server {_hp(self.server)} answers neither over UDP "
                                f"({self.udp.error or 'no answer'}) nor over TCP ({self.tcp.error or 'no answer'}): "
                                "run `dattui doctor` to see why")
        self.endpoint = QuicEndpoint(NodeIdentity(os.urandom(32)), self.main.sendto,
                                     on_incoming=self._incoming, loop=self.loop)
        self.endpoint.accept_incoming = self.role == "host"  # the joiner dials the sample
        self.sample = _Sample(self.role, self.size, self.seconds, self.loop)

    def candidates(self) -> list[tuple[str, int]]:
        """Our own addresses, as the engine lists them (a socket bound to one
        address has that one only)."""
        host, port = self.main.sock.getsockname()[:2]
        if host not in ("0.0.0.0", ""):
            return [(host, port)]
        out = [(ip, port) for i in netinfo.local_addresses() if i.up and not i.is_loopback for ip in i.ipv4]
        return out[:7]

    async def _register(self, rdv: _Rdv) -> None:
        if not await rdv.open(REGISTER_TIMEOUT):
            return
        cands = self.candidates() + ([HARD_MARK] if self.hard else [])
        rdv.core.register(self.keys.key, cands, self.loop.time())
        rdv.pump()
        try:
            await asyncio.wait_for(asyncio.shield(rdv.reg_done), REGISTER_TIMEOUT)
        except asyncio.TimeoutError:
            rdv.error = rdv.error or f"no answer within {REGISTER_TIMEOUT:g} s"

    def this_side(self) -> dict:
        return {"port": self.main.port if self.main else None,
                "public_addresses": sorted({_hp(m) for m in self.mapped.values()}),
                "nat_maps_per_destination": self.hard,
                "rendezvous": _hp(self.server) if self.server else None,
                "rendezvous_over": [r.transport for r in (self.udp, self.tcp) if r and r.registered]}

    def hello(self) -> dict:
        return {"t": "hello",
                "udp_token": self.udp.registered.token.hex() if self.udp.registered else None,
                "tcp_token": self.tcp.registered.token.hex() if self.tcp.registered else None,
                "observed": list(self.udp.registered.observed) if self.udp.registered else None,
                "candidates": [list(c) for c in self.candidates()], "hard": self.hard,
                "public": sorted({m[0] for m in self.mapped.values()})}

    # ---- events ----------------------------------------------------------------------------
    def on_event(self, rdv: _Rdv, e) -> None:
        if isinstance(e, Registered):
            rdv.registered = e
            if not rdv.reg_done.done():
                rdv.reg_done.set_result(e)
        elif isinstance(e, RequestFailed):
            if e.kind == "register" and not rdv.reg_done.done():
                rdv.error = f"the server refused (error {e.code})" if e.code else "no answer"
                rdv.reg_done.set_result(None)
            elif e.kind == "relay_allocate" and rdv.allocs:
                fut = rdv.allocs.pop(0)
                if not fut.done():
                    fut.set_exception(PeerTestError(
                        f"the server refused a relay channel (error {e.code})" if e.code
                        else "the server did not answer the relay request"))
            elif e.kind == "connect" and self._punch is not None and not self._punch.done():
                self._punch.set_exception(PeerTestError(
                    f"the server refused to coordinate a punch (error {e.code})" if e.code
                    else "the server did not answer the punch request"))
        elif isinstance(e, PeersListed):
            if self._peers is not None and not self._peers.done():
                mine = {r.registered.token for r in (self.udp, self.tcp) if r.registered}
                found = [p for p in e.peers if p.token not in mine]
                if found:
                    self._peers.set_result(found)
        elif isinstance(e, PunchRequested):
            if e.key != self.keys.key:
                return
            if self._punch is not None and not self._punch.done():
                self._punch.set_result((rdv, e))
            else:
                self._punch_early = (rdv, e)
        elif isinstance(e, RelayAllocated):
            ch = self.channels.setdefault(e.channel, _Channel(rdv, e.channel))
            if rdv.allocs:
                fut = rdv.allocs.pop(0)
                if not fut.done():
                    fut.set_result(ch)
        elif isinstance(e, RelayOffered):
            # only the joiner offers channels (it allocates, we bind): a handful in all
            if self.role == "host" and e.key == self.keys.key and len(self.channels) < 16 \
                    and e.channel not in self.channels:
                ch = self.channels[e.channel] = _Channel(rdv, e.channel)
                rdv.core.relay_bind(e.channel, self.loop.time())
                self._offers.append(ch)
                self._offered.set()
        elif isinstance(e, RelayBound):
            ch = self.channels.get(e.channel)
            if ch is not None and not ch.bound.done():
                ch.bound.set_result(True)
        elif isinstance(e, RelayDataReceived):
            self.relay_in(rdv, e.channel, e.payload)
        elif isinstance(e, RelayClosed):
            ch = self.channels.pop(e.channel, None)
            if ch is not None and not ch.bound.done():
                ch.bound.set_exception(PeerTestError("the relay channel closed"))

    def relay_in(self, rdv: _Rdv, channel: bytes, payload: bytes) -> None:
        ch = self.channels.get(channel)
        if ch is None or ch.rdv is not rdv:
            return
        if pp.is_control(payload):
            if ch.control is not None:
                ch.control.incoming(payload)
        elif pp.is_echo(payload):
            self._echo(payload, ch.send)
        elif is_quic(payload) and self.endpoint is not None:
            self.endpoint.datagram(payload, ("relay-" + channel.hex(), 0), via=ch.path())

    def _on_main(self, data: bytes, addr) -> bool:
        if rp.is_rendezvous(data):
            if self.udp is not None and addr == self.udp.server:
                self.udp.receive(data)
            return True
        if pp.is_echo(data):
            self._echo(data, lambda d: self.main.sendto(d, addr))
            return True
        if is_probe(data):
            self._probe(data, addr, 0)
            return True
        if is_quic(data):
            if self.endpoint is not None:
                self.endpoint.datagram(data, addr)
            return True
        return False

    def _echo(self, data: bytes, reply: Callable[[bytes], None]) -> None:
        answer = pp.pong_for(data, self.keys.session)
        if answer is not None:
            if data[21:29] not in self._pings:  # never our own ping (a LAN address that is ours too)
                reply(answer)
            return
        nonce = pp.pong_nonce(data, self.keys.session)
        sent = self._pings.pop(nonce, None) if nonce is not None else None
        if sent is not None and self._pongs is not None:
            self._pongs.put_nowait((sent[0], (self.loop.time() - sent[1]) * 1000.0))

    def _incoming(self, link: QuicLink) -> None:
        if self.sample is not None and self.sample.link is None:
            link.handler = self.sample
        else:
            link.close(0, "unexpected connection")

    # ---- pings over one path ----------------------------------------------------------------
    async def _ping(self, routes: list[Callable[[bytes], None]], timeout: float) -> tuple[int, list[float], float]:
        """Ping every route until one answers (then twice more over it), or
        `timeout`. (index of the route that answered or -1, round trips in
        ms, seconds to the first answer)."""
        self._pongs = asyncio.Queue()
        self._pings.clear()
        start = self.loop.time()
        schedule = [0.0, 0.1, 0.25, 0.45, 0.7, 1.0]
        winner, rtts, first_at, n = -1, [], 0.0, 0
        try:
            while True:
                now = self.loop.time()
                if winner < 0:
                    at = start + (schedule[n] if n < len(schedule) else schedule[-1] + 0.4 * (n - len(schedule) + 1))
                    if now >= at:
                        for i, send in enumerate(routes):
                            nonce = os.urandom(8)
                            self._pings[nonce] = (i, self.loop.time())
                            send(pp.ping(self.keys.session, nonce))
                        n += 1
                        continue
                    wait = min(at, start + timeout) - now
                else:
                    if len(rtts) >= 3 or now > first_at + 0.5:
                        break
                    wait = first_at + 0.5 - now
                if winner < 0 and now >= start + timeout:
                    break
                try:
                    idx, rtt = await asyncio.wait_for(self._pongs.get(), max(0.0, wait))
                except asyncio.TimeoutError:
                    continue
                if winner < 0:
                    winner, first_at = idx, self.loop.time()
                    for _ in range(2):
                        nonce = os.urandom(8)
                        self._pings[nonce] = (idx, self.loop.time())
                        routes[idx](pp.ping(self.keys.session, nonce))
                if idx == winner:
                    rtts.append(rtt)
        finally:
            self._pongs = None
            self._pings.clear()
        return winner, rtts, (first_at - start) if winner >= 0 else timeout

    # ---- the steps --------------------------------------------------------------------------
    async def run_step(self, step: str) -> PathResult:
        t0 = self.loop.time()
        try:
            r = await getattr(self, "_step_" + step.replace("-", "_"))()
        except PeerTestError as exc:
            r = PathResult(step, False, str(exc))
        except OSError as exc:
            r = PathResult(step, False, describe_oserror(exc))
        if r.seconds is None and r.ok is not None:
            r.seconds = self.loop.time() - t0
        return r

    def _no_udp(self, step: str) -> PathResult | None:
        if self.udp.registered is None:
            return PathResult(step, None, "UDP does not reach the rendezvous server from this "
                                          "machine")
        if self.peer.udp_token is None:
            return PathResult(step, None, "UDP does not reach the rendezvous server from the "
                                          "other machine")
        return None

    async def _step_lan(self) -> PathResult:
        targets = self.peer.lan
        if not targets:
            return PathResult("lan", None, "the other machine reported no local-network address")
        main = self.main
        routes = [lambda d, t=t: main.sendto(d, t) for t in targets]
        i, rtts, secs = await self._ping(routes, LAN_TIMEOUT)
        if i < 0:
            return PathResult("lan", False, f"no answer from {', '.join(map(_hp, targets))} within "
                                            f"{LAN_TIMEOUT:g} s: the machines are not on one local network",
                              seconds=secs)
        self.routes["lan"] = targets[i]
        return PathResult("lan", True, f"its local-network address {_hp(targets[i])} answered",
                          _hp(targets[i]), min(rtts), secs)

    async def _step_direct(self) -> PathResult:
        targets = self.peer.own_public
        if not targets:
            pub = self.peer.observed[0] if self.peer.observed else \
                (self.peer.public[0] if self.peer.public else None)
            why = "the other machine has no public address of its own (it is behind a NAT"
            why += f"; {pub} belongs to the NAT)" if pub else ")"
            return PathResult("direct", None, why)
        if self.udp.registered is None and not self.mapped:
            return PathResult("direct", None, "UDP does not get out of this machine's network")
        fresh = UdpProbe(self.options.host if ":" not in self.options.host else "0.0.0.0", 0, loop=self.loop)
        self._fresh.append(fresh)
        fresh.handlers.append(lambda d, a: (self._echo(d, lambda x: fresh.sendto(x, a)) or True)
                              if pp.is_echo(d) else False)
        routes = [lambda d, t=t: fresh.sendto(d, t) for t in targets]
        try:
            i, rtts, secs = await self._ping(routes, DIRECT_TIMEOUT)
        finally:
            fresh.close()
        if i < 0:
            return PathResult("direct", False, f"no answer from its public address "
                                               f"{', '.join(map(_hp, targets))} within {DIRECT_TIMEOUT:g} s: "
                                               "a firewall there drops unsolicited packets", seconds=secs)
        self.routes["direct"] = targets[i]
        return PathResult("direct", True, f"its own public address {_hp(targets[i])} answered unsolicited "
                                          "packets", _hp(targets[i]), min(rtts), secs)

    async def _step_punched(self) -> PathResult:
        missing = self._no_udp("punched")
        if missing is not None:
            return missing
        loop = self.loop
        self._punch = loop.create_future()
        if self._punch_early is not None:
            self._punch.set_result(self._punch_early)
            self._punch_early = None
        if self.role == "join":
            self.udp.core.connect(self.keys.key, self.peer.udp_token,
                                  self.candidates() + ([HARD_MARK] if self.hard else []), loop.time())
            self.udp.pump()
        try:
            rdv, push = await asyncio.wait_for(asyncio.shield(self._punch), RELAY_TIMEOUT)
        except asyncio.TimeoutError:
            return PathResult("punched", False, "the rendezvous server did not arrange a punch in time")
        finally:
            self._punch = None
        peer = push.peer
        peer_hard = HARD_MARK in peer.candidates
        cands = [peer.observed] + [c for c in peer.candidates if c != HARD_MARK]
        cands = [c for c in dict.fromkeys(cands) if c[0] != "0.0.0.0"]
        sockets, spray, how = (0,), None, ""
        if self.hard and not peer_hard:
            self.helpers = HelperSockets(BIRTHDAY_SOCKETS, self._helper_probe, self._helper_other, loop=loop)
            sockets = tuple(self.helpers.socks)
            how = f" (birthday strategy: probes from {len(sockets)} sockets here)"
        elif peer_hard and not self.hard:
            spray = (peer.observed[0], SPRAY_PROBES)
            how = " (birthday strategy: probes at random ports of the other side's NAT)"
        timeout = BIRTHDAY_TIMEOUT if (spray or len(sockets) > 1) else PUNCH_TIMEOUT
        token = self.udp.registered.token
        from ..traversal.rendezvous import session_for
        start = loop.time() + max(0.0, push.at - loop.time())
        self.puncher = Puncher(session_for(self.keys.key, token, peer.token), cands, start=start,
                               deadline=timeout, rng=random.Random(os.urandom(8)), sockets=sockets,
                               spray=spray)
        self._punched = loop.create_future()
        self._punch_tick()
        try:
            got: Punched = await asyncio.wait_for(asyncio.shield(self._punched), timeout + 0.5)
        except asyncio.TimeoutError:
            why = f"no probe got through within {timeout:g} s{how}"
            if self.hard and peer_hard:
                why += ": both NATs change ports per destination, so no punch can meet (the engine relays)"
            if self.helpers is not None:
                self.helpers.close()
                self.helpers = None
            return PathResult("punched", False, why, seconds=timeout)
        finally:
            if self._punch_timer is not None:
                self._punch_timer.cancel()
                self._punch_timer = None
        self.puncher = None
        if self.helpers is not None:
            self.helpers.keep_only(got.socket)
        send = self._sender(got.socket)
        i, rtts, _ = await self._ping([lambda d: send(d, got.addr)], 1.0)
        self.routes["punched"] = (got.socket, got.addr)
        return PathResult("punched", True, f"probes from both sides met at {_hp(got.addr)} after "
                                           f"{max(0.0, got.seconds):.2f} s{how}", _hp(got.addr),
                          min(rtts) if rtts else None, max(0.0, got.seconds))

    def _sender(self, socket_index: int) -> Callable[[bytes, tuple], None]:
        if socket_index == 0 or self.helpers is None:
            return self.main.sendto
        return self.helpers.sender(socket_index)

    def _punch_tick(self) -> None:
        self._punch_timer = None
        p = self.puncher
        if p is None:
            return
        for s in p.poll(self.loop.time()):
            self._punch_send(s)
        t = p.next_timer()
        if t is not None and p.state not in (PunchState.DONE, PunchState.FAILED):
            self._punch_timer = self.loop.call_at(t, self._punch_tick)

    def _punch_send(self, s: Send) -> None:
        if s.socket == 0:
            sendto_ttl(self.main.sock, s.data, s.addr, s.ttl)
        elif self.helpers is not None:
            self.helpers.sendto(s.socket, s.data, s.addr, s.ttl)

    def _probe(self, data: bytes, addr, socket_index: int) -> None:
        p = self.puncher
        if p is None:
            # the other side still probes after we got through: keep answering
            return
        for r in p.receive(data, addr, self.loop.time(), socket_index):
            if isinstance(r, Send):
                self._punch_send(r)
            elif isinstance(r, Punched) and self._punched is not None and not self._punched.done():
                self._punched.set_result(r)

    def _helper_probe(self, data: bytes, addr, i: int) -> None:
        self._probe(data, addr, i)

    def _helper_other(self, data: bytes, addr, i: int) -> None:
        if pp.is_echo(data):
            self._echo(data, lambda d: self.helpers and self.helpers.sendto(i, d, addr))
        elif is_quic(data) and self.endpoint is not None and self.helpers is not None:
            self.endpoint.datagram(data, addr, via=DirectPath(self.helpers.sender(i), addr,
                                                              ev.PathKind.PUNCHED))

    async def _relay_channel(self, mine: _Rdv, token: bytes | None, timeout: float) -> _Channel:
        """The joiner allocates a channel to `token` from `mine`; the host takes
        the next channel offered on `mine` (it was bound when offered).
        Returns the bound channel."""
        loop = self.loop
        if self.role == "join":
            fut = loop.create_future()
            mine.allocs.append(fut)
            mine.core.relay_allocate(self.keys.key, token, loop.time())
            mine.pump()
            ch = await asyncio.wait_for(fut, timeout)
        else:
            ch = await asyncio.wait_for(self._next_offer(mine), timeout)
        await asyncio.wait_for(asyncio.shield(ch.bound), timeout)
        return ch

    async def _next_offer(self, on: _Rdv | None) -> _Channel:
        while True:
            for i, ch in enumerate(self._offers):
                if on is None or ch.rdv is on:
                    return self._offers.pop(i)
            self._offered.clear()
            await self._offered.wait()

    async def _step_relay(self, step: str) -> PathResult:
        me, peer = self, self.peer
        if step == "relay-udp":
            missing = self._no_udp(step)
            if missing is not None:
                return missing
            mine, token = self.udp, peer.udp_token
        else:
            if self.tcp.registered is None and peer.tcp_token is None:
                return PathResult(step, None, "neither machine reaches the rendezvous server "
                                              "over TCP")
            if self.role == "join":
                mine = self.tcp if self.tcp.registered is not None else self.udp
                token = peer.tcp_token or peer.udp_token
            else:  # the joiner names our TCP registration if we have one
                mine = self.tcp if self.tcp.registered is not None else self.udp
                token = None
            if mine.registered is None:
                return PathResult(step, None, "this machine is not registered with the server")
        t0 = self.loop.time()
        try:
            ch = await me._relay_channel(mine, token, RELAY_TIMEOUT)
        except asyncio.TimeoutError:
            return PathResult(step, False, f"no relay channel within {RELAY_TIMEOUT:g} s")
        ch.kind = ev.PathKind.RELAY_TCP if step == "relay-tcp" else ev.PathKind.RELAY_UDP
        i, rtts, secs = await self._ping([ch.send], RELAY_TIMEOUT)
        srv = _hp(self.server)
        if i < 0:
            return PathResult(step, False, f"the channel through {srv} was bound, but nothing came through it "
                                           f"within {RELAY_TIMEOUT:g} s", srv, seconds=self.loop.time() - t0)
        self.routes[step] = ch
        over = ("over UDP on both sides" if step == "relay-udp" else
                "over TCP from this machine" if mine.tcp else "over UDP from this machine, TCP from the other")
        return PathResult(step, True, f"the rendezvous server {srv} relays {over}", srv, min(rtts),
                          self.loop.time() - t0)

    async def _step_relay_udp(self) -> PathResult:
        return await self._step_relay("relay-udp")

    async def _step_relay_tcp(self) -> PathResult:
        return await self._step_relay("relay-tcp")

    # ---- meeting ----------------------------------------------------------------------------
    async def wait_for_joiner(self, wait: float) -> None:
        try:
            ch = await asyncio.wait_for(self._next_offer(None), wait)
            await asyncio.wait_for(asyncio.shield(ch.bound), CONTROL_TIMEOUT)
        except asyncio.TimeoutError:
            raise PeerTestError(f"nobody joined within {wait:g} s") from None
        self.control = _Control(ch, self.keys.control, self.me)
        hello = await self.control.recv("hello")
        self.peer = _PeerInfo.from_hello(hello)
        await self.control.send(self.hello())

    async def find_host(self, timeout: float) -> None:
        loop = self.loop
        deadline = loop.time() + timeout
        rdvs = [r for r in (self.tcp, self.udp) if r.registered is not None]
        self._peers = loop.create_future()
        try:
            while not self._peers.done():
                if loop.time() > deadline:
                    raise PeerTestError(
                        f"the other machine was not found within {timeout:g} s: check the id, that "
                        "`dattui doctor --peer` still waits there, and that both use the same "
                        "--rendezvous server")
                for r in rdvs:
                    r.core.lookup(self.keys.key, loop.time())
                    r.pump()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._peers), 0.5)
            found = self._peers.result()
        finally:
            self._peers = None
        by_tcp = {p.over_tcp: p for p in found}
        host = by_tcp.get(True) or by_tcp.get(False)
        # the control channel: TCP on both sides when we can (reliable), else what there is
        mine = self.tcp if self.tcp.registered is not None else self.udp
        try:
            ch = await self._relay_channel(mine, host.token, CONTROL_TIMEOUT)
        except asyncio.TimeoutError:
            raise PeerTestError("the other machine was found, but no relay channel to it could be "
                                "opened through the rendezvous server") from None
        self.control = _Control(ch, self.keys.control, self.me)
        await self.control.send(self.hello())
        self.peer = _PeerInfo.from_hello(await self.control.recv("hello"))

    # ---- the throughput sample ---------------------------------------------------------------
    def _dial_path(self, step: str):
        route = self.routes.get(step)
        if route is None:
            return None
        if step in ("lan", "direct"):
            kind = ev.PathKind.LAN if step == "lan" else ev.PathKind.DIRECT
            return DirectPath(self.main.sendto, route, kind)
        if step == "punched":
            socket_index, addr = route
            return DirectPath(self._sender(socket_index), addr, ev.PathKind.PUNCHED)
        return route.path()

    async def run_sample(self, step: str) -> tuple[int, float, int, float | None]:
        """(bytes received, seconds, bytes sent, QUIC RTT ms) over `step`."""
        if self.role == "join":
            path = self._dial_path(step)
            if path is None:
                raise PeerTestError(f"no route for {step}")
            link = self.endpoint.connect(path)
            link.handler = self.sample
        budget = 2 * self.seconds + 15.0
        try:
            await asyncio.wait_for(asyncio.shield(self.sample.established), 8.0)
            got, took = await asyncio.wait_for(asyncio.shield(self.sample.received), budget)
            if self.role == "join":
                await asyncio.wait_for(asyncio.shield(self.sample.sent), budget)
        except asyncio.TimeoutError:
            raise PeerTestError(f"the throughput sample over {step} did not finish in time") from None
        link = self.sample.link
        rtt = link.rtt * 1000.0 if link is not None and link.rtt else None
        return got, took, self.sample.sent_bytes, rtt

    def close(self) -> None:
        if self._punch_timer is not None:
            self._punch_timer.cancel()
        if self.endpoint is not None:
            with contextlib.suppress(Exception):
                self.endpoint.close_all("peer test over")
        for ch in list(self.channels.values()):
            with contextlib.suppress(Exception):
                ch.rdv.core.relay_close(ch.channel, self.loop.time())
                ch.rdv.pump()
        for r in (self.udp, self.tcp):
            if r is not None:
                with contextlib.suppress(Exception):
                    r.core.unregister(self.keys.key, self.loop.time())
                    r.pump()
                r.close()
        if self.helpers is not None:
            self.helpers.close()
        for f in self._fresh:
            f.close()
        if self.main is not None:
            self.main.close()


# -- the two roles ---------------------------------------------------------------------------

async def _steps(side: _Side, r: PeerTestResult) -> None:
    ctl = side.control
    for step in STEPS:
        if side.role == "host":
            await ctl.send({"t": "step", "step": step})
        else:
            msg = await ctl.recv("step", CONTROL_TIMEOUT + BIRTHDAY_TIMEOUT)
            if msg.get("step") != step:
                raise PeerTestError("the other machine runs another version of the peer test")
        mine = await side.run_step(step)
        r.paths.append(mine)
        if side.on_path is not None:
            side.on_path(mine)
        await ctl.send({"t": "result", **mine.as_dict(), "reason": mine.reason[:400]})
        theirs = PathResult.from_message(await ctl.recv("result", CONTROL_TIMEOUT + BIRTHDAY_TIMEOUT))
        if theirs is None or theirs.path != step:
            raise PeerTestError("the other machine sent a result that makes no sense")
        r.peer_paths.append(theirs)


async def _finish(side: _Side, r: PeerTestResult) -> None:
    """The throughput sample over the joiner's best path, then the summaries."""
    ctl = side.control
    best = best_path(r.paths)
    r.best = best.path if best else None
    r.why = path_reason(r.best) if r.best else ""
    r.rtt_ms = best.rtt_ms if best else None
    if side.role == "join":
        r.sample_path = r.best
        await ctl.send({"t": "sample", "path": r.sample_path})
    else:
        msg = await ctl.recv("sample")
        r.sample_path = msg.get("path") if msg.get("path") in STEPS else None
    if r.sample_path is not None:
        try:
            got, took, sent, rtt = await side.run_sample(r.sample_path)
            r.bytes, r.seconds, r.bytes_sent, r.sample_rtt_ms = got, took, sent, rtt
            r.throughput = got / took if got else None
        except PeerTestError as exc:
            r.error = str(exc)
    mine = {"t": "summary", "best": r.best, "bytes": r.bytes, "seconds": r.seconds, "error": r.error}
    if side.role == "host":
        await ctl.send(mine)
        theirs = await ctl.recv("summary", 2 * side.seconds + 20)
    else:
        theirs = await ctl.recv("summary", 2 * side.seconds + 20)
        await ctl.send(mine)
    r.peer_best = theirs.get("best") if theirs.get("best") in STEPS else None
    nbytes, secs = theirs.get("bytes"), theirs.get("seconds")
    if isinstance(nbytes, int) and isinstance(secs, (int, float)) and secs and secs > 0:
        r.peer_received = {"bytes": nbytes, "seconds": round(float(secs), 3),
                           "throughput": round(nbytes / float(secs))}
    if isinstance(theirs.get("error"), str) and theirs["error"] and not r.error:
        r.error = "the other machine: " + theirs["error"][:300]
    r.ok = r.best is not None and not r.error and r.bytes > 0


async def host_peer_test(options, *, size: int = DEFAULT_SIZE, seconds: float = DEFAULT_SECONDS,
                         wait: float = 600.0, on_ready: Callable[[str], None] | None = None,
                         on_path: Callable[[PathResult], None] | None = None,
                         test_id: str | None = None) -> PeerTestResult:
    """Host a peer test: `on_ready(test id)` once registered, then wait up to
    `wait` s for the joiner. `options`: DoctorOptions (or EngineOptions)."""
    test_id = pp.parse_test_id(test_id) if test_id else pp.new_test_id()
    r = PeerTestResult("host", test_id=test_id)
    side = _Side(options, "host", test_id, on_path, size, seconds)
    try:
        await side.start()
        r.this_side = side.this_side()
        if on_ready is not None:
            on_ready(test_id)
        await side.wait_for_joiner(wait)
        await _steps(side, r)
        await _finish(side, r)
    except PeerTestError as exc:
        r.error = str(exc)
        await _abort(side, r.error)
    finally:
        if side.main is not None:
            r.this_side = side.this_side()
        side.close()
    return r


async def join_peer_test(options, test_id: str, *, size: int = DEFAULT_SIZE,
                         seconds: float = DEFAULT_SECONDS, find_timeout: float = 60.0,
                         on_path: Callable[[PathResult], None] | None = None) -> PeerTestResult:
    """Join the peer test `test_id` (UsageError at once if it is not one)."""
    test_id = pp.parse_test_id(test_id)
    r = PeerTestResult("join", test_id=test_id)
    side = _Side(options, "join", test_id, on_path, size, seconds)
    try:
        await side.start()
        await side.find_host(find_timeout)
        await _steps(side, r)
        await _finish(side, r)
    except PeerTestError as exc:
        r.error = str(exc)
        await _abort(side, r.error)
    finally:
        if side.main is not None:
            r.this_side = side.this_side()
        side.close()
    return r


async def _abort(side: _Side, why: str) -> None:
    """Tell the other side we stop (best effort, without waiting long)."""
    if side.control is not None:
        with contextlib.suppress(PeerTestError, asyncio.TimeoutError, OSError, ValueError):
            await side.control.send({"t": "abort", "why": why[:200]}, timeout=1.0)

