"""Run a small Mainline DHT made only of libtorrent nodes (an independent BEP 5
implementation), one per address given, each knowing the others; print
"ready" and serve until stdin closes. Used inside the NAT lab."""

import sys
import time

import libtorrent as lt


def node(ip: str, port: int):
    return lt.session({
        "listen_interfaces": f"{ip}:{port}",
        "enable_dht": True,
        "dht_bootstrap_nodes": "",           # its default reaches the internet
        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_tcp": False, "enable_incoming_tcp": False,
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_block_ratelimit": 100000,
    })


def main() -> None:
    addrs = [(a.split(":")[0], int(a.split(":")[1])) for a in sys.argv[1:]]
    sessions = [node(ip, port) for ip, port in addrs]
    time.sleep(0.5)
    for s in sessions:
        for a in addrs:
            s.add_dht_node(a)
    time.sleep(1.0)
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
