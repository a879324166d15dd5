"""DHT lookups: the first at once, then, while nobody is found, again after
1 s, 2 s, 4 s ... up to the 15 s interval; once a peer is found, every 15 s.
DHT services on real loopback sockets, bootstrapped from one another only."""

from __future__ import annotations

import asyncio

from test_dht_core import Endpoint as CoreEndpoint, _until


def Endpoint(loop, seed, bootstrap, found):
    return CoreEndpoint(loop, seed, bootstrap, found, lookup_interval=None)  # the real timing


async def test_a_lookup_that_finds_nobody_is_retried_soon_then_less_often():
    loop = asyncio.get_running_loop()
    found: dict = {}
    hub = Endpoint(loop, 1, [], {})
    hub.dht.start()
    boot = [("127.0.0.1", hub.udp.port)]
    others = [Endpoint(loop, 10 + i, boot, {}) for i in range(4)]
    clone = Endpoint(loop, 2, boot, found)
    share = Endpoint(loop, 3, boot, {})
    everyone = [hub, *others, clone, share]
    dkey = bytes(range(32))
    try:
        for e in others:
            e.dht.start()
        assert await _until(lambda: all(len(e.dht.core.routing) >= 1 for e in others), 5)
        assert clone.dht.lookup_interval == 15.0  # the default
        clone.dht.start()
        clone.dht.lookup(dkey)  # before anyone announces: it finds nobody
        assert dkey in clone.dht._running  # the first lookup runs at once
        assert await _until(lambda: len(clone.dht.delays.get(dkey, ())) >= 2, 10)
        assert list(clone.dht.delays[dkey])[:2] == [1.0, 2.0]
        share.dht.start()
        share.dht.announce(dkey, share.udp.port)
        assert await _until(lambda: ("127.0.0.1", share.udp.port) in found.get(dkey, ()), 20)
        await _until(lambda: clone.dht.delays[dkey][-1] == 15.0, 5)
        delays = list(clone.dht.delays[dkey])
        # found on one of the short retries, and only then back to the long interval
        assert delays[-1] == 15.0 and 15.0 not in delays[:-1], delays
        assert delays[:-1] == [1.0, 2.0, 4.0, 8.0][:len(delays) - 1], delays
        clone.dht.stop_lookup(dkey)
        assert dkey not in clone.dht.delays and not clone.dht._scheduled
    finally:
        for e in everyone:
            e.close()
