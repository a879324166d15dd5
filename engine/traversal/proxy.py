"""Reaching a rendezvous server's TCP relay through an HTTP proxy (CONNECT).

Institutional networks often let nothing out but an HTTP proxy. As curl and
pip do, the node takes the proxy from HTTPS_PROXY (or https_proxy, then
ALL_PROXY / all_proxy) and the hosts to reach without it from NO_PROXY (or
no_proxy): a comma-separated list of names, domain suffixes (".example.org"
or "example.org" also match "a.example.org"), IP addresses, CIDR networks
("10.0.0.0/8"), optionally ":port", or "*" for everything. Only plain
`http://` proxies are spoken to (the CONNECT tunnel itself carries our
framed, end-to-end encrypted relay traffic); user:password in the URL is
sent as Basic Proxy-Authorization.

`proxy_for` is pure (the environment is passed in); `open_tunnel` opens
the TCP connection to the proxy and asks it for the tunnel.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Proxy", "proxy_for", "open_tunnel", "ProxyError"]

MAX_HEADER = 16 * 1024


class ProxyError(OSError):
    """The proxy refused the tunnel or did not speak HTTP."""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    auth: str | None = None    # "user:password"

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}"


def _env(environ: Mapping[str, str], *names: str) -> str:
    for n in names:
        v = environ.get(n)
        if v:
            return v.strip()
    return ""


def _bypass(host: str, port: int, no_proxy: str) -> bool:
    host = host.strip("[]").lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        want_port = None
        if entry.count(":") == 1 and not entry.startswith("["):
            entry, p = entry.split(":")
            if not p.isdigit():
                continue
            want_port = int(p)
        entry = entry.strip("[]")
        if want_port is not None and want_port != port:
            continue
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        suffix = entry.lstrip(".")
        if host == suffix or host.endswith("." + suffix):
            return True
    return False


def proxy_for(host: str, port: int, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy to reach `host:port` over TCP through, or None (no proxy set,
    NO_PROXY names the host, or the proxy URL is not a plain http:// one)."""
    url = _env(environ, "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    if not url:
        return None
    if _bypass(host, port, _env(environ, "NO_PROXY", "no_proxy")):
        return None
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    try:
        pport = parts.port or 80
    except ValueError:
        return None
    auth = None
    if parts.username is not None:
        auth = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    return Proxy(parts.hostname, pport, auth)


def connect_request(host: str, port: int, proxy: Proxy) -> bytes:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", "User-Agent: dattui"]
    if proxy.auth is not None:
        lines.append("Proxy-Authorization: Basic " + base64.b64encode(proxy.auth.encode()).decode())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_status(head: bytes) -> int:
    """The status code of the proxy's answer head (up to the blank line)."""
    first = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = first.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProxyError(f"the proxy did not answer in HTTP: {first[:60]!r}")
    return int(parts[1])


async def open_tunnel(host: str, port: int, proxy: Proxy, timeout: float = 10.0
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP stream to `host:port` through `proxy`'s CONNECT tunnel."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(proxy.host, proxy.port), timeout)
    try:
        writer.write(connect_request(host, port, proxy))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = parse_status(head)
        if status != 200:
            raise ProxyError(f"the proxy {proxy} refused CONNECT {host}:{port} (HTTP {status})")
    except asyncio.LimitOverrunError:
        writer.close()
        raise ProxyError(f"the proxy {proxy} sent an answer too long") from None
    except asyncio.IncompleteReadError:
        writer.close()
        raise ProxyError(f"the proxy {proxy} closed the connection") from None
    except BaseException:
        writer.close()
        raise
    return reader, writer
