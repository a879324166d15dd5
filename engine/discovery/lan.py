"""Finding peers on the local network by IPv4 multicast.

Nodes announce the 32-byte *discovery keys* of the shares they hold (never the
link or the public key) together with the UDP port their QUIC endpoint
listens on. A node that holds the same key answers with a `Found`: the
sender's IP address (as seen by the receiving socket) and announced port.

Wire format (all integers big-endian), one UDP datagram to the group
239.255.32.82:3283 (TTL 1, so it never leaves the link)::

    offset size
    0      4    magic  b"DTL1"
    4      1    type   1 = announce ("I hold these keys, reach me on <port>")
                       2 = query    ("who holds these keys? announce now")
    5      8    node nonce, random per process: a node ignores its own packets
                (multicast loopback is on so that two nodes on one host meet)
    13     2    port   the sender's QUIC/UDP port, 1..65535
    15     1    count  number of keys, 1..16
    16     32*count    the discovery keys

A datagram whose length is not exactly ``16 + 32 * count``, with another
magic, an unknown type, port 0 or count 0 or above 16 is ignored. More than
16 keys are sent as several datagrams.

Timing: when a key is added the node sends an announce and a query for it at
once, then announces it every `interval` seconds (5 s) with +/-20 % jitter.
A query for a key the node holds makes it announce that key after a short
random delay (up to 0.1 s, which spreads the replies of many holders), but
never sooner than 1 s after its previous announce of that key. The same
(key, address, port) is reported at most once per second, so a sender that
reaches us over two interfaces is not reported twice.

`LanDiscovery` is the sans-IO core (clock and randomness are passed in);
`LanAnnouncer` is the asyncio layer that owns the socket.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .. import netinfo

__all__ = [
    "Found",
    "LanDiscovery",
    "LanAnnouncer",
    "GROUP",
    "GROUP_PORT",
    "MAGIC",
    "ANNOUNCE",
    "QUERY",
    "MAX_KEYS_PER_PACKET",
    "encode",
]

log = logging.getLogger(__name__)

GROUP = "239.255.32.82"
GROUP_PORT = 3283

MAGIC = b"DTL1"
ANNOUNCE = 1
QUERY = 2
KEY_SIZE = 32
NONCE_SIZE = 8
MAX_KEYS_PER_PACKET = 16
_HEADER = struct.Struct("!4sB8sHB")  # 16 bytes
HEADER_SIZE = _HEADER.size
MAX_PACKET = HEADER_SIZE + KEY_SIZE * MAX_KEYS_PER_PACKET  # 528

JITTER = 0.2             # periodic announces every interval * [0.8, 1.2]
MIN_REANNOUNCE = 1.0     # a query never makes us announce a key more often
REPLY_DELAY_MAX = 0.1    # replies to a query are spread over [0, 0.1] s
FOUND_DEDUP = 1.0        # the same (key, host, port) at most once per second
FOUND_CACHE_MAX = 1024   # bound on the dedup memory


@dataclass(frozen=True)
class Found:
    """A peer on the LAN holds `dkey` and listens for QUIC on host:port."""

    dkey: bytes
    host: str
    port: int


def encode(kind: int, nonce: bytes, port: int, keys: Sequence[bytes]) -> list[bytes]:
    """Datagrams of type `kind` carrying `keys`, at most 16 keys each."""
    out = []
    for i in range(0, len(keys), MAX_KEYS_PER_PACKET):
        chunk = keys[i:i + MAX_KEYS_PER_PACKET]
        out.append(_HEADER.pack(MAGIC, kind, nonce, port, len(chunk)) + b"".join(chunk))
    return out


def _decode(data: bytes) -> tuple[int, bytes, int, list[bytes]] | None:
    """(type, nonce, port, keys) or None for anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return None
    data = bytes(data)
    if len(data) < HEADER_SIZE + KEY_SIZE or len(data) > MAX_PACKET:
        return None
    magic, kind, nonce, port, count = _HEADER.unpack_from(data)
    if magic != MAGIC or kind not in (ANNOUNCE, QUERY) or port == 0:
        return None
    if not 1 <= count <= MAX_KEYS_PER_PACKET or len(data) != HEADER_SIZE + KEY_SIZE * count:
        return None
    keys = [data[HEADER_SIZE + KEY_SIZE * i:HEADER_SIZE + KEY_SIZE * (i + 1)] for i in range(count)]
    return kind, nonce, port, keys


class _Key:
    __slots__ = ("next_announce", "last_announce", "reply_at", "last_query")

    def __init__(self, now: float) -> None:
        self.next_announce = now          # periodic announce due
        self.last_announce = -math.inf    # when this key was last announced
        self.reply_at: float | None = None  # an extra announce asked by a query
        self.last_query = -math.inf


class LanDiscovery:
    """Sans-IO LAN discovery: feed it datagrams and the time, send what it returns.

    `port` is this node's QUIC/UDP port, put in every packet. `rng` draws the
    jitter (and the node nonce when `node_nonce` is None). State is bounded:
    per key this node holds, plus a dedup memory of at most 1024 entries;
    nothing is stored for keys other nodes talk about.
    """

    def __init__(
        self,
        *,
        port: int,
        rng: random.Random,
        interval: float = 5.0,
        node_nonce: bytes | None = None,
    ) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be 1..65535, not {port}")
        if not interval > 0:
            raise ValueError("interval must be positive")
        if node_nonce is None:
            node_nonce = rng.randbytes(NONCE_SIZE)
        if len(node_nonce) != NONCE_SIZE:
            raise ValueError("node_nonce must be 8 bytes")
        self.port = port
        self.interval = float(interval)
        self._rng = rng
        self._nonce = bytes(node_nonce)
        self._keys: dict[bytes, _Key] = {}
        self._to_query: dict[bytes, None] = {}  # ordered set
        self._query_at: float | None = None
        self._recent: collections.OrderedDict[tuple[bytes, str, int], float] = (
            collections.OrderedDict()
        )

    # -- local commands -------------------------------------------------------

    @property
    def node_nonce(self) -> bytes:
        return self._nonce

    @property
    def keys(self) -> list[bytes]:
        """The discovery keys this node announces, in the order added."""
        return list(self._keys)

    def add(self, dkey: bytes, now: float) -> None:
        """Start announcing `dkey`: an announce and a query go out at once.
        Adding a key that is already there changes nothing."""
        dkey = _check_key(dkey)
        if dkey in self._keys:
            return
        st = _Key(now)
        st.last_query = now
        self._keys[dkey] = st
        self._to_query[dkey] = None
        self._query_at = now if self._query_at is None else min(self._query_at, now)

    def remove(self, dkey: bytes) -> None:
        """Stop announcing `dkey` and stop reporting peers for it."""
        dkey = bytes(dkey)
        self._keys.pop(dkey, None)
        self._to_query.pop(dkey, None)
        if not self._to_query:
            self._query_at = None
        for k in [k for k in self._recent if k[0] == dkey]:
            del self._recent[k]

    def network_changed(self, now: float) -> None:
        """The set of usable interfaces changed (a laptop joined another
        network): announce and query every key again, within the rate limits."""
        for dkey, st in self._keys.items():
            if now - st.last_announce >= MIN_REANNOUNCE:
                st.next_announce = min(st.next_announce, now)
            else:
                due = st.last_announce + MIN_REANNOUNCE
                st.reply_at = due if st.reply_at is None else min(st.reply_at, due)
            if now - st.last_query >= MIN_REANNOUNCE:
                st.last_query = now
                self._to_query[dkey] = None
                self._query_at = now if self._query_at is None else min(self._query_at, now)

    # -- network input --------------------------------------------------------

    def receive(self, data: bytes, src: tuple[str, int], now: float) -> list[Found]:
        """One datagram from `src` (as returned by recvfrom). Returns the peers
        it reveals for keys this node holds; never raises for bad input."""
        try:
            msg = _decode(data)
            host = str(src[0])
        except Exception:  # hostile input must never reach the caller
            return []
        if msg is None:
            return []
        kind, nonce, port, keys = msg
        if nonce == self._nonce:
            return []
        found: list[Found] = []
        seen: set[bytes] = set()
        for dkey in keys:
            st = self._keys.get(dkey)
            if st is None or dkey in seen:
                continue
            seen.add(dkey)
            if kind == QUERY:
                if st.reply_at is None:
                    soon = now + self._rng.uniform(0.0, REPLY_DELAY_MAX)
                    st.reply_at = max(soon, st.last_announce + MIN_REANNOUNCE)
            elif self._fresh((dkey, host, port), now):
                found.append(Found(dkey, host, port))
        return found

    def _fresh(self, key: tuple[bytes, str, int], now: float) -> bool:
        recent = self._recent
        while recent:  # entries are in time order: drop the expired ones
            oldest = next(iter(recent.values()))
            if now - oldest < FOUND_DEDUP:
                break
            recent.popitem(last=False)
        if key in recent:
            return False
        recent[key] = now
        while len(recent) > FOUND_CACHE_MAX:
            recent.popitem(last=False)
        return True

    # -- output ---------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Payloads due at `now` for the multicast group (announces first)."""
        due = [
            k for k, st in self._keys.items()
            if st.next_announce <= now or (st.reply_at is not None and st.reply_at <= now)
        ]
        out: list[bytes] = []
        if due:
            # Keys whose periodic announce is near ride along in the same
            # packets, so keys added at different times end up in one batch.
            dueset = set(due)
            horizon = now + JITTER * self.interval
            due += [
                k for k, st in self._keys.items()
                if k not in dueset and st.next_announce <= horizon
                and now - st.last_announce >= MIN_REANNOUNCE
            ]
            nxt = now + self.interval * self._rng.uniform(1.0 - JITTER, 1.0 + JITTER)
            for k in due:
                st = self._keys[k]
                st.last_announce = now
                st.next_announce = nxt
                st.reply_at = None
            out += encode(ANNOUNCE, self._nonce, self.port, due)
        if self._query_at is not None and self._query_at <= now:
            out += encode(QUERY, self._nonce, self.port, list(self._to_query))
            self._to_query.clear()
            self._query_at = None
        return out

    def next_timer(self) -> float | None:
        """When `datagrams_to_send` next has something; None with no keys."""
        times = [st.next_announce for st in self._keys.values()]
        times += [st.reply_at for st in self._keys.values() if st.reply_at is not None]
        if self._query_at is not None:
            times.append(self._query_at)
        return min(times) if times else None


def _check_key(dkey: bytes) -> bytes:
    if not isinstance(dkey, (bytes, bytearray, memoryview)) or len(dkey) != KEY_SIZE:
        raise ValueError("a discovery key is 32 bytes")
    return bytes(dkey)


# ---- asyncio layer ----------------------------------------------------------

_LINUX = sys.platform.startswith("linux")
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)


@dataclass(frozen=True)
class _Iface:
    name: str
    index: int
    addr: str


class LanAnnouncer:
    """Owns one UDP socket bound to the group port and drives `LanDiscovery`.

    It joins the group on every up, multicast-capable, non-loopback interface
    with an IPv4 address (only those named in `interfaces`, if given) and
    sends every payload once on each of them. The interface list is re-read
    every `interval` seconds; a change triggers a fresh announce and query.
    With no usable interface it sends nothing and finds nothing.

    `on_found(found)` is called from the event loop for every peer found (it
    may be set after construction). `start()` raises OSError only if the
    socket itself cannot be created or bound.
    """

    def __init__(
        self,
        *,
        port: int,
        on_found: Callable[[Found], None] | None = None,
        group: str = GROUP,
        group_port: int = GROUP_PORT,
        interval: float = 5.0,
        interfaces: Iterable[str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_found = on_found
        self.group = group
        self.group_port = group_port
        self.interval = float(interval)
        self._allowed = None if interfaces is None else frozenset(interfaces)
        self._clock = clock
        self._core = LanDiscovery(
            port=port, rng=rng or random.Random(), interval=interval,
            node_nonce=os.urandom(NONCE_SIZE),
        )
        self._group_bin = socket.inet_aton(group)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ifaces: dict[int, _Iface] = {}    # usable, by ifindex
        self._joined: dict[int, _Iface] = {}    # group memberships held
        self._timer: asyncio.TimerHandle | None = None
        self._refresh: asyncio.TimerHandle | None = None
        self._pump_soon: asyncio.Handle | None = None
        self._closed = False

    @property
    def interfaces(self) -> list[str]:
        """Names of the interfaces in use now."""
        return [i.name for i in self._ifaces.values()]

    async def start(self) -> None:
        if self._sock is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if _LINUX:
                # Only the groups this socket joined, not every group joined
                # on the host that happens to use the same port.
                try:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
                except OSError:
                    pass
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.bind(("", self.group_port))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._refresh_interfaces()
        self._pump()

    def add(self, dkey: bytes) -> None:
        self._core.add(dkey, self._clock())
        self._schedule_pump()

    def remove(self, dkey: bytes) -> None:
        self._core.remove(dkey)
        self._schedule_pump()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for h in (self._timer, self._refresh, self._pump_soon):
            if h is not None:
                h.cancel()
        self._timer = self._refresh = self._pump_soon = None
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()  # memberships go with the socket
            self._sock = None
        self._joined.clear()
        self._ifaces.clear()

    # -- internals --------------------------------------------------------------

    def _schedule_pump(self) -> None:
        # Coalesce several add() calls in one tick into one batch of packets.
        if self._sock is None or self._closed or self._pump_soon is not None:
            return
        self._pump_soon = self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_soon = None
        if self._sock is None or self._closed:
            return
        for payload in self._core.datagrams_to_send(self._clock()):
            self._send(payload)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        t = self._core.next_timer()
        if t is not None:
            delay = max(0.0, t - self._clock())
            self._timer = self._loop.call_later(delay, self._pump)

    def _send(self, payload: bytes) -> None:
        dest = (self.group, self.group_port)
        for iface in list(self._ifaces.values()):
            try:
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, self._mreq(iface, False))
                self._sock.sendto(payload, dest)
            except OSError as e:  # interface went away, buffer full: UDP, drop
                log.debug("lan: send on %s failed: %s", iface.name, e)

    def _mreq(self, iface: _Iface, membership: bool) -> bytes:
        """Option value for IP_ADD/DROP_MEMBERSHIP (`membership`) or
        IP_MULTICAST_IF. On Linux a struct ip_mreqn, which names the interface
        by index as well as by address; elsewhere ip_mreq / in_addr."""
        addr = socket.inet_aton(iface.addr)
        group = self._group_bin if membership else bytes(4)
        if _LINUX:
            return struct.pack("=4s4si", group, addr, iface.index)
        return group + addr if membership else addr

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        found: list[Found] = []
        for _ in range(64):  # bounded work per wake-up
            try:
                data, src = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.debug("lan: recvfrom failed: %s", e)
                break
            found += self._core.receive(data, src, self._clock())
        for f in found:
            cb = self.on_found
            if cb is None:
                continue
            try:
                cb(f)
            except Exception:
                log.exception("lan: on_found callback failed")
        self._pump()  # a query may have asked for an announce

    def _usable(self) -> dict[int, _Iface]:
        try:
            ifs = netinfo.local_addresses()
        except Exception as e:  # never let a read failure stop discovery
            log.debug("lan: reading interfaces failed: %s", e)
            return {}
        out = {}
        for i in ifs:
            if not (i.up and i.multicast and not i.is_loopback and i.ipv4):
                continue
            if self._allowed is not None and i.name not in self._allowed:
                continue
            out[i.index] = _Iface(i.name, i.index, i.ipv4[0])
        return out

    def _refresh_interfaces(self) -> None:
        self._refresh = None
        if self._sock is None or self._closed:
            return
        usable = self._usable()
        new = False
        for idx, old in list(self._joined.items()):
            if usable.get(idx) != old:
                try:
                    self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, self._mreq(old, True))
                except OSError:
                    pass  # the interface is gone and took the membership with it
                del self._joined[idx]
        for idx, iface in usable.items():
            if idx in self._joined:
                continue
            try:
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, self._mreq(iface, True))
            except OSError as e:
                log.debug("lan: joining the group on %s failed: %s", iface.name, e)
                continue
            self._joined[idx] = iface
        if usable != self._ifaces:
            new = any(self._ifaces.get(idx) != iface for idx, iface in usable.items())
            log.debug("lan: interfaces now %s", [i.name for i in usable.values()])
            self._ifaces = usable
        if new:
            self._core.network_changed(self._clock())
            self._pump()
        self._refresh = self._loop.call_later(self.interval, self._refresh_interfaces)
