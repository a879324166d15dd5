"""The engine daemon: control socket, transfers that survive the client and a restart."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys

import pytest

from cli import cmd, env
from dattui.engine.daemon.client import DaemonClient, daemon_running, ensure_daemon
from dattui.engine.events import Role, State
from helpers import engine, make_tree, tree, visible


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    env(h)  # writes a config with the DHT off
    monkeypatch.setenv("DATTUI_HOME", str(h))
    yield h
    if daemon_running(h):
        subprocess.run(cmd("stop"), env=env(h), capture_output=True, timeout=20)


async def test_daemon_shares_survive_client_and_restart(home, tmp_path):
    src = make_tree(tmp_path / "src")
    client = await ensure_daemon(home, ["--port", "0", "--no-lan"])
    sock = home / "daemon.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    res = await client.call("share", path=str(src))
    port = (await client.call("ping"))["port"]
    statuses = await client.status()
    assert [s.role for s in statuses] == [Role.SHARE] and statuses[0].state == State.SEEDING
    page = await client.files(res["tid"], pattern="sub/", sort="size")
    assert page.total == 2 and [f.path for f in page.files] == ["sub/deeper/b.csv", "sub/a.txt"]
    await client.close()  # the front end goes away: the share keeps serving

    other = await engine(tmp_path / "other")
    try:
        t = await other.clone(res["link"], tmp_path / "dst", peers=[f"127.0.0.1:{port}"])
        await asyncio.wait_for(other.wait(t), 30)
        assert visible(tree(tmp_path / "dst")) == visible(tree(src))
    finally:
        await other.close()

    # stop and start again: the share comes back by itself
    client = await DaemonClient.connect(home)
    await client.stop_daemon()
    await client.close()
    for _ in range(100):
        if not daemon_running(home):
            break
        await asyncio.sleep(0.1)
    assert not daemon_running(home)
    client = await ensure_daemon(home, ["--port", "0", "--no-lan"])
    try:
        statuses = await client.status()
        assert [s.link for s in statuses] == [res["link"]]
    finally:
        await client.close()


async def test_daemon_pause_resume_remove_and_events(home, tmp_path):
    src = make_tree(tmp_path / "src")
    client = await ensure_daemon(home, ["--port", "0", "--no-lan"])
    try:
        events = client.events()
        nxt = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.3)  # subscribed before anything happens
        tid = (await client.call("share", path=str(src)))["tid"]
        first = await asyncio.wait_for(nxt, 10)
        assert first.tid == tid
        await client.pause(tid)
        assert (await client.status())[0].state == State.PAUSED
        await client.resume(tid)
        assert (await client.status())[0].state == State.SEEDING
        logs = await client.logs()
        assert any("paused" in l for l in logs) and any("resumed" in l for l in logs)
        with pytest.raises(Exception) as e:
            await client.pause("nope")
        assert "dattui list" in str(e.value)
        await client.remove(tid)
        assert await client.status() == ()
        assert (src / "big.bin").exists()  # removing a share never deletes data
    finally:
        await client.close()


async def test_garbage_on_the_control_socket_is_answered_not_fatal(home, tmp_path):
    client = await ensure_daemon(home, ["--port", "0", "--no-lan"])
    await client.close()
    reader, writer = await asyncio.open_unix_connection(str(home / "daemon.sock"))
    writer.write(b"this is not json\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    assert b"malformed" in line
    writer.write(b'{"id": 1, "op": "ping"}\n')
    await writer.drain()
    assert b'"pid"' in await asyncio.wait_for(reader.readline(), 5)
    writer.close()


def test_cli_list_and_background_share(home, tmp_path):
    src = make_tree(tmp_path / "src")
    p = subprocess.run(cmd("share", src, "--background", "--port", "0", "--no-lan"),
                       capture_output=True, text=True, env=env(home), timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("dat://")
    p2 = subprocess.run(cmd("list"), capture_output=True, text=True, env=env(home), timeout=30)
    assert p2.returncode == 0 and "seeding" in p2.stdout and str(src) in p2.stdout
    p3 = subprocess.run(cmd("stop"), capture_output=True, text=True, env=env(home), timeout=30)
    assert p3.returncode == 0


class _HeldStun(asyncio.DatagramProtocol):
    """A STUN server on 127.0.0.1 that answers only once the test says so."""

    def __init__(self) -> None:
        self.held: list[tuple[bytes, tuple]] = []
        self.answering = False
        self.arrived = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        from dattui.engine import stun
        if not stun.is_stun(data):
            return  # rendezvous messages get no answer: the relay checks fail, as they may
        if self.answering:
            self.transport.sendto(stun.respond(data, addr), addr)
        else:
            self.held.append((data, addr))
            self.arrived.set()

    def release(self) -> None:
        from dattui.engine import stun
        self.answering = True
        for data, addr in self.held:
            self.transport.sendto(stun.respond(data, addr), addr)


async def test_doctor_results_stream_from_the_daemon_one_by_one(home):
    loop = asyncio.get_running_loop()
    transport, held = await loop.create_datagram_endpoint(_HeldStun, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    (home / "config.toml").write_text(f'[discovery]\ndht = false\nrendezvous = ["127.0.0.1:{port}"]\n')
    client = await ensure_daemon(home, ["--port", "0", "--no-lan"])
    try:
        stream = client.doctor()
        first = await asyncio.wait_for(stream.__anext__(), 10)
        assert first.name == "local_addresses"
        # the UDP check is still waiting for the server we hold: the first result came before it
        await asyncio.wait_for(held.arrived.wait(), 5)
        assert not held.answering
        status = await asyncio.wait_for(client.status(), 2)  # the connection serves other requests meanwhile
        assert status == ()
        held.release()
        rest = [r async for r in stream]
        names = [first.name] + [r.name for r in rest]
        assert names[:3] == ["local_addresses", "port", "lan"] and names[-1] == "verdict"
        udp = next(r for r in rest if r.name == f"udp:127.0.0.1:{port}")
        assert udp.ok is True and "127.0.0.1" in udp.detail
        assert len(names) == len(set(names)) > 6

        # leaving a stream early stops it; the connection goes on, and a new run starts
        stream = client.doctor()
        assert (await asyncio.wait_for(stream.__anext__(), 10)).name == "local_addresses"
        await stream.aclose()
        assert (await client.call("ping"))["port"] > 0
        again = [r.name async for r in client.doctor()]
        assert again[0] == "local_addresses" and again[-1] == "verdict"
    finally:
        await client.close()
        transport.close()
