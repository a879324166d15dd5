"""NAT lab on top of netlab: an "internet", NAT routers of several kinds, peers.

Everything stays inside namespaces the Lab creates; the only addresses used are
203.0.113.0/24 and 198.51.100.0/24 on the internet (both on-link for every host
attached to it; .1 of each belongs to the core), 100.64.<index>.0/24 between a CGN
and a home router, and 10.<index>.0.0/24 behind NATs.  Nothing links to the root
namespace.

    with Lab() as lab:
        inet = build_internet(lab)                      # routed core, 4 hops
        rdv = inet.add_server("rdv", "203.0.113.10", "203.0.113.11")
        a = add_peer(lab, inet, NatKind.CONE, 1)       # a.host runs the peer
        b = add_peer(lab, inet, NatKind.SYMMETRIC, 2)
        a.host.popen([...])                             # reaches rdv via a.router
        a.cut(); a.restore(); a.change_address()

Topology per kind (``index`` = i; WAN addresses default to 203.0.113.(100+i)):

    PUBLIC      peer eth0 203.0.113.(100+i) directly on the internet (no router)
    CONE        peer 10.i.0.2 -- lan0 10.i.0.1 [router] eth0 WAN -- internet
                MASQUERADE + drop NEW inbound on WAN (INPUT and FORWARD)
    MASQ        same, bare MASQUERADE
    SYMMETRIC   same, MASQUERADE --random-fully
    UDP_BLOCKED same, MASQUERADE + all forwarded UDP dropped (TCP passes)
    DOUBLE      peer 10.i.0.2 -- [home: CONE] 100.64.i.2 -- 100.64.i.1 [cgn: MASQ] WAN
    SAME_NAT    add_peers_same_nat(): peers 10.i.0.2 and 10.i.0.3 behind one CONE router
    FULL_CONE   add_full_cone_peer(): MASQUERADE out, every UDP datagram to the WAN address
                forwarded to the peer at the same port (endpoint-independent filtering),
                with hairpinning by default

The internet is by default a routed core (see ``Internet``): packets between two
internet hosts cross ``hops`` (4) router hops, so low-TTL punch probes behave as on
the real internet.  ``build_internet(lab, routed=False)`` gives a plain bridge.

Each router's LAN side is a bridge ``lan0`` (10.i.0.1/24) with one veth port per
peer, so several peers can share a NAT and ``cut()`` affects only one peer.
Bridge netfilter is switched off in bridge-holding namespaces so bridged traffic
never meets iptables.  No hairpinning: a packet from the LAN to the router's own
WAN address is delivered to the router itself (nothing DNATs it back).

Measured here (tests/test_natlab.py): CONE/MASQ/DOUBLE map endpoint-independently
with port preservation, SYMMETRIC per destination; CONE<->CONE punching always
works; bare MASQUERADE (MASQ, and the CGN of DOUBLE) moves the local mapping to
another port when the far peer's probe arrives first, so plain punching with a
MASQ/DOUBLE side is a race, but a first probe with TTL 3 (opens the sender's NATs,
dies in the core) makes MASQ<->MASQ, DOUBLE<->DOUBLE, DOUBLE<->MASQ reliable.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
from dataclasses import dataclass, field

from netlab import Host, Lab, NetlabError, Segment, _need, _run

__all__ = ["NatKind", "Internet", "Peer", "build_internet", "add_peer", "add_peers_same_nat",
           "add_full_cone_peer", "INTERNET_PREFIXES"]

INTERNET_PREFIXES = ("203.0.113.0/24", "198.51.100.0/24")
_INET_NET = ipaddress.ip_network("203.0.113.0/24")


class NatKind(enum.Enum):
    PUBLIC = "public"            # no NAT, directly on the internet
    CONE = "cone"                # port-restricted cone: MASQUERADE + drop unsolicited inbound
    MASQ = "masq"                # bare MASQUERADE
    SYMMETRIC = "symmetric"      # MASQUERADE --random-fully (mapping varies by destination)
    UDP_BLOCKED = "udp_blocked"  # MASQUERADE + all forwarded UDP dropped, TCP allowed
    DOUBLE = "double"            # home NAT (CONE) behind a carrier-grade NAT (MASQ)
    SAME_NAT = "same_nat"        # two peers behind one CONE NAT (add_peers_same_nat)
    FULL_CONE = "full_cone"      # endpoint-independent filtering (add_full_cone_peer only)


# -- small helpers ---------------------------------------------------------------
def _ipt(host: Host, *args: str) -> None:
    _need("iptables")
    _run(["ip", "netns", "exec", host.ns, "iptables", *args])


def _no_bridge_netfilter(host: Host) -> None:
    # New namespaces default to bridge-nf-call-iptables=1 when br_netfilter is loaded:
    # bridged frames would then traverse this namespace's iptables.  Turn that off.
    for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"):
        _run(["ip", "netns", "exec", host.ns, "sysctl", "-q", "-w", f"net.bridge.{key}=0"],
             check=False)


def flush_conntrack(host: Host) -> None:
    """Forget every conntrack entry (NAT mappings included) in ``host``'s namespace."""
    _need("conntrack")
    # exit status 1 just means "table was empty" on some versions
    _run(["ip", "netns", "exec", host.ns, "conntrack", "-F"], check=False)


def _onlink_internet(host: Host, ifname: str) -> None:
    """Both internet prefixes on-link through ``ifname`` (one L2 segment carries both)."""
    for pfx in INTERNET_PREFIXES:
        _run(["ip", "-n", host.ns, "route", "replace", pfx, "dev", ifname])


def _add_lan_bridge(lab: Lab, router: Host, ip: str, prefix: int = 24) -> str:
    _run(["ip", "-n", router.ns, "link", "add", "lan0", "type", "bridge"])
    router.ifaces["lan0"] = ""
    lab._addr_up(router, "lan0", ip, prefix)
    _no_bridge_netfilter(router)
    return "lan0"


def _attach_lan(lab: Lab, router: Host, peer: Host, peer_ip: str, gateway: str,
                mtu: int = 1500) -> tuple[str, str]:
    """veth peer<->router, router end enslaved to lan0; returns (peer_if, router_port)."""
    n = sum(1 for i in router.ifaces if i.startswith("lp"))
    port = f"lp{n}"
    pif = peer._next_ifname()
    lab._veth(peer, pif, router, port, mtu)
    _run(["ip", "-n", router.ns, "link", "set", port, "master", "lan0", "up"])
    lab._addr_up(peer, pif, peer_ip, 24)
    peer.add_route("default", via=gateway)
    return pif, port


def _renumber(host: Host, ifname: str, old_ip: str, new_ip: str, prefix: int = 24) -> None:
    """Replace ``old_ip`` by ``new_ip`` on ``ifname`` (add first, so routes on the device
    survive; promote_secondaries so dropping the old primary keeps the new one)."""
    _run(["ip", "netns", "exec", host.ns, "sysctl", "-q", "-w",
          f"net.ipv4.conf.{ifname}.promote_secondaries=1"])
    _run(["ip", "-n", host.ns, "addr", "add", f"{new_ip}/{prefix}", "dev", ifname])
    _run(["ip", "-n", host.ns, "addr", "del", f"{old_ip}/{prefix}", "dev", ifname])
    host.ifaces[ifname] = f"{new_ip}/{prefix}"


# -- the internet ------------------------------------------------------------------
@dataclass
class Internet:
    """The internet: one namespace every server, PUBLIC peer and NAT WAN plugs into.

    routed (default): the namespace is a core router.  Each attached host gets its
    own veth port; the core holds a /32 route per address and answers ARP for every
    other internet address (proxy ARP), so hosts still see 203.0.113.0/24 and
    198.51.100.0/24 as on-link, but each packet between two of them crosses
    ``hops`` router hops (TTL decremented by ``hops``, ICMP time exceeded from
    203.0.113.1).  This is what makes low-TTL punch probes meaningful: a probe
    with TTL n (own NATs + 1 <= n <= own NATs + hops) opens the sender's NAT
    mappings and dies in the core before reaching the far NAT.
    not routed: a plain bridge (``segment``): zero hops, every packet that leaves
    a NAT reaches the far NAT whatever its TTL.
    """

    lab: Lab
    host: Host                    # the core router / bridge namespace
    segment: Segment | None       # the bridge when not routed
    hops: int = 0
    servers: dict[str, Host] = field(default_factory=dict)
    used: set[str] = field(default_factory=lambda: {"203.0.113.1", "198.51.100.1"})
    ports: dict[str, str] = field(default_factory=dict)  # host ns -> port in self.host
    addrs: dict[str, list[str]] = field(default_factory=dict)  # host ns -> its addresses
    _portseq: itertools.count = field(default_factory=lambda: itertools.count(0), repr=False)

    @property
    def routed(self) -> bool:
        return self.segment is None

    def _claim(self, ip: str) -> str:
        ipaddress.ip_address(ip)
        if ip in self.used:
            raise NetlabError(f"{ip} is already used on the internet")
        if not any(ipaddress.ip_address(ip) in ipaddress.ip_network(p) for p in INTERNET_PREFIXES):
            raise NetlabError(f"{ip} is outside the internet prefixes {INTERNET_PREFIXES}")
        self.used.add(ip)
        return ip

    def alloc_ip(self, preferred: str | None = None, claim: bool = True) -> str:
        """A free 203.0.113.x address: ``preferred`` if free, else from .200 upwards
        (then anything free).  ``claim=False``: just pick it (attach() claims)."""
        pick = None
        if preferred and preferred not in self.used:
            pick = preferred
        else:
            for n in itertools.chain(range(200, 255), range(2, 200)):
                ip = str(_INET_NET.network_address + n)
                if ip not in self.used:
                    pick = ip
                    break
        if pick is None:
            raise NetlabError("internet out of addresses")
        return self._claim(pick) if claim else pick

    def attach(self, host: Host, ip: str, *extra_ips: str) -> str:
        """Plug ``host`` in with ``ip`` (+ extra addresses on the same interface);
        returns the host-side interface name."""
        return self._attach(host, ip, *extra_ips)[0]

    def _attach(self, host: Host, ip: str, *extra_ips: str) -> tuple[str, str]:
        for x in (ip, *extra_ips):
            self._claim(x)
        ifname = host._next_ifname()
        port = f"p{next(self._portseq)}"
        self.lab._veth(host, ifname, self.host, port, 1500)
        if self.routed:
            # answer ARP for every other address at once (proxy_delay defaults to 0.8 s)
            _run(["ip", "netns", "exec", self.host.ns, "sysctl", "-q", "-w",
                  f"net.ipv4.conf.{port}.proxy_arp=1", f"net.ipv4.neigh.{port}.proxy_delay=0"])
            _run(["ip", "-n", self.host.ns, "link", "set", port, "up"])
        else:
            _run(["ip", "-n", self.host.ns, "link", "set", port, "master", self.segment.bridge, "up"])
        self.lab._addr_up(host, ifname, ip, 24)
        for x in extra_ips:
            _run(["ip", "-n", host.ns, "addr", "add", f"{x}/24", "dev", ifname])
        _onlink_internet(host, ifname)
        self.ports[host.ns] = port
        self.addrs[host.ns] = [ip, *extra_ips]
        for x in (ip, *extra_ips):
            self._core_route(host, x)
        return ifname, port

    def _core_route(self, host: Host, ip: str, delete: bool = False) -> None:
        if self.routed:
            _run(["ip", "-n", self.host.ns, "route", "del" if delete else "replace", f"{ip}/32",
                  "dev", self.ports[host.ns]], check=not delete)

    def _readdress(self, host: Host, old: str, new: str) -> None:
        self._core_route(host, new)
        self._core_route(host, old, delete=True)
        self.addrs[host.ns] = [new if a == old else a for a in self.addrs[host.ns]]

    def _restore_routes(self, host: Host) -> None:
        """Re-add the core's /32 routes to ``host`` (the kernel drops them with the port)."""
        for ip in self.addrs.get(host.ns, []):
            self._core_route(host, ip)

    def add_server(self, name: str, ip: str, *extra_ips: str) -> Host:
        """A host with a public address (e.g. rendezvous at 203.0.113.10, and 203.0.113.11
        as a second address for mapping tests).  Addresses may be in 203.0.113.0/24 or
        198.51.100.0/24 (.1 of both belongs to the core).  A server bound to 0.0.0.0
        answers from its primary address: bind one socket per address when a NAT must
        see replies come from the address it sent to."""
        h = self.lab.add_host(name)
        self.attach(h, ip, *extra_ips)
        self.servers[name] = h
        return h


def build_internet(lab: Lab, name: str = "inet", *, routed: bool = True, hops: int = 4) -> Internet:
    """The internet namespace: a core router with ``hops`` hops (default), or with
    ``routed=False`` a plain L2 bridge (``Internet.segment``, zero hops)."""
    if not routed:
        seg = lab.add_bridge_segment(name)
        _no_bridge_netfilter(seg.host)
        return Internet(lab, seg.host, seg, hops=0)
    if hops < 1:
        raise ValueError("a routed internet has at least 1 hop")
    core = lab.add_router(name)
    _run(["ip", "-n", core.ns, "addr", "add", "203.0.113.1/32", "dev", "lo"])
    _run(["ip", "-n", core.ns, "addr", "add", "198.51.100.1/32", "dev", "lo"])
    if hops > 1:  # the forward path decrements 1; take the other hops-1 on the way in
        _ipt(core, "-t", "mangle", "-A", "PREROUTING", "-j", "TTL", "--ttl-dec", str(hops - 1))
    return Internet(lab, core, None, hops=hops)


# -- peers -------------------------------------------------------------------------
@dataclass
class Peer:
    host: Host                    # the peer's namespace
    kind: NatKind
    index: int
    internet: Internet
    router: Host | None           # the NAT the peer sits behind (home router for DOUBLE)
    cgn: Host | None = None       # DOUBLE only: the carrier-grade NAT
    ifname: str = "eth0"          # the peer's uplink interface
    # the far end of the peer's uplink (router lan0 port, or internet core/bridge port)
    _far: tuple[Host, str] | None = field(default=None, repr=False)
    # (outermost NAT or the PUBLIC peer itself, its internet-facing ifname)
    _wan: tuple[Host, str] | None = field(default=None, repr=False)

    @property
    def ip(self) -> str:
        """The peer's own address (its LAN address behind a NAT)."""
        return self.host.ifaces[self.ifname].split("/")[0]

    @property
    def public_ip(self) -> str:
        """The outermost NAT's WAN address (the peer's own address for PUBLIC)."""
        host, ifname = self._wan
        return host.ifaces[ifname].split("/")[0]

    @property
    def routers(self) -> list[Host]:
        """Every NAT on the path, innermost first."""
        return [r for r in (self.router, self.cgn) if r is not None]

    @property
    def gateway(self) -> str | None:
        return None if self.router is None else f"10.{self.index}.0.1"

    def flush_conntrack(self) -> None:
        """Forget all NAT mappings on this peer's routers (fresh mappings afterwards).
        For SAME_NAT peers this also flushes the other peer's mappings."""
        for r in self.routers:
            flush_conntrack(r)

    def cut(self) -> None:
        """Take the peer's uplink down at the far end (router LAN port, or its port on
        the internet for PUBLIC): its packets vanish silently (sendto does not fail);
        NAT state is kept, so restore() brings back the same mappings."""
        host, ifname = self._far
        _run(["ip", "-n", host.ns, "link", "set", ifname, "down"])

    def restore(self) -> None:
        host, ifname = self._far
        _run(["ip", "-n", host.ns, "link", "set", ifname, "up"])
        if host is self.internet.host:  # PUBLIC: the core forgot its routes to the peer
            self.internet._restore_routes(self.host)

    def change_address(self, new_public_ip: str | None = None, lan: bool = False) -> str:
        """Move the peer as if to another network: new public address, all NAT
        mappings flushed.  PUBLIC: the peer itself is renumbered.  Behind NATs: the
        outermost NAT's WAN address is renumbered and conntrack flushed on every NAT;
        with ``lan=True`` the peer's LAN address changes too (10.i.0.(N+10)).
        Sockets bound to 0.0.0.0 keep working; returns the new public ip.
        (SAME_NAT: both peers share the WAN, so both see the new public ip.)"""
        new = self.internet.alloc_ip(new_public_ip)
        wan_host, wan_if = self._wan
        old = self.public_ip
        _renumber(wan_host, wan_if, old, new)
        self.internet._readdress(wan_host, old, new)
        if self.router is not None:
            _onlink_internet(wan_host, wan_if)
            if lan:
                last = int(self.ip.rsplit(".", 1)[1])
                new_lan = f"10.{self.index}.0.{last + 10 if last + 10 < 255 else last - 10}"
                _renumber(self.host, self.ifname, self.ip, new_lan)
                self.host.add_route("default", via=self.gateway)
            self.flush_conntrack()
        return new


def _nat_rules(router: Host, kind: NatKind, wan: str, filter_inbound: bool) -> None:
    if kind is NatKind.SYMMETRIC:
        _ipt(router, "-t", "nat", "-A", "POSTROUTING", "-o", wan, "-j", "MASQUERADE",
             "--random-fully")
    else:
        _ipt(router, "-t", "nat", "-A", "POSTROUTING", "-o", wan, "-j", "MASQUERADE")
    if kind is NatKind.UDP_BLOCKED:
        _ipt(router, "-A", "FORWARD", "-o", wan, "-p", "udp", "-j", "DROP")
        _ipt(router, "-A", "FORWARD", "-i", wan, "-p", "udp", "-j", "DROP")
    if filter_inbound:
        # home-router policy: nothing unsolicited from the WAN, neither to the router
        # nor forwarded (dropped NEW packets never become conntrack entries, so they
        # cannot collide with the mapping the local peer opens later)
        _ipt(router, "-A", "INPUT", "-i", wan, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")
        _ipt(router, "-A", "FORWARD", "-i", wan, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")


def _check_index(index: int) -> None:
    if not 1 <= index <= 254:
        raise ValueError("peer index must be within 1..254 (LAN 10.<index>.0.0/24)")


def _wan_addr(internet: Internet, index: int, wan_ip: str | None) -> str:
    """``wan_ip`` if given (attach() raises if taken), else 203.0.113.(100+index) if
    free, else one from the pool."""
    if wan_ip:
        return wan_ip
    return internet.alloc_ip(f"203.0.113.{100 + index}" if index <= 99 else None, claim=False)


def _add_nat_router(lab: Lab, internet: Internet, kind: NatKind, index: int,
                    filter_inbound: bool, wan_ip: str | None,
                    name: str | None = None) -> tuple[Host, str]:
    """A NAT router on the internet with lan0 = 10.index.0.1/24; returns (router, wan_if)."""
    router = lab.add_router(name or f"nat{index}")
    wan_if = internet.attach(router, _wan_addr(internet, index, wan_ip))
    _add_lan_bridge(lab, router, f"10.{index}.0.1")
    _nat_rules(router, kind, wan_if, filter_inbound)
    return router, wan_if


def add_peer(lab: Lab, internet: Internet, kind: NatKind, index: int, *,
             filter_inbound: bool | None = None, wan_ip: str | None = None,
             name: str | None = None) -> Peer:
    """One peer of ``kind`` (for SAME_NAT use add_peers_same_nat).

    ``index`` (1..254) picks the LAN 10.<index>.0.0/24 (peer at .2, router at .1)
    and the default WAN / PUBLIC address 203.0.113.(100+index) (from the pool at
    .200+ if taken or if index > 99; ``wan_ip`` overrides).  ``filter_inbound``
    adds the home-router drop-unsolicited policy on the (outermost single / home)
    router; default True for CONE and DOUBLE's home router, False otherwise.
    """
    _check_index(index)
    name = name or f"peer{index}"
    if kind is NatKind.SAME_NAT:
        raise ValueError("SAME_NAT needs two peers: use add_peers_same_nat()")

    if kind is NatKind.PUBLIC:
        h = lab.add_host(name)
        ifname, port = internet._attach(h, _wan_addr(internet, index, wan_ip))
        return Peer(h, kind, index, internet, None, ifname=ifname,
                    _far=(internet.host, port), _wan=(h, ifname))

    if kind is NatKind.DOUBLE:
        cgn = lab.add_router(f"cgn{index}")
        cgn_wan = internet.attach(cgn, _wan_addr(internet, index, wan_ip))
        home = lab.add_router(f"home{index}")
        lk = lab.link(cgn, f"100.64.{index}.1", home, f"100.64.{index}.2")
        home.add_route("default", via=f"100.64.{index}.1")
        _nat_rules(cgn, NatKind.MASQ, cgn_wan, False)
        _add_lan_bridge(lab, home, f"10.{index}.0.1")
        _nat_rules(home, NatKind.CONE, lk.ifname_b,
                   True if filter_inbound is None else filter_inbound)
        h = lab.add_host(name)
        pif, port = _attach_lan(lab, home, h, f"10.{index}.0.2", f"10.{index}.0.1")
        return Peer(h, kind, index, internet, home, cgn=cgn, ifname=pif,
                    _far=(home, port), _wan=(cgn, cgn_wan))

    fi = (kind is NatKind.CONE) if filter_inbound is None else filter_inbound
    router, wan_if = _add_nat_router(lab, internet, kind, index, fi, wan_ip)
    h = lab.add_host(name)
    pif, port = _attach_lan(lab, router, h, f"10.{index}.0.2", f"10.{index}.0.1")
    return Peer(h, kind, index, internet, router, ifname=pif,
                _far=(router, port), _wan=(router, wan_if))


def add_peers_same_nat(lab: Lab, internet: Internet, index: int, *,
                       filter_inbound: bool = True, wan_ip: str | None = None) -> tuple[Peer, Peer]:
    """Two peers (10.i.0.2 and 10.i.0.3, kind SAME_NAT) behind one CONE NAT, no hairpin."""
    _check_index(index)
    router, wan_if = _add_nat_router(lab, internet, NatKind.CONE, index, filter_inbound, wan_ip)
    peers = []
    for k, last in enumerate((2, 3)):
        h = lab.add_host(f"peer{index}{'ab'[k]}")
        pif, port = _attach_lan(lab, router, h, f"10.{index}.0.{last}", f"10.{index}.0.1")
        peers.append(Peer(h, NatKind.SAME_NAT, index, internet, router, ifname=pif,
                          _far=(router, port), _wan=(router, wan_if)))
    return peers[0], peers[1]


def add_full_cone_peer(lab: Lab, internet: Internet, index: int, *, hairpin: bool = True,
                       wan_ip: str | None = None, name: str | None = None) -> Peer:
    """One peer (10.<index>.0.2) behind a full-cone NAT: MASQUERADE out (port
    preserving, endpoint-independent mapping) and every UDP datagram that reaches
    the WAN address unsolicited forwarded to the peer at the same port (a DNAT of
    all inbound UDP, the "DMZ host" of home routers): endpoint-independent
    filtering. ``hairpin``: a datagram the peer sends to the WAN address comes
    back to it (DNAT on the LAN side, then MASQUERADE to the router's LAN address).
    Not one of the kinds ``add_peer`` builds."""
    _check_index(index)
    router, wan_if = _add_nat_router(lab, internet, NatKind.MASQ, index, False, wan_ip)
    peer_ip = f"10.{index}.0.2"
    wan = router.ifaces[wan_if].split("/")[0]
    _ipt(router, "-t", "nat", "-A", "PREROUTING", "-i", wan_if, "-p", "udp", "-j", "DNAT",
         "--to-destination", peer_ip)
    if hairpin:
        _ipt(router, "-t", "nat", "-A", "PREROUTING", "-i", "lan0", "-d", wan, "-p", "udp", "-j", "DNAT",
             "--to-destination", peer_ip)
        _ipt(router, "-t", "nat", "-A", "POSTROUTING", "-o", "lan0", "-s", f"10.{index}.0.0/24",
             "-d", peer_ip, "-p", "udp", "-j", "MASQUERADE")
    h = lab.add_host(name or f"peer{index}")
    pif, port = _attach_lan(lab, router, h, peer_ip, f"10.{index}.0.1")
    return Peer(h, NatKind.FULL_CONE, index, internet, router, ifname=pif,
                _far=(router, port), _wan=(router, wan_if))
