"""Does the local gateway offer port mapping (UPnP-IGD, NAT-PMP, PCP)?

First it asks: an SSDP M-SEARCH for an Internet Gateway Device goes to the
LAN multicast group 239.255.255.250:1900 (TTL 2, so it never leaves the
local network) from each local IPv4 interface; a NAT-PMP public-address
request (RFC 6886) and a PCP ANNOUNCE (RFC 6887) go to the default gateway's
port 5351. Nothing else is contacted. Each probe is short: a gateway that does
not speak a protocol answers with an ICMP error at once or not at all.

Then, when the gateway speaks NAT-PMP or PCP, `request_mapping` asks it to
map the node's UDP port (NAT-PMP "map UDP", or a PCP MAP) for a short
lifetime, and `release_mapping` gives it back (lifetime 0): the doctor tests
that mapping works, it keeps nothing. Answers are parsed strictly (sizes,
versions, the request's port and nonce); anything else is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field

__all__ = ["PortMapFacts", "Mapping", "default_gateway", "probe_gateway", "upnp_search", "port_mapping",
           "request_mapping", "release_mapping", "natpmp_map_request", "parse_natpmp_map",
           "pcp_map_request", "parse_pcp_map"]

SSDP_GROUP = ("239.255.255.250", 1900)
PCP_PORT = 5351
_IGD_TYPES = ("urn:schemas-upnp-org:device:InternetGatewayDevice:1",
              "urn:schemas-upnp-org:device:InternetGatewayDevice:2")


@dataclass
class PortMapFacts:
    gateway: str | None = None
    natpmp: bool | None = None          # None: not asked (no gateway)
    natpmp_external: str | None = None  # the public address NAT-PMP reports
    pcp: bool | None = None
    upnp: bool | None = None            # None: no interface to ask on
    upnp_location: str | None = None
    upnp_server: str | None = None
    mapping: "Mapping | None" = None     # the test mapping, when one was granted
    mapping_error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.natpmp or self.pcp or self.upnp)


def default_gateway(route_file: str = "/proc/net/route") -> str | None:
    """The IPv4 default gateway from the kernel's routing table (Linux), or None."""
    try:
        with open(route_file) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        cols = line.split()
        if len(cols) < 4 or cols[1] != "00000000":
            continue
        try:
            flags = int(cols[3], 16)
            gw = int(cols[2], 16)
        except ValueError:
            continue
        if flags & 0x2 and gw:  # RTF_GATEWAY
            return socket.inet_ntoa(struct.pack("<I", gw))
    return None


def _pcp_announce(client_ip: str) -> bytes:
    mapped = ipaddress.IPv6Address("::ffff:" + client_ip).packed
    return bytes([2, 0, 0, 0]) + b"\0\0\0\0" + mapped


async def probe_gateway(gateway: str, facts: PortMapFacts, timeout: float = 1.0) -> None:
    """NAT-PMP and PCP on the gateway's port 5351 (a connected socket, so an
    ICMP port-unreachable ends the wait at once)."""
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        try:
            s.connect((gateway, PCP_PORT))
            client_ip = s.getsockname()[0]
        except OSError as exc:
            facts.natpmp = facts.pcp = False
            facts.notes.append(f"cannot reach the gateway {gateway}: {exc.strerror or exc}")
            return
        requests = [b"\x00\x00", _pcp_announce(client_ip)]
        facts.natpmp = facts.pcp = False
        start = loop.time()
        sends = 0
        while loop.time() - start < timeout:
            if sends < 3:
                for r in requests:
                    try:
                        s.send(r)
                    except ConnectionRefusedError:  # the ICMP error of an earlier send
                        facts.notes.append(f"the gateway {gateway} does not answer NAT-PMP or PCP "
                                           f"(port {PCP_PORT} closed)")
                        return
                    except OSError:
                        pass
                sends += 1
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 1100), min(0.3, timeout - (loop.time() - start)))
            except asyncio.TimeoutError:
                continue
            except ConnectionRefusedError:
                facts.notes.append(f"the gateway {gateway} does not answer NAT-PMP or PCP (port {PCP_PORT} closed)")
                return
            except OSError:
                return
            if len(data) >= 12 and data[0] == 0 and data[1] == 128:
                facts.natpmp = True
                if int.from_bytes(data[2:4], "big") == 0:
                    facts.natpmp_external = socket.inet_ntoa(data[8:12])
            elif len(data) >= 4 and data[0] == 2 and data[1] == 0x80:
                facts.pcp = True
            elif len(data) >= 4 and data[0] == 0 and data[1] >= 128:
                facts.natpmp = True  # a NAT-PMP-only gateway refusing the PCP version
            if facts.natpmp and facts.pcp:
                return
            if (facts.natpmp or facts.pcp) and loop.time() - start > timeout / 2:
                return
    finally:
        s.close()


# -- asking for a mapping ----------------------------------------------------------------

@dataclass
class Mapping:
    protocol: str           # "natpmp" or "pcp"
    internal_port: int
    external_port: int
    lifetime: int           # seconds granted
    external_ip: str | None = None
    released: bool | None = None
    nonce: bytes = b""


def natpmp_map_request(internal_port: int, lifetime: int, suggested: int | None = None) -> bytes:
    """RFC 6886 3.3: version 0, opcode 1 (map UDP); the same external port
    suggested unless told (a deletion suggests 0)."""
    return struct.pack("!BBHHHI", 0, 1, 0, internal_port,
                       internal_port if suggested is None else suggested, lifetime)


def parse_natpmp_map(data: bytes, internal_port: int) -> tuple[int, int, int] | None:
    """(result code, external port, lifetime) of the answer to our map request, or None."""
    if len(data) != 16 or data[0] != 0 or data[1] != 129:
        return None
    _, _, result, _epoch, internal, external, lifetime = struct.unpack("!BBHIHHI", data)
    if internal != internal_port:
        return None
    return result, external, lifetime


def _v4mapped(ip: str) -> bytes:
    return ipaddress.IPv6Address("::ffff:" + ip).packed


def pcp_map_request(client_ip: str, internal_port: int, lifetime: int, nonce: bytes,
                    suggested_ip: str = "0.0.0.0") -> bytes:
    """RFC 6887 7.1 and 11.1: a MAP request for UDP (protocol 17)."""
    header = struct.pack("!BBHI", 2, 1, 0, lifetime) + _v4mapped(client_ip)
    body = nonce + struct.pack("!B3xHH", 17, internal_port, internal_port) + _v4mapped(suggested_ip)
    return header + body


def parse_pcp_map(data: bytes, nonce: bytes, internal_port: int) -> tuple[int, int, int, str | None] | None:
    """(result code, external port, lifetime, external ip) of the answer to our MAP, or None."""
    if len(data) < 60 or len(data) > 1100 or data[0] != 2 or data[1] != 0x81:
        return None
    result = data[3]
    lifetime = int.from_bytes(data[4:8], "big")
    body = data[24:60]
    if body[:12] != nonce or body[12] != 17 or int.from_bytes(body[16:18], "big") != internal_port:
        return None
    external_port = int.from_bytes(body[18:20], "big")
    ip = ipaddress.IPv6Address(body[20:36])
    external_ip = str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)
    return result, external_port, lifetime, external_ip


async def _exchange(gateway: str, build, parse, timeout: float) -> tuple | None:
    """Send `build(client_ip)` to the gateway's port 5351 up to 3 times; the
    first answer `parse` accepts, or None. Raises OSError when the gateway
    cannot be reached or refuses (ICMP)."""
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        s.connect((gateway, PCP_PORT))
        request = build(s.getsockname()[0])
        start = loop.time()
        for attempt in range(3):
            s.send(request)
            until = start + timeout * (attempt + 1) / 3
            while loop.time() < until:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(s, 1100), until - loop.time())
                except asyncio.TimeoutError:
                    break
                got = parse(data)
                if got is not None:
                    return got
        return None
    finally:
        s.close()


async def request_mapping(facts: PortMapFacts, internal_port: int, *, lifetime: int = 60,
                          timeout: float = 1.5) -> Mapping | None:
    """Ask the gateway (NAT-PMP first, else PCP) to map UDP `internal_port`;
    the mapping granted (also in `facts.mapping`), or None (`facts.mapping_error` says why)."""
    gw = facts.gateway
    if gw is None or not (facts.natpmp or facts.pcp):
        return None
    try:
        if facts.natpmp:
            got = await _exchange(gw, lambda _ip: natpmp_map_request(internal_port, lifetime),
                                  lambda d: parse_natpmp_map(d, internal_port), timeout)
            if got is not None and got[0] == 0:
                facts.mapping = Mapping("natpmp", internal_port, got[1], got[2], facts.natpmp_external)
            elif got is not None:
                facts.mapping_error = f"the gateway refused the NAT-PMP mapping (result {got[0]})"
            else:
                facts.mapping_error = "the gateway did not answer the NAT-PMP mapping request"
        if facts.mapping is None and facts.pcp:
            nonce = os.urandom(12)
            got = await _exchange(gw, lambda ip: pcp_map_request(ip, internal_port, lifetime, nonce),
                                  lambda d: parse_pcp_map(d, nonce, internal_port), timeout)
            if got is not None and got[0] == 0:
                facts.mapping = Mapping("pcp", internal_port, got[1], got[2], got[3], nonce=nonce)
                facts.mapping_error = ""
            elif got is not None:
                facts.mapping_error = f"the gateway refused the PCP mapping (result {got[0]})"
            elif not facts.mapping_error:
                facts.mapping_error = "the gateway did not answer the PCP mapping request"
    except OSError as exc:
        facts.mapping_error = f"cannot reach the gateway {gw}: {exc.strerror or exc}"
    return facts.mapping


async def release_mapping(facts: PortMapFacts, mapping: Mapping, *, timeout: float = 1.0) -> bool:
    """Give a mapping back (lifetime 0); whether the gateway confirmed it."""
    gw = facts.gateway
    try:
        if mapping.protocol == "natpmp":
            got = await _exchange(gw, lambda _ip: natpmp_map_request(mapping.internal_port, 0, 0),
                                  lambda d: parse_natpmp_map(d, mapping.internal_port), timeout)
        else:
            got = await _exchange(gw, lambda ip: pcp_map_request(ip, mapping.internal_port, 0, mapping.nonce),
                                  lambda d: parse_pcp_map(d, mapping.nonce, mapping.internal_port), timeout)
    except OSError:
        got = None
    mapping.released = got is not None and got[0] == 0
    return mapping.released


def _msearch(st: str) -> bytes:
    return ("M-SEARCH * HTTP/1.1\r\n"
            f"HOST: {SSDP_GROUP[0]}:{SSDP_GROUP[1]}\r\n"
            'MAN: "ssdp:discover"\r\n'
            "MX: 1\r\n"
            f"ST: {st}\r\n"
            "USER-AGENT: dattui-doctor\r\n\r\n").encode()


def _headers(data: bytes) -> dict[str, str] | None:
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    if not lines or not lines[0].upper().startswith("HTTP/1.1 200"):
        return None
    out = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip().upper()] = v.strip()
    return out


async def upnp_search(local_ips: list[str], facts: PortMapFacts, timeout: float = 1.5) -> None:
    """SSDP M-SEARCH for an IGD from each local IPv4 address."""
    loop = asyncio.get_running_loop()
    if not local_ips:
        return
    socks = []
    got: asyncio.Future = loop.create_future()

    def reader(s: socket.socket) -> None:
        for _ in range(32):
            try:
                data, addr = s.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            h = _headers(data)
            if h is None:
                continue
            st = h.get("ST", "")
            if "InternetGatewayDevice" in st or "WANIPConnection" in st or "WANPPPConnection" in st:
                if not got.done():
                    got.set_result((addr[0], h.get("LOCATION"), h.get("SERVER")))

    try:
        for ip in local_ips:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            try:
                s.bind((ip, 0))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
            except OSError:
                s.close()
                continue
            socks.append(s)
            loop.add_reader(s.fileno(), reader, s)
        if not socks:
            return
        facts.upnp = False
        start = loop.time()
        for attempt in range(2):
            for s in socks:
                for st in _IGD_TYPES:
                    with contextlib.suppress(OSError):
                        s.sendto(_msearch(st), SSDP_GROUP)
            try:
                left = (timeout / 2) if attempt == 0 else timeout - (loop.time() - start)
                ip, location, server = await asyncio.wait_for(asyncio.shield(got), max(0.0, left))
                facts.upnp, facts.upnp_location, facts.upnp_server = True, location, server
                return
            except asyncio.TimeoutError:
                continue
    finally:
        for s in socks:
            with contextlib.suppress(Exception):
                loop.remove_reader(s.fileno())
            s.close()
        if not got.done():
            got.cancel()


async def port_mapping(local_ips: list[str], *, timeout: float = 1.5,
                       route_file: str = "/proc/net/route") -> PortMapFacts:
    facts = PortMapFacts(gateway=default_gateway(route_file))
    jobs = [upnp_search(local_ips, facts, timeout)]
    if facts.gateway is not None:
        jobs.append(probe_gateway(facts.gateway, facts, min(timeout, 1.0)))
    await asyncio.gather(*jobs, return_exceptions=True)
    return facts
