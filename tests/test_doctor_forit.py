"""`dattui doctor --for-it` and where a rendezvous server comes from."""

from __future__ import annotations

import subprocess

from cli import cmd, env
from test_doctor_unit import _facts, _server

from dattui.engine.doctor_checks.forit import ItFacts, for_it_text
from dattui.engine.doctor_checks.probes import RelayFacts
from dattui.engine.doctor_checks.verdict import verdict

BASE = ItFacts(hostname="lab-pc", local_ips=("10.1.2.3",), port=3282,
               servers=(("rdv.example.org:3478", ("192.0.2.1",), 3478), ("198.51.100.7:443", ("198.51.100.7",), 443)),
               dht=True, dht_bootstrap=("router.bittorrent.com:6881",), lan=True, port_mapping=True)


def _with(**kw) -> ItFacts:
    import dataclasses
    return dataclasses.replace(BASE, **kw)


def test_for_it_names_every_destination_port_and_protocol():
    text = for_it_text(BASE)
    assert text.startswith("Network access for dattui on lab-pc (10.1.2.3)")
    # each rendezvous server, by name and address, UDP and TCP on its port
    assert "   - rdv.example.org (192.0.2.1): UDP port 3478 and TCP port 3478" in text
    assert "   - 198.51.100.7: UDP port 443 and TCP port 443" in text
    # peers: UDP from the node's port to anywhere
    assert "UDP from local port 3282\n   to any address and any port" in text
    # the DHT with its first contacts; LAN multicast; gateway port mapping
    assert "Mainline DHT" in text and "router.bittorrent.com:6881" in text
    assert "239.255.32.82 port 3283" in text and "TTL 1" in text
    assert "UDP 5351" in text and "239.255.255.250 port 1900" in text
    assert "If only one thing can be allowed: TCP" in text
    assert "inbound UDP to port 3282" in text
    assert all(len(line) <= 78 for line in text.splitlines())
    assert len(text.splitlines()) < 40


def test_for_it_follows_the_configuration():
    text = for_it_text(_with(dht=False, lan=False, port=4000))
    assert "DHT" not in text and "multicast" not in text and "5351" not in text
    assert "UDP from local port 4000" in text and "3282" not in text
    assert [l[:2] for l in text.splitlines() if l[:1].isdigit()] == ["1.", "2."]
    text = for_it_text(_with(lan=True, port_mapping=False))
    assert "239.255.32.82" in text and "5351" not in text


def test_for_it_names_the_proxy():
    assert "HTTP proxy" not in for_it_text(BASE)
    text = for_it_text(_with(proxy="http://proxy.example.org:3128"))
    assert "TCP goes through the HTTP proxy http://proxy.example.org:3128 (HTTPS_PROXY)" in text
    assert "allow CONNECT to these servers and ports" in text
    assert all(len(line) <= 78 for line in text.splitlines())


def test_for_it_without_servers_says_where_one_comes_from():
    text = for_it_text(_with(servers=()))
    assert "none configured yet" in text
    assert "`dattui rendezvous` on a machine with a public address" in text
    assert "TCP port 3478 and UDP port 3479 open inbound" in text
    assert "If only one thing" not in text


def test_verdicts_say_where_a_rendezvous_server_comes_from():
    v = verdict(_facts())
    assert v.kind == "no_servers"
    assert any("`dattui rendezvous` on any machine with a public address" in s and "3478" in s for s in v.steps)
    assert any("dattui doctor --for-it" in s for s in v.steps)
    v = verdict(_facts(servers=[_server(False)], relay=RelayFacts(("203.0.113.10", 3478), udp=False, tcp=False)))
    assert v.kind == "unreachable"
    assert any("UDP and TCP port 3478 open" in s for s in v.steps)
    assert any("--for-it" in s for s in v.steps)
    v = verdict(_facts(servers=[_server(False)], relay=RelayFacts(("203.0.113.10", 3478), udp=False, tcp=True,
                                                                 data=True)))
    assert v.kind == "tcp_relay" and not any("caps each connection" in s for s in v.steps)


NO_PROXY_ENV = {k: "" for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")}


def test_cli_for_it(tmp_path):
    p = subprocess.run(cmd("doctor", "--for-it", "--rendezvous", "192.0.2.1:3478", "--no-dht", "--port", "3999"),
                       env=env(tmp_path / "h", **NO_PROXY_ENV), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "   - 192.0.2.1: UDP port 3478 and TCP port 3478" in p.stdout
    assert "UDP from local port 3999" in p.stdout
    assert "DHT" not in p.stdout and "HTTP proxy" not in p.stdout
    p = subprocess.run(cmd("doctor", "--for-it", "--rendezvous", "192.0.2.1:3478"),
                       env=env(tmp_path / "h", **{**NO_PROXY_ENV, "HTTPS_PROXY": "http://192.0.2.9:3128"}),
                       capture_output=True, text=True, timeout=60)
    assert "TCP goes through the HTTP proxy http://192.0.2.9:3128" in p.stdout
