"""From measured facts to classifications and a verdict in plain words.

Pure functions over `Facts` (filled in by `engine.doctor`): no sockets, no
clock, so every branch is unit-testable.

NAT mapping (RFC 4787 terms, as RFC 5780 measures them):

- "none": the address the servers see is one of this machine's own, with
  the same port: nothing translates;
- "endpoint-independent": two server addresses see the same public address
  and port (one mapping for every destination: hole punching works);
- "endpoint-dependent": they see different ones (a new mapping per
  destination, a "symmetric" NAT: peers cannot predict our port);
- "unknown": fewer than two server addresses answered.

Filtering (RFC 5780 section 4.4, from a socket that has sent to one server
address only, with a server that answers CHANGE-REQUEST from its other
sockets): "endpoint-independent" when an answer from the other IP address
and port gets in (test II; only a server with a second IP address, shown by
OTHER-ADDRESS, can send it), "address-dependent" when only one from the
same address and another port does (test III), "address-and-port-dependent"
when that one does not get in either, "none" when there is no NAT and test
II gets through (no firewall either), "unknown" otherwise (no server could
change its address, or only test III was possible and it got through: then
endpoint-independent and address-dependent cannot be told apart).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..netinfo import is_private
from .portmap import PortMapFacts
from .probes import Address, DhtFacts, RelayFacts, StunAnswer

__all__ = [
    "NONE",
    "EI",
    "ED",
    "UNKNOWN",
    "AD",
    "APD",
    "ServerResult",
    "Facts",
    "Verdict",
    "classify_mapping",
    "classify_filtering",
    "port_preserved",
    "verdict",
    "hostport",
]

NONE = "none"
EI = "endpoint-independent"
ED = "endpoint-dependent"
UNKNOWN = "unknown"
AD = "address-dependent"
APD = "address-and-port-dependent"


def hostport(addr: Address | None) -> str:
    if addr is None:
        return "?"
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class ServerResult:
    """One configured rendezvous or STUN server address."""

    address: str                      # as configured, "host:port"
    role: str                         # "rendezvous" or "stun"
    resolved: Address | None = None
    answer: StunAnswer | None = None
    error: str = ""                   # why it was not asked or did not answer

    @property
    def ok(self) -> bool:
        return self.answer is not None and self.answer.ok


@dataclass
class Facts:
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)
    port: int | None = None           # the node's port
    port_free: bool | None = None
    port_note: str = ""
    local_port: int | None = None     # the port the NAT tests were sent from
    servers: list[ServerResult] = field(default_factory=list)
    mapping: str = UNKNOWN
    mapping_reason: str = ""
    filtering: str = UNKNOWN
    filtering_reason: str = ""
    hairpin: bool | None = None
    port_preservation: bool | None = None
    relay_address: str | None = None  # the server the engine meets peers and relays through
    relay: RelayFacts | None = None
    dht_enabled: bool = False
    dht: DhtFacts | None = None
    portmap: PortMapFacts | None = None
    unfinished: list[str] = field(default_factory=list)

    @property
    def has_address(self) -> bool:
        return bool(self.ipv4 or self.ipv6)

    @property
    def udp(self) -> bool | None:
        """Whether UDP gets out: any server answered STUN (None: none to ask)."""
        asked = [s for s in self.servers if s.resolved is not None or s.error]
        if not asked:
            return None if self.has_address else False
        return any(s.ok for s in self.servers)

    @property
    def no_route(self) -> bool:
        """Every send failed at once for want of a route."""
        tried = [s for s in self.servers if s.answer is not None]
        return bool(tried) and all(s.answer.no_route for s in tried)

    @property
    def mappings(self) -> list[tuple[str, Address]]:
        return [(s.address, s.answer.mapped) for s in self.servers if s.ok]

    @property
    def public_addresses(self) -> list[str]:
        out: list[str] = []
        for _, m in self.mappings:
            if m[0] not in out:
                out.append(m[0])
        if self.dht and self.dht.external and self.dht.external[0] not in out:
            out.append(self.dht.external[0])
        if self.portmap and self.portmap.natpmp_external and self.portmap.natpmp_external not in out:
            out.append(self.portmap.natpmp_external)
        return out


def _private(ip: str) -> bool:
    """A local network's address (RFC 1918, loopback, link-local, ULA) or carrier-grade NAT space."""
    if is_private(ip):
        return True
    try:
        return ipaddress.ip_address(ip) in _CGNAT
    except ValueError:
        return False


_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def classify_mapping(local_port: int | None, local_ips: list[str],
                     seen: list[tuple[Address, Address]]) -> tuple[str, str]:
    """(mapping, reason) from (server, mapped address) pairs, all from one socket."""
    if not seen:
        return UNKNOWN, "no server answered"
    mapped = [m for _, m in seen]
    first = mapped[0]
    if all(m == first for m in mapped) and first[0] in local_ips and first[1] == local_port:
        return NONE, f"the servers see this machine's own address {hostport(first)}"
    servers = {s for s, _ in seen}
    if len(servers) < 2:
        return UNKNOWN, (f"only one server address answered ({hostport(seen[0][0])}): two are needed "
                         "to compare the mappings")
    if all(m == first for m in mapped):
        return EI, f"{len(servers)} server addresses all see {hostport(first)}"
    return ED, "different server addresses see different public ports: " + ", ".join(
        f"{hostport(s)} sees {hostport(m)}" for s, m in seen)


def classify_filtering(change_both: bool | None, change_port: bool | None,
                       mapping: str | None = None) -> str:
    """RFC 5780 tests II (answer from the other address and port) and III
    (answer from the same address, other port): True got in, False did not,
    None not tested. `mapping` NONE (no NAT) makes an open result "none"."""
    if change_both:
        return NONE if mapping == NONE else EI
    if change_port is False:
        return APD
    if change_both is False and change_port:
        return AD
    return UNKNOWN


def port_preserved(local_port: int | None, seen: list[Address]) -> bool | None:
    if local_port is None or not seen:
        return None
    return all(m[1] == local_port for m in seen)


@dataclass(frozen=True)
class Verdict:
    kind: str          # direct | relay | tcp_relay | unknown | no_servers | unreachable | no_network
    ok: bool | None
    summary: str
    steps: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"kind": self.kind, "ok": self.ok, "summary": self.summary, "steps": list(self.steps)}


WHERE_FROM = ("a rendezvous server is small and anyone can run one: `dattui rendezvous` on any machine "
              "with a public address (a lab or department server, a small cloud VM) that lets UDP and "
              "TCP port 3478 in (and UDP 3479, for NAT tests); then --rendezvous THAT-HOST:3478 on both "
              "machines")


def verdict(f: Facts) -> Verdict:
    """The overall judgement and what to do about it."""
    relay = f.relay
    relay_at = f.relay_address or "the rendezvous server"
    udp = f.udp
    if not f.has_address:
        return Verdict("no_network", False, "no network at all: no network interface has an address",
                       ("connect this machine to a network (cable, Wi-Fi or VPN), then run "
                        "`dattui doctor` again",))
    tcp_ok = bool(relay and relay.tcp)
    if f.servers and not udp and not tcp_ok and f.no_route:
        return Verdict("no_network", False,
                       "no network at all: this machine has an address but no route leads out of it",
                       ("check the network connection (is there a default gateway?) and run "
                        "`dattui doctor` again",
                        "peers on this local network can still be reached: they are found by "
                        "multicast or with --peer HOST:PORT"))
    if not f.servers:
        steps = ["add a rendezvous server with --rendezvous HOST:PORT (or `rendezvous` in the "
                 "[discovery] section of config.toml): it tells you your public address, helps "
                 "peers punch through NATs and relays when nothing else works",
                 WHERE_FROM,
                 "`dattui doctor --for-it` prints what to ask your network team to allow"]
        dht = f.dht
        if f.dht_enabled and dht is not None and dht.answered:
            summary = ("no rendezvous server is configured: peers on this local network and peers "
                       "found through the DHT can connect, but whether those behind other NATs can "
                       "reach you could not be tested")
        else:
            summary = ("no rendezvous server is configured: only peers on this local network (or "
                       "given with --peer HOST:PORT) can be reached, and the NAT could not be tested")
        return Verdict("no_servers", None, summary, tuple(steps))
    if not udp and not tcp_ok:
        names = ", ".join(s.address for s in f.servers)
        return Verdict(
            "unreachable", False,
            f"no server answers, over UDP or TCP ({names}): this network lets nothing out to them, "
            "or they are down",
            (f"check the address ({names}) and that the server runs there (`dattui rendezvous`, "
             f"with UDP and TCP port {f.servers[0].address.rsplit(':', 1)[-1]} open to it)",
             "try from another network (a phone hotspot): if it works there, this network blocks "
             f"outbound traffic: ask your network team to allow UDP and TCP to {relay_at} "
             "(`dattui doctor --for-it` prints the exact list to send them)",
             WHERE_FROM,
             "peers on this local network can still be reached"))
    if not udp and tcp_ok:
        return Verdict(
            "tcp_relay", False,
            f"UDP is blocked here: transfers will go through the TCP relay at {relay_at}; "
            "ask your network team to allow outbound UDP",
            ("transfers work now, but slower: every byte takes a detour through the relay "
             "(and its operator may limit its rate)",
             "ask your network team to allow outbound UDP (to the rendezvous server on port "
             f"{relay_at.rsplit(':', 1)[-1]} and to peers on any port); then direct connections can work; "
             "`dattui doctor --for-it` prints the exact list to send them",
             "peers on this local network are still reached directly"))
    relay_note = []
    if relay is not None and not relay.udp and not relay.tcp:
        relay_note.append(f"the relay at {relay_at} does not answer: peers that cannot connect "
                          "directly will not reach you at all; check that it runs `dattui rendezvous`")
    mapping = f.mapping
    if mapping == NONE:
        pub = f.public_addresses[0] if f.public_addresses else "?"
        steps = [f"others connect straight to {pub}"]
        if f.filtering in (APD, AD):
            steps.append("a firewall drops unsolicited packets: if peers cannot connect, allow "
                         f"UDP port {f.local_port or f.port} in")
        if _private(pub):
            return Verdict("direct", True,
                           "direct connections will work with peers on this network: no NAT between "
                           f"this machine and the servers (they see {pub}, a private address)",
                           tuple(["peers beyond this network meet whatever NAT leads out of it: run "
                                  "`dattui doctor` with a server on the internet to test it"]
                                 + steps[1:] + relay_note))
        return Verdict("direct", True,
                       f"direct connections will work: this machine has a public address ({pub})",
                       tuple(steps + relay_note))
    if mapping == EI:
        if f.filtering == EI:
            first = ("your NAT lets unsolicited packets in on that port: peers behind any kind of "
                     "NAT reach you directly")
        else:
            first = ("peers behind a NAT that changes ports per destination may still need the relay "
                     f"at {relay_at}")
        return Verdict(
            "direct", True,
            "direct connections will work: your NAT keeps one public port for every destination, "
            "so hole punching gets through",
            tuple([first] + relay_note))
    if mapping == ED:
        steps = [f"transfers still work: they go through the relay at {relay_at} (slower, "
                 "as fast as its operator allows), or a punched path when the other side's NAT is simple",
                 "for direct connections: forward a UDP port to this machine on the router (use "
                 "it with --port), or use a network whose NAT keeps one port per socket"]
        if f.portmap and f.portmap.mapping is not None:
            steps.append("the router maps ports on request (tested above): a port forward of UDP "
                         f"port {f.portmap.mapping.internal_port} made there lets peers in directly; "
                         "dattui does not keep a mapping yet")
        elif f.portmap and f.portmap.any:
            steps.append("the router offers port mapping (see above), but dattui does not "
                         "request mappings yet")
        return Verdict(
            "relay", False,
            "others can reach you only through a relay: your NAT gives every destination a new "
            "public port, so peers cannot aim a direct connection at you",
            tuple(steps + relay_note))
    return Verdict(
        "unknown", None,
        "UDP gets out, but whether peers can connect directly could not be told: "
        + (f.mapping_reason or "the NAT could not be classified"),
        tuple(["give two server addresses (for example two addresses of one rendezvous "
               "server, each with --rendezvous) so the NAT can be tested"] + relay_note))
