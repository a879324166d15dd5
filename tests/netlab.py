"""Tiny network-namespace lab for tests and benchmarks (Linux, root only).

Everything lives inside network namespaces this module creates: veth pairs are
created directly inside the namespaces (``ip -n NS link add ... peer ... netns
NS2``), so no interface ever appears in the root namespace and nothing here
touches the machine's real interfaces.

    with Lab() as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        lab.link(a, "10.0.0.1", b, "10.0.0.2", mtu=1500)
        srv = b.popen([*dattui_cmd(), "share", ...])
        a.run([*dattui_cmd(), "clone", ...])

NAT topologies (for later tests): an "internet" segment is a namespace holding
a bridge; routers are hosts with forwarding on and MASQUERADE on the WAN side:

        seg = lab.add_bridge_segment("inet")
        r1 = lab.add_router("r1")
        seg.attach(r1, "192.0.2.1")                       # WAN: r1's eth0
        lan = lab.link(h1, "10.1.0.2", r1, "10.1.0.1")   # LAN
        lab.masquerade(r1, "eth0")
        h1.add_route("default", via="10.1.0.1")

Teardown (``Lab.close``/``__exit__``, also registered with atexit) kills every
process still inside the lab's namespaces (``ip netns pids``), reaps the Popen
objects it handed out, then deletes the namespaces; it never raises and is safe
to call after a half-built lab or twice.  Namespaces left behind by a lab whose
process died (SIGKILL) are removed by ``cleanup_stale()`` (run by ``Lab()``).
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Sequence
from installed import dattui_cmd

__all__ = ["Lab", "Host", "Link", "Segment", "NetlabError", "cleanup_stale", "ns_exists"]

_ns_counter = itertools.count(1)
_STALE_RE = re.compile(r"^dt(\d+)n\d+$")


class NetlabError(RuntimeError):
    pass


def _run(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run a setup command; on failure raise NetlabError carrying its stderr."""
    cp = subprocess.run(list(args), capture_output=True, text=True)
    if check and cp.returncode != 0:
        raise NetlabError(f"{' '.join(args)!s} failed ({cp.returncode}): {cp.stderr.strip()}")
    return cp


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if not path:
        raise NetlabError(f"'{binary}' not found; install it (scripts/test.sh installs iproute2 iptables)")
    return path


def list_netns() -> list[str]:
    cp = _run(["ip", "netns", "list"], check=False)
    # lines look like "dt123n1 (id: 4)" or "dt123n1"
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def ns_exists(name: str) -> bool:
    return name in list_netns()


def _ns_pids(ns: str) -> list[int]:
    cp = _run(["ip", "netns", "pids", ns], check=False)
    pids = []
    for tok in cp.stdout.split():
        if tok.isdigit() and int(tok) != os.getpid():
            pids.append(int(tok))
    return pids


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_ns_processes(ns: str, grace: float = 1.0) -> None:
    pids = _ns_pids(ns)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline:
            pids = [p for p in _ns_pids(ns) if _pid_alive(p)]
            # our own children show up as zombies until reaped: reap what we can
            for p in pids:
                try:
                    os.waitpid(p, os.WNOHANG)
                except ChildProcessError:
                    pass
            pids = [p for p in _ns_pids(ns) if _pid_alive(p)]
            if not pids:
                return
            time.sleep(0.05)


def _delete_ns(ns: str) -> None:
    _kill_ns_processes(ns)
    for _ in range(20):
        cp = _run(["ip", "netns", "delete", ns], check=False)
        if cp.returncode == 0 or not ns_exists(ns):
            return
        time.sleep(0.05)


def cleanup_stale() -> list[str]:
    """Delete dt<pid>n<k> namespaces whose creating process no longer exists."""
    removed = []
    for ns in list_netns():
        m = _STALE_RE.match(ns)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            _delete_ns(ns)
            removed.append(ns)
    return removed


@dataclass
class Host:
    """A network namespace.  ``name`` is the logical name, ``ns`` the netns name."""

    lab: "Lab"
    name: str
    ns: str
    ifaces: dict[str, str] = field(default_factory=dict)  # ifname -> "ip/prefix"
    _ifseq: itertools.count = field(default_factory=lambda: itertools.count(0), repr=False)

    # -- addresses --------------------------------------------------------
    @property
    def ip(self) -> str | None:
        """First IPv4 address assigned through the lab (None if none)."""
        for cidr in self.ifaces.values():
            if cidr:
                return cidr.split("/")[0]
        return None

    def _next_ifname(self) -> str:
        while True:
            name = f"eth{next(self._ifseq)}"
            if name not in self.ifaces:
                return name

    # -- running things ---------------------------------------------------
    def cmd(self, args: Sequence[str] | str) -> list[str]:
        """The argv that runs ``args`` inside this namespace."""
        if isinstance(args, str):
            args = ["sh", "-c", args]
        return ["ip", "netns", "exec", self.ns, *map(str, args)]

    def run(self, args: Sequence[str] | str, **kw) -> subprocess.CompletedProcess:
        """subprocess.run inside the namespace.

        Defaults differ from subprocess.run: check=True, text=True and
        capture_output=True (unless stdout/stderr/capture_output is given).
        A str ``args`` is run with ``sh -c``.
        """
        kw.setdefault("check", True)
        kw.setdefault("text", True)
        if not ({"stdout", "stderr", "capture_output"} & kw.keys()):
            kw["capture_output"] = True
        return subprocess.run(self.cmd(args), **kw)

    def popen(self, args: Sequence[str] | str, **kw) -> subprocess.Popen:
        """subprocess.Popen inside the namespace (same kwargs as Popen).

        ``ip netns exec`` execs the target, so ``p.pid`` is the pid of the
        program itself (e.g. the python process), not of a wrapper.
        The lab kills and reaps it at teardown if it is still running.
        """
        p = subprocess.Popen(self.cmd(args), **kw)
        self.lab._procs.append(p)
        return p

    def sh(self, cmd: str, check: bool = True, **kw) -> str:
        """Run a shell command in the namespace and return its stdout (str)."""
        return self.run(["sh", "-c", cmd], check=check, **kw).stdout

    # -- routing helpers ----------------------------------------------------
    def add_route(self, dest: str, via: str | None = None, dev: str | None = None) -> None:
        args = ["ip", "-n", self.ns, "route", "replace", dest]
        if via:
            args += ["via", via]
        if dev:
            args += ["dev", dev]
        _run(args)

    def sysctl(self, key: str, value) -> None:
        _run(["ip", "netns", "exec", self.ns, "sysctl", "-q", "-w", f"{key}={value}"])

    def mtu(self, ifname: str) -> int:
        out = _run(["ip", "-n", self.ns, "-o", "link", "show", "dev", ifname]).stdout
        m = re.search(r"\bmtu (\d+)", out)
        if not m:
            raise NetlabError(f"no mtu in: {out!r}")
        return int(m.group(1))


@dataclass
class Link:
    a: Host
    ifname_a: str
    ip_a: str | None
    b: Host
    ifname_b: str
    ip_b: str | None
    mtu: int


@dataclass
class Segment:
    """An L2 "internet" segment: a namespace with bridge br0; hosts attach via veth."""

    lab: "Lab"
    host: Host  # the namespace holding the bridge
    bridge: str = "br0"
    _portseq: itertools.count = field(default_factory=lambda: itertools.count(0), repr=False)

    def attach(self, host: Host, ip: str | None, prefix: int = 24, mtu: int = 1500,
               ifname: str | None = None) -> str:
        """Plug ``host`` into the segment; returns the host-side interface name."""
        ifname = ifname or host._next_ifname()
        port = f"p{next(self._portseq)}"
        self.lab._veth(host, ifname, self.host, port, mtu)
        _run(["ip", "-n", self.host.ns, "link", "set", port, "master", self.bridge, "up"])
        self.lab._addr_up(host, ifname, ip, prefix)
        return ifname


class Lab:
    """Context manager owning a set of namespaces.  See module docstring."""

    def __init__(self, cleanup_stale_namespaces: bool = True):
        _need("ip")
        if os.geteuid() != 0:
            raise NetlabError("network namespaces need root")
        self.hosts: list[Host] = []
        self._procs: list[subprocess.Popen] = []
        self._closed = False
        if cleanup_stale_namespaces:
            cleanup_stale()
        atexit.register(self.close)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- building -------------------------------------------------------------
    def add_host(self, name: str) -> Host:
        ns = f"dt{os.getpid()}n{next(_ns_counter)}"
        _run(["ip", "netns", "add", ns])
        host = Host(self, name, ns)
        self.hosts.append(host)  # registered as soon as it exists: teardown sees it
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return host

    def _veth(self, a: Host, ifa: str, b: Host, ifb: str, mtu: int) -> None:
        # Created inside a's namespace with its peer directly in b's: never in root.
        _run(["ip", "-n", a.ns, "link", "add", ifa, "mtu", str(mtu), "type", "veth",
              "peer", "name", ifb, "netns", b.ns, "mtu", str(mtu)])
        a.ifaces.setdefault(ifa, "")
        b.ifaces.setdefault(ifb, "")

    def _addr_up(self, host: Host, ifname: str, ip: str | None, prefix: int) -> None:
        if ip:
            _run(["ip", "-n", host.ns, "addr", "add", f"{ip}/{prefix}", "dev", ifname])
            host.ifaces[ifname] = f"{ip}/{prefix}"
        _run(["ip", "-n", host.ns, "link", "set", ifname, "up"])

    def link(self, host_a: Host, ip_a: str | None, host_b: Host, ip_b: str | None,
             mtu: int = 1500, prefix: int = 24,
             ifname_a: str | None = None, ifname_b: str | None = None) -> Link:
        """veth pair between two hosts (interfaces eth0, eth1, ... per host), all up."""
        ifa = ifname_a or host_a._next_ifname()
        ifb = ifname_b or host_b._next_ifname()
        self._veth(host_a, ifa, host_b, ifb, mtu)
        self._addr_up(host_a, ifa, ip_a, prefix)
        self._addr_up(host_b, ifb, ip_b, prefix)
        return Link(host_a, ifa, ip_a, host_b, ifb, ip_b, mtu)

    def add_bridge_segment(self, name: str = "inet") -> Segment:
        h = self.add_host(name)
        _run(["ip", "-n", h.ns, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", h.ns, "link", "set", "br0", "up"])
        return Segment(self, h)

    def add_router(self, name: str) -> Host:
        h = self.add_host(name)
        h.sysctl("net.ipv4.ip_forward", 1)
        return h

    def masquerade(self, router: Host, out_ifname: str, random_ports: bool = False) -> None:
        """Source-NAT everything leaving ``out_ifname`` (random_ports: --random-fully)."""
        _need("iptables")
        args = ["ip", "netns", "exec", router.ns, "iptables", "-t", "nat", "-A", "POSTROUTING",
                "-o", out_ifname, "-j", "MASQUERADE"]
        if random_ports:
            args.append("--random-fully")
        _run(args)

    # -- impairments ----------------------------------------------------------
    def rate_limit(self, host: Host, ifname: str, mbit: float, latency_ms: int = 50,
                   burst_bytes: int | None = None) -> None:
        """Egress rate limit on host's ifname with tbf (apply on both ends for both ways)."""
        _need("tc")
        rate_bytes = mbit * 1e6 / 8
        burst = burst_bytes or max(int(rate_bytes / 100), 16 * 1024)  # >= 10 ms of traffic
        _run(["ip", "netns", "exec", host.ns, "tc", "qdisc", "replace", "dev", ifname, "root",
              "tbf", "rate", f"{int(mbit * 1000)}kbit", "burst", str(burst),
              "latency", f"{latency_ms}ms"])

    def random_loss(self, host: Host, probability: float,
                    chains: Sequence[str] = ("INPUT", "OUTPUT")) -> None:
        """Drop packets at random in host's namespace (IPv4, loopback excluded).

        Default chains INPUT and OUTPUT: each direction through this host loses
        ``probability``.  Use chains=("FORWARD",) on a router.
        """
        _need("iptables")
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        for chain in chains:
            lo = {"INPUT": ["!", "-i", "lo"], "OUTPUT": ["!", "-o", "lo"]}.get(chain, [])
            _run(["ip", "netns", "exec", host.ns, "iptables", "-A", chain, *lo,
                  "-m", "statistic", "--mode", "random", "--probability", f"{probability}",
                  "-j", "DROP"])

    def clear_loss(self, host: Host, chains: Sequence[str] = ("INPUT", "OUTPUT", "FORWARD")) -> None:
        for chain in chains:
            _run(["ip", "netns", "exec", host.ns, "iptables", "-F", chain])

    # -- teardown ---------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for host in self.hosts:
            try:
                _kill_ns_processes(host.ns)
            except Exception:
                pass
        for p in self._procs:
            try:
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=5)
            except Exception:
                pass
            for stream in (p.stdin, p.stdout, p.stderr):
                try:
                    if stream:
                        stream.close()
                except Exception:
                    pass
        for host in reversed(self.hosts):
            try:
                _delete_ns(host.ns)
            except Exception:
                pass
        try:
            atexit.unregister(self.close)
        except Exception:
            pass
