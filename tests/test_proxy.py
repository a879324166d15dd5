"""The TCP relay through an HTTP proxy (HTTPS_PROXY / NO_PROXY): parsing, and
a clone whose only way out is Debian's tinyproxy, in the NAT lab."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from dattui.engine.traversal.proxy import Proxy, ProxyError, connect_request, parse_status, proxy_for


def test_proxy_from_the_environment():
    assert proxy_for("192.0.2.1", 3478, {}) is None
    assert proxy_for("192.0.2.1", 3478, {"HTTPS_PROXY": "http://proxy.example.org:3128"}) == \
        Proxy("proxy.example.org", 3128)
    assert proxy_for("192.0.2.1", 3478, {"https_proxy": "proxy:8080"}) == Proxy("proxy", 8080)
    assert proxy_for("192.0.2.1", 3478, {"ALL_PROXY": "http://p"}) == Proxy("p", 80)
    assert proxy_for("192.0.2.1", 3478, {"HTTPS_PROXY": "http://u%40x:p%3Aw@p:1"}) == Proxy("p", 1, "u@x:p:w")
    # only plain http:// proxies are spoken to
    assert proxy_for("192.0.2.1", 3478, {"HTTPS_PROXY": "socks5://p:1080"}) is None
    assert proxy_for("192.0.2.1", 3478, {"HTTPS_PROXY": "https://p:443"}) is None


@pytest.mark.parametrize("no_proxy,host,port,bypass", [
    ("*", "192.0.2.1", 3478, True),
    ("192.0.2.1", "192.0.2.1", 3478, True),
    ("192.0.2.0/24", "192.0.2.77", 3478, True),
    ("10.0.0.0/8, 192.0.2.0/28", "192.0.2.77", 3478, False),
    (".example.org", "rdv.example.org", 3478, True),
    ("example.org", "rdv.example.org", 3478, True),
    ("example.org", "badexample.org", 3478, False),
    ("rdv.example.org:443", "rdv.example.org", 3478, False),
    ("rdv.example.org:3478", "rdv.example.org", 3478, True),
    ("", "192.0.2.1", 3478, False),
])
def test_no_proxy(no_proxy, host, port, bypass):
    env = {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": no_proxy}
    assert (proxy_for(host, port, env) is None) == bypass


def test_connect_request_and_status():
    assert connect_request("192.0.2.1", 3478, Proxy("p", 1)) == (
        b"CONNECT 192.0.2.1:3478 HTTP/1.1\r\nHost: 192.0.2.1:3478\r\nUser-Agent: dattui\r\n\r\n")
    assert b"[2001:db8::1]:443" in connect_request("2001:db8::1", 443, Proxy("p", 1))
    assert b"Proxy-Authorization: Basic dTpw\r\n" in connect_request("h", 1, Proxy("p", 1, "u:p"))
    assert parse_status(b"HTTP/1.1 200 Connection established\r\n\r\n") == 200
    assert parse_status(b"HTTP/1.0 403 Filtered\r\n\r\n") == 403
    with pytest.raises(ProxyError):
        parse_status(b"SSH-2.0-OpenSSH\r\n\r\n")


TINYPROXY_CONF = """Port 8888
Listen {ip}
Timeout 600
MaxClients 100
User nobody
Group nogroup
LogLevel Connect
ConnectPort 3478
"""


@pytest.mark.netns
def test_clone_whose_only_way_out_is_an_http_proxy(lab, tmp_path):
    tinyproxy = shutil.which("tinyproxy") or ("/usr/bin/tinyproxy" if shutil.os.path.exists("/usr/bin/tinyproxy")
                                               else None)
    if tinyproxy is None:
        pytest.skip("needs Debian's tinyproxy (apt-get install tinyproxy)")
    from cli import env
    from helpers import make_tree, tree, visible
    from nat_helpers import RDV, Share, dattui, rendezvous_args, start_rendezvous
    from natlab import NatKind, add_peer, build_internet

    proxy_ip = "203.0.113.30"
    inet = build_internet(lab)
    rdv = start_rendezvous(inet.add_server("rdv", *RDV))
    proxy_host = inet.add_server("proxy", proxy_ip)
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(TINYPROXY_CONF.format(ip=proxy_ip))
    proxy = proxy_host.popen([tinyproxy, "-d", "-c", str(conf)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    a = add_peer(lab, inet, NatKind.PUBLIC, 1)
    b = add_peer(lab, inet, NatKind.UDP_BLOCKED, 2)
    # the clone's network lets nothing out but TCP to the proxy (inserted above the drop)
    b.router.run(["iptables", "-I", "FORWARD", "-p", "tcp", "-j", "DROP"])
    b.router.run(["iptables", "-I", "FORWARD", "-p", "tcp", "-d", proxy_ip, "--dport", "8888", "-j", "ACCEPT"])
    b.router.run(["iptables", "-I", "FORWARD", "-p", "tcp", "-s", proxy_ip, "--sport", "8888", "-j", "ACCEPT"])
    src = make_tree(tmp_path / "src")
    try:
        sh = Share(a.host, src, tmp_path / "hs")
        p = b.host.run(dattui("clone", sh.link, tmp_path / "dst", "--json", "--no-lan", "--no-dht",
                              "--timeout", "30", *rendezvous_args()),
                       env=env(tmp_path / "hc", HTTPS_PROXY=f"http://{proxy_ip}:8888"), check=False, timeout=90)
        lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        assert p.returncode == 0, p.stderr[-2000:]
        conn = next(l for l in lines if l["event"] == "peer_connected")
        assert conn["path"] == "relay-tcp"
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        rdv.stop()
        proxy.terminate()
        log = proxy.communicate(timeout=10)[0]
    assert f"CONNECT" in log and f"{RDV[0]}:3478" in log, log[-2000:]
