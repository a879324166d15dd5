"""Connectivity checks (`dattui doctor`), as a stream of results, not printed text.

    async for result in run_checks(DoctorOptions(rendezvous=("203.0.113.10:3478",))):
        ...                                  # CheckResult(name, ok, summary, detail, advice)
    obj = await report(options)              # the --json object, checks included

The checks, each under its own timeout, the network ones concurrently (so
the whole run stays within `deadline`, 14 s by default, even with no network
at all: a check still running then is reported as unfinished):

- ``local_addresses``, ``port`` (is the node's UDP port free), ``lan``;
- ``udp:HOST:PORT`` per configured rendezvous/STUN server: a STUN Binding
  request (sent 3 times, 0.5 s apart, answered within 2 s);
- ``public_address``, ``nat_mapping`` (same public address and port towards
  two server addresses or not), ``nat_filtering`` (RFC 5780 CHANGE-REQUEST
  from a fresh socket: answers from the server's other IP address and port,
  then from its other port), ``port_preservation``, ``hairpin`` (a datagram
  to our own public address);
- ``relay_udp``, ``relay_tcp``: REGISTER with the first rendezvous server
  (the one the engine meets peers and relays through) over UDP and over TCP,
  and one message relayed between the two registrations;
- ``port_mapping``: UPnP-IGD (SSDP on the LAN), NAT-PMP and PCP (the default
  gateway's port 5351); with NAT-PMP or PCP, a mapping of the node's UDP port
  is requested for a minute and released at once (the daemon asks only when
  LAN discovery is on);
- ``dht`` (only when the DHT is enabled): bootstrap and routing-table size;
- ``verdict``: the judgement in plain words, the steps to take as advice.

Nothing is sent anywhere but to the configured servers, the DHT bootstrap
nodes (when the DHT is on), the default gateway and the LAN multicast group.
The classification rules are pure functions in `doctor_checks.verdict`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from . import netinfo
from .daemon.interface import CheckResult
from .discovery.static import parse_hostport
from .doctor_checks import portmap, probes
from .doctor_checks.verdict import (AD, APD, ED, EI, NONE, UNKNOWN, Facts, ServerResult, Verdict,
                                    classify_filtering, classify_mapping, hostport, port_preserved,
                                    verdict)
from .errors import UsageError

__all__ = ["DoctorOptions", "Doctor", "run_checks", "report", "check_dict"]

DEFAULT_NODE_PORT = 3282
RDV_DEFAULT_PORT = 3478


@dataclass(frozen=True)
class DoctorOptions:
    rendezvous: tuple[str, ...] = ()      # "host:port": meeting points; the first one relays
    stun: tuple[str, ...] = ()            # extra STUN-only servers for the NAT tests
    host: str = "0.0.0.0"
    port: int = DEFAULT_NODE_PORT         # the node's UDP port
    node_running: bool = False            # the node already listens on `port` (the daemon)
    lan: bool = True
    dht: bool = False
    dht_bootstrap: tuple[str, ...] = ()
    port_mapping: bool = True
    stun_timeout: float = 2.0
    relay_timeout: float = 3.0
    dht_timeout: float = 6.0
    deadline: float = 14.0                # the whole run, verdict excluded

    @classmethod
    def from_engine_options(cls, eo, *, node_port: int | None = None) -> "DoctorOptions":
        """Options matching an engine's (`engine.api.EngineOptions`); `node_port`:
        the port a running node holds."""
        return cls(rendezvous=tuple(eo.rendezvous), host=eo.host,
                   port=node_port if node_port else eo.port, node_running=bool(node_port),
                   lan=eo.lan, dht=eo.dht, dht_bootstrap=tuple(eo.dht_bootstrap),
                   port_mapping=eo.lan)  # gateway probes are LAN traffic: only when LAN is on


def check_dict(r: CheckResult) -> dict:
    return {"name": r.name, "ok": r.ok, "summary": r.summary, "detail": r.detail, "advice": r.advice}


_DONE = object()


class Doctor:
    """One run of the checks; `facts` fill in as they finish, `report()` at the end."""

    def __init__(self, options: DoctorOptions) -> None:
        self.options = options
        self.facts = Facts(port=options.port, dht_enabled=options.dht)
        self.checks: list[CheckResult] = []
        self.verdict: Verdict | None = None
        self.seconds = 0.0
        self._stun_sock: socket.socket | None = None
        self._own_ips: list[str] = []

    # -- the stream ------------------------------------------------------------------------
    async def run(self) -> AsyncIterator[CheckResult]:
        start = time.monotonic()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        tasks: dict[asyncio.Task, str] = {}
        try:
            for r in self._local():
                self.checks.append(r)
                yield r
            groups = [(self._nat_group(queue), "nat")]
            if self.options.rendezvous:
                groups.append((self._relay_group(queue), "relay"))
            if self.options.port_mapping and self.facts.ipv4:
                groups.append((self._portmap_group(queue), "port_mapping"))
            if self.options.dht:
                groups.append((self._dht_group(queue), "dht"))
            for coro, name in groups:
                tasks[loop.create_task(self._guard(coro, queue, name))] = name
            pending = len(tasks)
            deadline = start + self.options.deadline
            while pending:
                left = deadline - time.monotonic()
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.0, left))
                except asyncio.TimeoutError:
                    break
                if item is _DONE:
                    pending -= 1
                    continue
                self.checks.append(item)
                yield item
            for t, name in tasks.items():
                if not t.done():
                    t.cancel()
                    self.facts.unfinished.append(name)
                    r = CheckResult(name, None, f"the {name.replace('_', ' ')} checks did not finish "
                                    f"within {self.options.deadline:g} s")
                    self.checks.append(r)
                    yield r
            while not queue.empty():  # finished in the last instant
                item = queue.get_nowait()
                if item is not _DONE:
                    self.checks.append(item)
                    yield item
            self.verdict = verdict(self.facts)
            v = self.verdict
            r = CheckResult("verdict", v.ok, v.summary, advice="\n".join(v.steps))
            self.checks.append(r)
            self.seconds = time.monotonic() - start
            yield r
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if self._stun_sock is not None:
                self._stun_sock.close()
                self._stun_sock = None

    async def _guard(self, coro, queue: asyncio.Queue, name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a check's bug must not end the others: report it
            queue.put_nowait(CheckResult(name, None, f"the {name.replace('_', ' ')} check failed: {exc!r}"))
        finally:
            queue.put_nowait(_DONE)

    # -- this machine ----------------------------------------------------------------------
    def _local(self) -> list[CheckResult]:
        f, o = self.facts, self.options
        out = []
        every = [i for i in netinfo.local_addresses() if i.up]
        self._own_ips = [a for i in every for a in i.ipv4]  # loopback too: 127.0.0.1 is no NAT
        ifaces = [i for i in every if not i.is_loopback]
        f.ipv4 = [a for i in ifaces for a in i.ipv4]
        f.ipv6 = [a for i in ifaces for a in i.ipv6 if not a.lower().startswith("fe80")]
        link_local = [a for i in ifaces for a in i.ipv6 if a.lower().startswith("fe80")]
        if f.ipv4 or f.ipv6:
            private = [a for a in f.ipv4 if netinfo.is_private(a)]
            detail = (f"IPv4: {', '.join(f.ipv4) or 'none'}; IPv6: {', '.join(f.ipv6) or 'none'}"
                      + (f" (link-local only: {', '.join(link_local)})" if link_local and not f.ipv6 else ""))
            note = ""
            if f.ipv4 and len(private) == len(f.ipv4):
                note = " (private: the internet sees this machine through a NAT)"
            out.append(CheckResult("local_addresses", True,
                                   f"local addresses: {', '.join(f.ipv4 + f.ipv6)}{note}", detail))
        else:
            out.append(CheckResult("local_addresses", False,
                                   "no network interface has an address: no network at all",
                                   advice="connect this machine to a network (cable, Wi-Fi or VPN)"))
        out.append(self._port_check())
        mc = [i.name for i in ifaces if i.multicast and i.ipv4]
        if not o.lan:
            out.append(CheckResult("lan", None, "looking for peers on the local network is off (--no-lan)"))
        elif mc:
            out.append(CheckResult("lan", True, f"peers on the local network can be found on {', '.join(mc)}"))
        else:
            out.append(CheckResult("lan", False, "no interface can reach the local network by multicast",
                                   advice="use --peer HOST:PORT to connect to a known address"))
        out.append(_aioquic_check())
        return out

    def _port_check(self) -> CheckResult:
        f, o = self.facts, self.options
        if o.node_running:
            f.port_free = None
            return CheckResult("port", True, f"dattui listens on UDP port {o.port}")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((o.host, o.port))
        except OSError as exc:
            s.close()
            f.port_free = False
            f.port_note = probes.describe_oserror(exc)
            return CheckResult("port", None, f"UDP port {o.port} is taken: dattui will use the next free one",
                               detail=f.port_note,
                               advice="another dattui (the background daemon?) may hold it; "
                                      "`dattui stop` ends the daemon")
        f.port_free = True
        self._stun_sock = s  # the NAT tests go out from the node's own port
        return CheckResult("port", True, f"UDP port {o.port} is free")

    # -- servers, NAT ------------------------------------------------------------------------
    async def _resolve_servers(self) -> None:
        o = self.options
        entries = [(a, "rendezvous") for a in o.rendezvous] + [(a, "stun") for a in o.stun]
        results = []
        for text, role in entries:
            try:
                host, port = parse_hostport(text, RDV_DEFAULT_PORT)
            except UsageError as exc:
                results.append(ServerResult(text, role, error=str(exc)))
                continue
            results.append(ServerResult(hostport((host, port)), role, resolved=(host, port)))

        async def one(s: ServerResult) -> None:
            if s.resolved is None:
                return
            host, port = s.resolved
            try:
                s.resolved = await probes.resolve(host, port, timeout=2.0)
            except (OSError, asyncio.TimeoutError) as exc:
                s.resolved = None
                s.error = (f"the name {host} does not resolve ("
                           + ("no answer from DNS" if isinstance(exc, asyncio.TimeoutError)
                              else probes.describe_oserror(exc)) + ")")

        await asyncio.gather(*(one(s) for s in results))
        self.facts.servers = results

    async def _nat_group(self, queue: asyncio.Queue) -> None:
        f, o = self.facts, self.options
        put = queue.put_nowait
        await self._resolve_servers()
        if not f.servers:
            put(CheckResult("udp", None, "no rendezvous or STUN server is configured: UDP to the "
                            "internet and the NAT were not tested",
                            advice="give one with --rendezvous HOST:PORT (two addresses of one server "
                                   "also classify the NAT)"))
            return
        loop = asyncio.get_running_loop()
        sock, self._stun_sock = self._stun_sock, None
        try:
            probe = probes.UdpProbe(loop=loop, sock=sock)
        except OSError:
            probe = probes.UdpProbe(o.host if ":" not in o.host else "0.0.0.0", 0, loop=loop)
        f.local_port = probe.port
        try:
            targets = [s for s in f.servers if s.resolved is not None]
            answers = await asyncio.gather(*(probes.stun_binding(probe, s.resolved, timeout=o.stun_timeout)
                                             for s in targets))
            for s, a in zip(targets, answers):
                s.answer = a
            for s in f.servers:
                put(self._udp_result(s))
            seen = [(s.resolved, s.answer.mapped) for s in f.servers if s.ok]
            f.mapping, f.mapping_reason = classify_mapping(f.local_port, self._own_ips, seen)
            f.port_preservation = port_preserved(f.local_port, [m for _, m in seen])
            put(self._public_result())
            put(self._mapping_result())
            if not seen:
                return
            put(self._preservation_result(seen))
            hp, filt = await asyncio.gather(probes.hairpin(probe, seen[0][1]), self._filtering(probe))
            f.hairpin = hp
            put(self._hairpin_result(seen[0][1]))
            put(filt)
        finally:
            probe.close()

    def _udp_result(self, s: ServerResult) -> CheckResult:
        name = f"udp:{s.address}"
        role = "rendezvous server" if s.role == "rendezvous" else "STUN server"
        if s.resolved is None:
            return CheckResult(name, False, f"the {role} {s.address} was not asked: {s.error}",
                               advice="check the name, or give the server's IP address")
        a = s.answer
        if a is not None and a.ok:
            detail = f"it sees us at {hostport(a.mapped)}"
            if a.source and a.source != s.resolved:
                detail += (f"; it answered from {hostport(a.source)}, not from the address asked: "
                           "NATs drop such answers unless they already know that address "
                           "(run one server per address, e.g. --bind IP:PORT)")
            return CheckResult(name, True, f"UDP to the {role} {s.address} works "
                               f"({a.rtt_ms:.0f} ms)", detail)
        why = a.error if a else s.error
        advice = "" if a and a.no_route else "outbound UDP may be blocked here, or the server is down"
        if a and not a.no_route and any(o.ok for o in self.facts.servers):
            advice = ("other servers answer: this one may be down, or (a second address of one "
                      "server bound to 0.0.0.0) answer from its first address, which a NAT that maps "
                      "per destination drops: run one server per address (--bind IP:PORT)")
        return CheckResult(name, False, f"no UDP answer from the {role} {s.address}: {why}",
                           advice=advice)

    def _public_result(self) -> CheckResult:
        f = self.facts
        seen = f.mappings
        if not seen:
            return CheckResult("public_address", None,
                               "no public address seen: no server answered over UDP")
        addrs = []
        for _, m in seen:
            if hostport(m) not in addrs:
                addrs.append(hostport(m))
        detail = "; ".join(f"{srv} sees {hostport(m)}" for srv, m in seen)
        return CheckResult("public_address", True,
                           f"public address: {', '.join(addrs)} (for local UDP port {f.local_port})", detail)

    def _mapping_result(self) -> CheckResult:
        f = self.facts
        words = {
            NONE: (True, "no NAT: this machine's own address is public"),
            EI: (True, "NAT mapping: endpoint-independent (one public port for every destination: "
                       "hole punching works)"),
            ED: (False, "NAT mapping: endpoint-dependent (a new public port for every destination, "
                        "a \"symmetric\" NAT: peers cannot aim at you directly)"),
            UNKNOWN: (None, "NAT mapping: could not be told"),
        }
        ok, summary = words[f.mapping]
        advice = ""
        if f.mapping == ED:
            advice = "a port forward on the router, or another network, allows direct connections"
        elif f.mapping == UNKNOWN and f.mappings:
            advice = "give a second server address (--rendezvous) to compare mappings"
        return CheckResult("nat_mapping", ok, summary, f.mapping_reason, advice)

    def _preservation_result(self, seen) -> CheckResult:
        f = self.facts
        if f.port_preservation:
            return CheckResult("port_preservation", True,
                               f"port preservation: yes (local port {f.local_port} stays {f.local_port} outside)")
        ports = sorted({m[1] for _, m in seen})
        return CheckResult("port_preservation", None,
                           f"port preservation: no (local port {f.local_port} appears as "
                           f"{', '.join(map(str, ports))})")

    def _hairpin_result(self, mapped) -> CheckResult:
        f = self.facts
        if f.mapping == NONE:
            return CheckResult("hairpin", True, "hairpinning: not needed (no NAT)")
        if f.hairpin:
            return CheckResult("hairpin", True, "hairpinning: works (a packet to our own public "
                               f"address {hostport(mapped)} came back)")
        return CheckResult("hairpin", None, "hairpinning: no (a packet to our own public address "
                           f"{hostport(mapped)} did not come back)",
                           "machines behind this same NAT connect over their local addresses instead")

    async def _filtering(self, probe: probes.UdpProbe) -> CheckResult:
        """RFC 5780 filtering tests from a fresh socket that has sent to one
        server address only (the NAT tests' socket has also sent to the
        other servers, whose addresses an address-dependent filter would then
        let in): test II asks for an answer from the server's other IP
        address and port (only a server with a second IP, which shows it as
        OTHER-ADDRESS), test III from its other port."""
        f, o = self.facts, self.options
        answered = [s for s in f.servers if s.ok]
        answered.sort(key=lambda s: s.answer.other is None)  # a server with a second IP first
        s = answered[0]
        wait = min(1.5, o.stun_timeout)
        try:
            fresh = probes.UdpProbe(o.host if ":" not in o.host else "0.0.0.0", 0, loop=probe.loop)
        except OSError as exc:
            f.filtering, f.filtering_reason = UNKNOWN, f"no socket for the test: {probes.describe_oserror(exc)}"
            return CheckResult("nat_filtering", None, "filtering of unsolicited packets: not tested",
                               f.filtering_reason)
        try:
            base = await probes.stun_binding(fresh, s.resolved, timeout=o.stun_timeout)
            if not base.ok:
                f.filtering = UNKNOWN
                f.filtering_reason = f"{s.address} did not answer a second socket: {base.error}"
                return CheckResult("nat_filtering", None, "filtering of unsolicited packets: not tested",
                                   f.filtering_reason)
            notes = []

            def outcome(ans: probes.StunAnswer, what: str, want_ip: bool) -> bool | None:
                if ans.ok and ans.source is not None and ans.source != s.resolved:
                    if want_ip and ans.source[0] == s.resolved[0]:
                        notes.append(f"{what}: it answered from {hostport(ans.source)}, the same IP address")
                        return None
                    notes.append(f"{what}: its answer from {hostport(ans.source)} came in")
                    return True
                if ans.ok or ans.code is not None:
                    notes.append(f"{what}: the server cannot ("
                                 + (f"error {ans.code}" if ans.code is not None else "it ignored the request")
                                 + ")")
                    return None
                notes.append(f"{what}: nothing came in ({ans.error or 'no answer'})")
                return False

            both = None
            if base.other is not None:
                ans = await probes.stun_binding(fresh, s.resolved, timeout=wait, change_ip=True,
                                                change_port=True)
                both = outcome(ans, f"asked {s.address} to answer from its other address "
                                    f"{hostport(base.other)}", True)
            else:
                notes.append(f"{s.address} has no second IP address (no OTHER-ADDRESS), so an answer "
                             "from another address was not tested")
            port = None
            if not both:
                ans = await probes.stun_binding(fresh, s.resolved, timeout=wait, change_port=True)
                port = outcome(ans, "asked it to answer from its other port", False)
        finally:
            fresh.close()
        f.filtering = classify_filtering(both, port, f.mapping)
        f.filtering_reason = "; ".join(notes)
        text = {
            NONE: (True, "none: no NAT and no firewall in the way (an answer from another address "
                         "and port got in)"),
            EI: (True, "endpoint-independent: unsolicited packets from anywhere reach us through "
                       "the NAT's mapping"),
            AD: (True, "address-dependent: only hosts we sent to can reach us"),
            APD: (True, "address-and-port-dependent: only the exact address and port we sent to can "
                        "reach us (hole punching opens it)"),
            UNKNOWN: (None, "could not be told"),
        }
        ok, words = text[f.filtering]
        advice = ""
        if f.filtering == UNKNOWN and both is None and port:
            words = ("not port-dependent (an answer from the server's other port got in); whether "
                     "other addresses get in too needs a server with a second IP address")
            advice = ("a rendezvous server started with --alt-bind IP2:PORT2 tells more")
        elif f.filtering == UNKNOWN:
            advice = ("a rendezvous server started with --alt-bind IP2:PORT2 (a second IP address) "
                      "can test it")
        return CheckResult("nat_filtering", ok, "filtering: " + words, f.filtering_reason, advice)

    # -- relay -------------------------------------------------------------------------------
    async def _relay_group(self, queue: asyncio.Queue) -> None:
        f, o = self.facts, self.options
        put = queue.put_nowait
        try:
            host, port = parse_hostport(o.rendezvous[0], RDV_DEFAULT_PORT)
        except UsageError as exc:
            put(CheckResult("relay_udp", False, f"the relay was not tested: {exc}"))
            return
        f.relay_address = hostport((host, port))
        try:
            server = await probes.resolve(host, port, timeout=2.0)
        except (OSError, asyncio.TimeoutError):
            put(CheckResult("relay_udp", False, f"the relay {f.relay_address} was not tested: its "
                            "name does not resolve"))
            put(CheckResult("relay_tcp", False, f"the relay {f.relay_address} was not tested: its "
                            "name does not resolve"))
            return
        r = await probes.relay_check(server, timeout=o.relay_timeout)
        f.relay = r
        at = f.relay_address
        if r.udp:
            put(CheckResult("relay_udp", True, f"the relay at {at} answers over UDP ({r.udp_ms:.0f} ms)",
                            f"it sees us at {hostport(r.observed_udp)}"))
        else:
            put(CheckResult("relay_udp", False, f"the relay at {at} does not answer over UDP: {r.udp_error}"))
        if r.tcp:
            detail = f"TCP connection in {r.tcp_ms:.0f} ms; it sees us at {hostport(r.observed_tcp)}"
            if r.data:
                detail += f"; a message relayed {r.data_between} came back in {r.data_rtt_ms:.0f} ms"
            elif r.data is False:
                detail += f"; relaying a message {r.data_between} failed: {r.data_error}"
            ok = r.data is not False
            summary = (f"the relay at {at} answers over TCP" + ("" if ok else ", but did not relay a test message"))
            put(CheckResult("relay_tcp", ok, summary, detail))
        else:
            put(CheckResult("relay_tcp", False, f"the relay at {at} does not answer over TCP: {r.tcp_error}",
                            advice="" if r.udp else "check the address, and that TCP to it is allowed"))

    # -- port mapping ------------------------------------------------------------------------
    async def _portmap_group(self, queue: asyncio.Queue) -> None:
        f = self.facts
        ifaces = [i for i in netinfo.local_addresses() if i.up and not i.is_loopback and i.multicast]
        ips = [a for i in ifaces for a in i.ipv4]
        pm = await portmap.port_mapping(ips, timeout=1.5)
        f.portmap = pm
        if pm.natpmp or pm.pcp:
            # ask for the node's port, briefly, and give it back: does mapping really work?
            m = await portmap.request_mapping(pm, self.options.port, lifetime=60, timeout=1.5)
            if m is not None:
                await portmap.release_mapping(pm, m)
        found = []
        if pm.upnp:
            found.append(f"UPnP-IGD ({pm.upnp_location or 'location not given'})")
        if pm.natpmp:
            found.append("NAT-PMP" + (f" (public address {pm.natpmp_external})" if pm.natpmp_external else ""))
        if pm.pcp:
            found.append("PCP")
        asked = ["UPnP-IGD on the local network" if pm.upnp is not None else None,
                 f"NAT-PMP and PCP at the gateway {pm.gateway}" if pm.gateway else None]
        detail = "asked: " + (", ".join(a for a in asked if a) or "nothing (no gateway, no multicast interface)")
        if pm.notes:
            detail += "; " + "; ".join(pm.notes)
        m = pm.mapping
        if m is not None:
            where = f"{m.external_ip}:{m.external_port}" if m.external_ip else f"port {m.external_port}"
            detail += (f"; {'NAT-PMP' if m.protocol == 'natpmp' else 'PCP'} mapped UDP port {m.internal_port} "
                       f"to {where} for {m.lifetime} s, "
                       + ("then released it" if m.released else "and did not confirm its release"))
            queue.put_nowait(CheckResult(
                "port_mapping", True, f"the gateway maps ports on request: UDP {m.internal_port} became "
                f"{where} ({', '.join(found)})", detail,
                "dattui does not keep a mapping yet: a port forward of this UDP port on the router "
                "lets peers reach you directly"))
        elif found:
            queue.put_nowait(CheckResult("port_mapping", True, "the gateway offers port mapping: "
                                         + ", ".join(found), detail + (f"; {pm.mapping_error}" if
                                                                       pm.mapping_error else ""),
                                         "dattui does not keep port mappings yet"))
        else:
            queue.put_nowait(CheckResult("port_mapping", None, "no port mapping offered by the gateway "
                                         "(UPnP-IGD, NAT-PMP, PCP)", detail))

    # -- DHT ---------------------------------------------------------------------------------
    async def _dht_group(self, queue: asyncio.Queue) -> None:
        f, o = self.facts, self.options
        boot = []
        for b in o.dht_bootstrap:
            try:
                boot.append(parse_hostport(b, 6881))
            except UsageError:
                continue
        if not boot:
            queue.put_nowait(CheckResult("dht", None, "the DHT is on but has no bootstrap nodes"))
            return
        d = await probes.dht_check(boot, timeout=o.dht_timeout)
        f.dht = d
        if d.resolved == 0:
            queue.put_nowait(CheckResult("dht", False, "DHT: no bootstrap node name resolves",
                                         "; ".join(d.resolve_errors),
                                         "check DNS, or give nodes by IP address with --dht-bootstrap"))
        elif not d.answered:
            queue.put_nowait(CheckResult("dht", False, f"DHT: no bootstrap node answered within "
                                         f"{o.dht_timeout:g} s", "asked " + ", ".join(d.bootstrap),
                                         "outbound UDP may be blocked; peers are still found through "
                                         "rendezvous servers and on the LAN"))
        else:
            health = "healthy" if d.nodes >= 8 else "thin"
            queue.put_nowait(CheckResult(
                "dht", True, f"DHT: joined, {d.nodes} nodes in the routing table ({health}) after "
                f"{d.seconds:.1f} s", f"our address as DHT nodes see it: {hostport(d.external)}"
                if d.external else ""))

    # -- the report --------------------------------------------------------------------------
    def report(self) -> dict:
        f = self.facts
        v = self.verdict or verdict(f)
        relay = f.relay
        dht: dict = {"enabled": f.dht_enabled}
        if f.dht_enabled:
            d = f.dht
            dht.update({"reachable": bool(d and d.answered), "nodes": d.nodes if d else 0,
                        "external_address": hostport(d.external) if d and d.external else None,
                        "bootstrap": d.bootstrap if d else list(self.options.dht_bootstrap)})
        pm = f.portmap
        return {
            "udp": f.udp,
            "public_addresses": f.public_addresses,
            "nat": {
                "mapping": f.mapping,
                "filtering": f.filtering,
                "hairpin": f.hairpin,
                "port_preservation": f.port_preservation,
                "mapping_reason": f.mapping_reason,
                "filtering_reason": f.filtering_reason,
                "local_port": f.local_port,
                "mapped": [{"server": srv, "address": hostport(m)} for srv, m in f.mappings],
            },
            "dht": dht,
            "relay": {
                "server": f.relay_address,
                "udp": relay.udp if relay else None,
                "tcp": relay.tcp if relay else None,
                "data": relay.data if relay else None,
                "data_between": relay.data_between if relay and relay.data is not None else None,
                "rtt_ms": round(relay.data_rtt_ms, 1) if relay and relay.data_rtt_ms is not None else None,
                "errors": {k: e for k, e in (("udp", relay.udp_error), ("tcp", relay.tcp_error),
                                             ("data", relay.data_error)) if e} if relay else {},
            },
            "local_addresses": {"ipv4": f.ipv4, "ipv6": f.ipv6},
            "port": {"port": f.port, "free": f.port_free},
            "servers": [{
                "address": s.address, "role": s.role,
                "resolved": hostport(s.resolved) if s.resolved else None,
                "udp": s.ok,
                "mapped": hostport(s.answer.mapped) if s.ok else None,
                "rtt_ms": round(s.answer.rtt_ms, 1) if s.ok else None,
                "answered_from": hostport(s.answer.source) if s.ok and s.answer.source else None,
                "error": (s.answer.error if s.answer is not None else s.error) or None,
            } for s in f.servers],
            "port_mapping": None if pm is None else {
                "gateway": pm.gateway, "upnp": pm.upnp, "upnp_location": pm.upnp_location,
                "natpmp": pm.natpmp, "natpmp_external": pm.natpmp_external, "pcp": pm.pcp,
                "mapped": None if pm.mapping is None else {
                    "protocol": pm.mapping.protocol, "internal_port": pm.mapping.internal_port,
                    "external": (f"{pm.mapping.external_ip}:" if pm.mapping.external_ip else "")
                    + str(pm.mapping.external_port),
                    "lifetime": pm.mapping.lifetime, "released": pm.mapping.released},
                "mapping_error": pm.mapping_error or None},
            "verdict": v.as_dict(),
            "checks": [check_dict(c) for c in self.checks],
            "unfinished": f.unfinished,
            "seconds": round(self.seconds, 2),
        }


def _aioquic_check() -> CheckResult:
    """Which aioquic this is, and which fast paths through it run (aioquic_compat)."""
    from .transport import aioquic_compat

    st = aioquic_compat.status()
    off = [d for d in st.decisions if not d.on]
    if st.engine_missing:
        return CheckResult("aioquic", False,
                           f"aioquic {st.aioquic_version} lacks what dattui needs: transfers fail",
                           st.describe(), advice="install the aioquic pyproject.toml asks for")
    if not off:
        return CheckResult("aioquic", True,
                           f"aioquic {st.aioquic_version}: every fast path runs", st.describe())
    advice = "" if not st.switch_on else "install the aioquic pyproject.toml asks for"
    return CheckResult("aioquic", True,
                       f"aioquic {st.aioquic_version}: {len(off)} of {len(st.decisions)} fast paths "
                       "off, aioquic's own code runs there (slower, same result)",
                       st.describe(), advice=advice)


def _options(options) -> DoctorOptions:
    if isinstance(options, DoctorOptions):
        return options
    if options is None:
        return DoctorOptions()
    return DoctorOptions.from_engine_options(options)


async def run_checks(options: DoctorOptions | None = None) -> AsyncIterator[CheckResult]:
    """Every check as it finishes, the verdict last (name "verdict").
    `options` may also be an `engine.api.EngineOptions`."""
    doc = Doctor(_options(options))
    async for r in doc.run():
        yield r


async def report(options: DoctorOptions | None = None) -> dict:
    """Run every check; the --json object (see `Doctor.report`)."""
    doc = Doctor(_options(options))
    async for _ in doc.run():
        pass
    return doc.report()
