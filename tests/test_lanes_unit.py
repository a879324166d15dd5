"""Lanes, piece by piece: the pipe's messages, a clone lane's handling of its
peer's frames, which paths get lanes, and how many lanes a machine runs."""

from __future__ import annotations

import random

import pytest

from dattui.engine import manifest as mf
from dattui.engine import merkle, wire
from dattui.engine.errors import ProtocolError
from dattui.engine.events import PathKind
from dattui.engine.keys import ShareKey
from dattui.engine.lanes import cpu, lanes_for, pipe
from dattui.engine.lanes.clone_lane import LaneClone
from dattui.engine.lanes.share_lanes import lane_path_ok
from dattui.engine.serve import manifest_frames
from dattui.engine.transport.paths import DirectPath, RelayPath


def test_verified_message_round_trip_in_pieces():
    data = random.Random(1).randbytes(70_000)
    proof = (b"\x01" * 32, b"\x02" * 32)
    raw = pipe.encode_verified_header(3, 4, 5, b"\x09" * 32, proof, len(data)) + data
    raw += wire.encode(wire.HaveAll(3)) + wire.encode(pipe.LaneStats({"rtt": 0.002}))
    got = []
    dec = pipe.decoder()
    for i in range(0, len(raw), 4096):  # the pipe hands over any split
        got += dec.feed(raw[i:i + 4096])
    v, have, stats = got
    assert (v.version, v.file, v.block, v.leaf, v.proof) == (3, 4, 5, b"\x09" * 32, proof)
    assert bytes(v.data) == data
    assert have == wire.HaveAll(3) and stats.body == {"rtt": 0.002}
    assert pipe.decoder().feed(wire.encode(pipe.Verified(3, 4, 5, b"\x09" * 32, proof, data)))[0] \
        .leaf == v.leaf


@pytest.mark.parametrize("raw", [
    bytes([0, 0, 0, 4, pipe.LaneStats.TYPE]) + b"[1]",
    bytes([0, 0, 0, 3, pipe.LaneConfig.TYPE]) + b"{x",
    bytes([0, 0, 0, 0x2E, pipe.Verified.TYPE]) + bytes(16) + b"\x05" + bytes(32),  # proof missing
])
def test_bad_pipe_messages_are_protocol_errors(raw):
    with pytest.raises(ProtocolError):
        pipe.decoder().feed(raw)


def test_pipe_messages_never_pass_the_peer_decoder():
    """A peer that sends a pipe message type gets it skipped, never obeyed."""
    raw = wire.encode(pipe.LaneClosed("x")) + wire.encode(wire.HaveAll(1))
    assert wire.FrameDecoder().feed(raw) == [wire.HaveAll(1)]


class FakeEnd:
    def __init__(self):
        self.raw = b""
        self.buffered = 0

    def send(self, frame):
        self.raw += wire.encode(frame)

    def send_many(self, *parts):
        self.raw += b"".join(bytes(p) for p in parts)

    def messages(self):
        return pipe.decoder().feed(self.raw)


class FakePeer:
    def __init__(self):
        self.closed = None
        self.sent = []

    def close(self, code, reason):
        self.closed = (code, reason)


def one_file_manifest(data: bytes, bs: int = 4096) -> mf.Manifest:
    leaves = [merkle.leaf_hash(data[i:i + bs]) for i in range(0, len(data), bs)]
    root = merkle.tree_levels(leaves)[-1][0]
    entry = mf.Entry(mf.Kind.FILE, "f.bin", 0o644, 0, len(data), root)
    return mf.Manifest(1, bs, "x", (entry,))


async def test_clone_lane_passes_only_verified_blocks_up():
    data = random.Random(2).randbytes(20000)
    m = one_file_manifest(data)
    levels = merkle.tree_levels([merkle.leaf_hash(data[i:i + 4096]) for i in range(0, 20000, 4096)])
    end = FakeEnd()
    lane = LaneClone(b"\x01" * 32, end)
    encoded, sig = mf.sign(m, ShareKey.generate())
    for f in manifest_frames(1, encoded, sig):
        lane.told(f)
    assert lane.manifest == m and lane.version == 1
    peer = FakePeer()
    good = wire.Data(1, 0, 2, tuple(merkle.proof_from_levels(levels, 2)), data[8192:12288])
    lane.on_frame(peer, good)
    lane.on_frame(peer, wire.Data(2, 0, 2, good.proof, good.data))  # another version: dropped
    lane.on_frame(peer, wire.HaveAll(1))
    assert peer.closed is None and lane.dropped == 1
    bad = wire.Data(1, 0, 3, tuple(merkle.proof_from_levels(levels, 3)), data[8192:12288])
    lane.on_frame(peer, bad)
    v, have, badmsg = end.messages()
    assert isinstance(v, pipe.Verified) and (v.file, v.block) == (0, 2)
    assert v.leaf == merkle.leaf_hash(data[8192:12288]) and bytes(v.data) == data[8192:12288]
    assert have == wire.HaveAll(1)
    assert badmsg == pipe.BadBlock(0, 3) and peer.closed[0] == 0x103


@pytest.mark.parametrize("file,block,size", [(1, 0, 4096), (0, 5, 4096), (0, 4, 4096), (0, 0, 10),
                                             (0, -1, 4096)])
def test_block_leaf_refuses_what_is_not_a_block_of_the_tree(file, block, size):
    data = random.Random(3).randbytes(20000)
    m = one_file_manifest(data)
    assert mf.block_leaf(m, file, block, bytes(size), []) is None


def test_lanes_only_where_the_share_is_reached_directly():
    class P:
        def __init__(self, path):
            self.link = type("L", (), {"path": path})()
            self.path = path.kind
    send = lambda d, a: None
    assert lane_path_ok(P(DirectPath(send, ("1.2.3.4", 1), PathKind.DIRECT)))
    assert lane_path_ok(P(DirectPath(send, ("10.0.0.2", 1), PathKind.LAN)))
    assert not lane_path_ok(P(DirectPath(send, ("1.2.3.4", 1), PathKind.PUNCHED)))
    assert not lane_path_ok(P(RelayPath(lambda d: None, ("1.2.3.4", 1), PathKind.RELAY_UDP)))
    assert not lane_path_ok(P(RelayPath(lambda d: None, ("1.2.3.4", 1), PathKind.DIRECT)))


@pytest.mark.parametrize("setting,cores,want", [
    (-1, 1, 0), (-1, 2, 0), (-1, 3, 2), (-1, 4, 3), (-1, 64, 4), (0, 64, 0), (2, 1, 2), (8, 2, 8)])
def test_how_many_lanes(setting, cores, want):
    assert lanes_for(setting, cores) == want


def test_cpu_gauge_reads_a_full_window_of_load():
    t = [0.0, 0.0]  # wall, cpu
    g = cpu.CpuGauge(clock=lambda: t[0], cpu=lambda: t[1])
    for _ in range(4):  # 0.75 s at 90 % of a core: not a full window yet
        g.sample()
        t[0] += 0.25
        t[1] += 0.225
    assert g.load() == 0.0 and not g.busy()
    for _ in range(3):
        g.sample()
        t[0] += 0.25
        t[1] += 0.225
    assert g.load() == pytest.approx(0.9) and g.busy()
    for _ in range(8):  # then idle for 2 s: the old samples leave the window
        g.sample()
        t[0] += 0.25
    g.sample()
    assert g.load() < 0.3 and not g.busy()
    assert len(g._samples) <= 6
