"""This host's network interfaces and their addresses, read without subprocesses.

On Linux the interface list comes from ``socket.if_nameindex()``, the flags
from the ``SIOCGIFFLAGS`` ioctl, the IPv4 addresses from ``SIOCGIFADDR`` (the
primary address) plus ``SIOCGIFCONF`` (secondary and labelled addresses such
as ``eth0:1``), and the IPv6 addresses from ``/proc/net/if_inet6``.

Elsewhere only the names and indexes are known: such interfaces are reported
with no addresses and ``up=False``, so callers that need a usable interface
simply find none.

Reading is cheap (a few ioctls per interface), so callers re-read the list
whenever they want to notice a network change.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
import sys
from dataclasses import dataclass, field

__all__ = ["Interface", "local_addresses", "is_private"]

# <linux/sockios.h>
_SIOCGIFCONF = 0x8912
_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
# <net/if.h>
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_MULTICAST = 0x1000

_IFNAMSIZ = 16
_IFREQ_SIZE = 40  # struct ifreq on Linux (name + 24-byte union), all arches
_IF_INET6 = "/proc/net/if_inet6"


@dataclass(frozen=True)
class Interface:
    """One network interface. Address lists are in the kernel's order, unique."""

    name: str
    index: int
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)
    is_loopback: bool = False
    up: bool = False
    multicast: bool = False


def local_addresses() -> list[Interface]:
    """Every interface of this host (this network namespace), sorted by index.

    Never raises for an interface that vanishes while it is being read: it is
    reported with whatever could be read (or left out if it is gone).
    """
    try:
        names = socket.if_nameindex()
    except OSError:
        return []
    if not sys.platform.startswith("linux"):
        return [Interface(name=n, index=i) for i, n in sorted(names)]

    ipv6 = _read_if_inet6()
    out: list[Interface] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        v4_all = _ifconf(s)
        for index, name in sorted(names):
            flags = _ifflags(s, name)
            v4: list[str] = []
            primary = _ifaddr(s, name)
            if primary is not None:
                v4.append(primary)
            for addr in v4_all.get(name, ()):
                if addr not in v4:
                    v4.append(addr)
            out.append(Interface(
                name=name,
                index=index,
                ipv4=v4,
                ipv6=ipv6.get(name, []),
                is_loopback=bool(flags & _IFF_LOOPBACK),
                up=bool(flags & _IFF_UP),
                multicast=bool(flags & _IFF_MULTICAST),
            ))
    return out


def is_private(ip: str) -> bool:
    """True for an address that is not globally routable and belongs to a
    local network: RFC 1918 (10/8, 172.16/12, 192.168/16), IPv4 link-local
    169.254/16, loopback (127/8, ::1), IPv6 unique-local fc00::/7 and IPv6
    link-local fe80::/10 (a ``%scope`` suffix is accepted). IPv4-mapped IPv6
    addresses are judged by their IPv4 address. Carrier-grade NAT space
    (100.64/10) is *not* private: it is shared between customers of an ISP.
    Anything that is not an IP address is False.
    """
    try:
        addr = ipaddress.ip_address(ip.strip())
    except (ValueError, AttributeError):
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        return any(addr in net for net in _PRIVATE_V4)
    return any(addr in net for net in _PRIVATE_V6)


_PRIVATE_V4 = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8",
))
_PRIVATE_V6 = tuple(ipaddress.ip_network(n) for n in ("fc00::/7", "fe80::/10", "::1/128"))


# ---- Linux details ----------------------------------------------------------

def _ifreq(name: str) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")[: _IFNAMSIZ - 1]
    return raw.ljust(_IFREQ_SIZE, b"\0")


def _ifflags(s: socket.socket, name: str) -> int:
    try:
        res = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, _ifreq(name))
    except OSError:
        return 0
    return struct.unpack_from("H", res, _IFNAMSIZ)[0]


def _ifaddr(s: socket.socket, name: str) -> str | None:
    try:
        res = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, _ifreq(name))
    except OSError:  # EADDRNOTAVAIL: no IPv4 address; ENODEV: gone
        return None
    family = struct.unpack_from("H", res, _IFNAMSIZ)[0]
    if family != socket.AF_INET:
        return None
    return socket.inet_ntoa(res[_IFNAMSIZ + 4:_IFNAMSIZ + 8])


def _ifconf(s: socket.socket) -> dict[str, list[str]]:
    """All IPv4 addresses by interface name (labels like ``eth0:1`` folded
    into ``eth0``). Empty if the ioctl is unavailable."""
    out: dict[str, list[str]] = {}
    size = _IFREQ_SIZE * 64
    try:
        while True:
            buf = array.array("B", bytes(size))
            addr, _ = buf.buffer_info()
            ifc = struct.pack("iP", size, addr)
            res = fcntl.ioctl(s.fileno(), _SIOCGIFCONF, ifc)
            used = struct.unpack("iP", res)[0]
            if used < size or size >= _IFREQ_SIZE * 65536:
                break
            size *= 2  # may have been truncated: ask again with more room
    except (OSError, struct.error, OverflowError):
        return out
    data = buf.tobytes()[:used]
    for off in range(0, used - _IFREQ_SIZE + 1, _IFREQ_SIZE):
        rec = data[off:off + _IFREQ_SIZE]
        label = rec[:_IFNAMSIZ].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        family = struct.unpack_from("H", rec, _IFNAMSIZ)[0]
        if family != socket.AF_INET:
            continue
        ip = socket.inet_ntoa(rec[_IFNAMSIZ + 4:_IFNAMSIZ + 8])
        lst = out.setdefault(label.split(":", 1)[0], [])
        if ip not in lst:
            lst.append(ip)
    return out


def _read_if_inet6() -> dict[str, list[str]]:
    """``/proc/net/if_inet6``: one line per address,
    ``<32 hex addr> <ifindex> <prefixlen> <scope> <flags> <name>``."""
    out: dict[str, list[str]] = {}
    try:
        with open(_IF_INET6, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:  # IPv6 disabled or not Linux
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 6:
            continue
        try:
            ip = str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
        except ValueError:
            continue
        lst = out.setdefault(parts[5], [])
        if ip not in lst:
            lst.append(ip)
    return out
