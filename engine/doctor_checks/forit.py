"""`dattui doctor --for-it`: what this machine needs from the network, in a
short text for the network team that runs its firewall.

A pure function over what this machine is configured to use (rendezvous
servers, its UDP port, the DHT, LAN discovery): no sockets, no clock. Every
destination, port and protocol dattui may send to is named; nothing else is
needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..discovery.lan import GROUP, GROUP_PORT
from .portmap import PCP_PORT, SSDP_GROUP

__all__ = ["ItFacts", "for_it_text", "RENDEZVOUS_PORT"]

RENDEZVOUS_PORT = 3478


@dataclass(frozen=True)
class ItFacts:
    """What the text is made of. `servers`: (as configured "host:port",
    its IP addresses if the name was resolved, port)."""

    hostname: str
    local_ips: tuple[str, ...]
    port: int                                         # the node's UDP port
    servers: tuple[tuple[str, tuple[str, ...], int], ...]
    dht: bool
    dht_bootstrap: tuple[str, ...]
    lan: bool
    port_mapping: bool
    proxy: str | None = None                          # the HTTP proxy TCP goes through (HTTPS_PROXY)


def _server_line(name: str, ips: tuple[str, ...], port: int) -> str:
    host = name.rsplit(":", 1)[0].strip("[]")
    shown = host if not ips or ips == (host,) else f"{host} ({', '.join(ips)})"
    return f"   - {shown}: UDP port {port} and TCP port {port}"


def for_it_text(f: ItFacts) -> str:
    """The text, plain and short (under 40 lines), wrapped at 78 columns."""
    who = f.hostname + (f" ({', '.join(f.local_ips)})" if f.local_ips else "")
    out = [
        f"Network access for dattui on {who}",
        "",
        "dattui moves research data between institutions over QUIC (UDP),",
        "end-to-end encrypted (TLS 1.3). Machines connect directly when they can",
        "(with hole punching through NATs) and through a rendezvous server's relay",
        "when they cannot. Please allow this machine to send the following traffic",
        "out, and the replies to it back in (a stateful firewall's",
        "established/related rule is enough for the replies):",
        "",
    ]
    n = 1
    if f.servers:
        out.append(f"{n}. Rendezvous servers (meeting point, NAT tests, relay):")
        for name, ips, port in f.servers:
            out.append(_server_line(name, ips, port))
        out.append("   TCP alone keeps transfers working (relayed over TCP) when UDP is refused.")
        if f.proxy:
            out += _wrap(f"   TCP goes through the HTTP proxy {f.proxy} (HTTPS_PROXY): the proxy must "
                         "allow CONNECT to these servers and ports.", "   ")
    else:
        out.append(f"{n}. Rendezvous servers: none configured yet. When one is added, allow")
        out.append(f"   UDP and TCP to its port (by default {RENDEZVOUS_PORT}). Anyone can run one:")
        out.append("   `dattui rendezvous` on a machine with a public address, which needs UDP and")
        out.append(f"   TCP port {RENDEZVOUS_PORT} and UDP port {RENDEZVOUS_PORT + 1} open inbound.")
    n += 1
    out += [
        f"{n}. Peers (direct and hole-punched transfers): UDP from local port {f.port}",
        "   to any address and any port (peers' ports are not fixed; behind a NAT that",
        "   maps per destination, up to 256 other local ports for a few seconds).",
        f"   Hole punching needs the peer's packets to local port {f.port} let in once",
        "   this machine has sent to that peer (the usual stateful UDP rule).",
    ]
    if f.dht:
        n += 1
        boot = ", ".join(f.dht_bootstrap) if f.dht_bootstrap else "none configured"
        out += _wrap(f"{n}. BitTorrent Mainline DHT (finding peers without a server): UDP from local "
                     f"port {f.port} to any address and any port; first contact: {boot}.", "   ")
    if f.lan:
        n += 1
        line = (f"{n}. Local network only: multicast UDP to {GROUP} port {GROUP_PORT} (finding peers"
                " on this LAN; TTL 1, it never leaves the LAN)")
        if f.port_mapping:
            line += (f"; port mapping requests to the gateway (UDP {PCP_PORT}, NAT-PMP/PCP;"
                     f" UPnP SSDP to {SSDP_GROUP[0]} port {SSDP_GROUP[1]})")
        out += _wrap(line + ".", "   ")
    if f.servers:
        out += [
            "",
            "If only one thing can be allowed: TCP (and if possible UDP) to the rendezvous",
            "server(s) above. Transfers then go through the relay: slower, but they work.",
        ]
    out += [
        "",
        f"Optional, for the fastest transfers: allow inbound UDP to port {f.port} on",
        "this machine, so peers connect without a relay or hole punching.",
        "Nothing else is needed; no other port is opened or contacted.",
    ]
    return "\n".join(out)


def _wrap(text: str, indent: str, width: int = 78) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = indent + w
        else:
            cur = f"{cur} {w}" if cur else w
    if cur:
        lines.append(cur)
    return lines
